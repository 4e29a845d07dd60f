"""Extract subtomos (RELION 5 ``relion_tomo_subtomo``): 2D tilt stacks or 3D pseudo-subtomograms."""
from .extract import ExtractionResult, ExtractionSettings, extract_subtomograms

__all__ = ["ExtractionSettings", "ExtractionResult", "extract_subtomograms"]
