"""Post-processing (relion_postprocess): masked/unmasked and phase-randomisation corrected FSC,
final resolution, Guinier plot and B-factor, MTF division, FSC weighting, low-pass, the
sharpened maps and postprocess.star."""
from .curves import NeverBelowThreshold, PostprocessCurves, postprocess_curves
from .guinier import GuinierCurve, GuinierFit, fit_guinier, guinier_curve
from .mtf import MtfCurve, mtf_weights, read_mtf
from .outputs import postprocess_tables, unmasked_fallback, write_postprocess_star
from .randomise import randomize_phases_beyond
from .run import PostprocessInputs, PostprocessResult, check_inputs, other_half, run_postprocess
from .sharpen import SharpenResult, SharpenSettings, fsc_weights, lowpass_weights, sharpen_map

__all__ = [
    "NeverBelowThreshold", "PostprocessCurves", "postprocess_curves",
    "GuinierCurve", "GuinierFit", "fit_guinier", "guinier_curve",
    "MtfCurve", "mtf_weights", "read_mtf",
    "postprocess_tables", "unmasked_fallback", "write_postprocess_star",
    "randomize_phases_beyond",
    "PostprocessInputs", "PostprocessResult", "check_inputs", "other_half", "run_postprocess",
    "SharpenResult", "SharpenSettings", "fsc_weights", "lowpass_weights", "sharpen_map",
]
