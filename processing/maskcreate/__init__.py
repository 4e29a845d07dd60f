"""Mask creation (RELION's ``relion_mask_create``): low-pass, binarise, extend, soft edge,
helical Z cut, invert."""
from __future__ import annotations

from .automask import auto_mask, binarise, cut_helix_z, extend_binary, soft_edge
from .create import MaskResult, MaskSettings, check_input_map, create_mask, make_mask, relion_lowpass

__all__ = ["auto_mask", "binarise", "cut_helix_z", "extend_binary", "soft_edge", "MaskResult", "MaskSettings",
           "check_input_map", "create_mask", "make_mask", "relion_lowpass"]
