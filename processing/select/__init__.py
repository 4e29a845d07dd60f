"""Subset selection of tomography particle sets (RELION's Select job through
``relion_star_handler``, and from a classification): removal of duplicated particles, selection
on a metadata value range, selection of classes, and re-centring of the particles on a point of the reference (``--center``).

Each function takes a :class:`~processing.io.particles.ParticleSet` and returns new sets; every
column, the optics table and the ``data_general`` block travel unchanged, rows keep their order.
"""
from __future__ import annotations

from .classes import CLASS_LABEL, class_mask, format_class_list, parse_class_list, select_classes
from .duplicates import DuplicateRemoval, duplicate_positions, find_duplicates, remove_duplicates
from .recenter import image_pixel_sizes, recenter
from .run import (
    REMOVED_FILE,
    SUMMARY_FILE,
    Selection,
    SelectionResult,
    SelectionSettings,
    compute_selection,
    read_summary,
    select_particles,
)
from .values import select_on_value, value_mask

__all__ = [
    "CLASS_LABEL",
    "class_mask",
    "format_class_list",
    "parse_class_list",
    "select_classes",
    "DuplicateRemoval",
    "duplicate_positions",
    "find_duplicates",
    "remove_duplicates",
    "image_pixel_sizes",
    "recenter",
    "select_on_value",
    "value_mask",
    "Selection",
    "SelectionResult",
    "SelectionSettings",
    "compute_selection",
    "read_summary",
    "select_particles",
    "REMOVED_FILE",
    "SUMMARY_FILE",
]
