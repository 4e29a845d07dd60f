"""What a Post-processing job's ``postprocess.star`` says, as the monitor shows it: the four FSC
curves (corrected, unmasked, masked, phase-randomised masked), the Guinier plots (original,
MTF-corrected, weighted, sharpened, and the fitted line of the automatic B-factor) and the
headline (final resolution, B-factor). Pure functions of the file (the watcher caches it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from processing.errors import InputError
from processing.io.star import read_star
from processing.postprocess import unmasked_fallback

from .readers import FscCurve
from .results import Headline

__all__ = ["PostprocessStar", "read_postprocess_star", "postprocess_headline", "postprocess_fsc_curves",
           "guinier_lines", "guinier_fit_line", "FSC_COLUMNS", "GUINIER_COLUMNS"]

#: (legend label, STAR column, colour) of the FSC curves, drawn in this order (corrected last, on top).
FSC_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("phase-randomised masked", "rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps", "#c62828"),
    ("unmasked", "rlnFourierShellCorrelationUnmaskedMaps", "#2e7d32"),
    ("masked", "rlnFourierShellCorrelationMaskedMaps", "#1f6fb2"),
    ("corrected", "rlnFourierShellCorrelationCorrected", "#1f2933"),
)
#: (legend label, STAR column, colour) of the Guinier plots.
GUINIER_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("original", "rlnLogAmplitudesOriginal", "#1f2933"),
    ("MTF-corrected", "rlnLogAmplitudesMTFCorrected", "#2e7d32"),
    ("weighted", "rlnLogAmplitudesWeighted", "#1f6fb2"),
    ("sharpened", "rlnLogAmplitudesSharpened", "#c62828"),
)
#: RELION's log amplitude of a shell without amplitude (left out of the plot).
NO_AMPLITUDE = -99.0


@dataclass(frozen=True)
class PostprocessStar:
    """The three tables of ``postprocess.star``: ``general`` (dict), ``fsc`` and ``guinier``
    (DataFrames; ``guinier`` may be empty)."""

    general: dict[str, Any]
    fsc: pd.DataFrame
    guinier: pd.DataFrame

    @property
    def resolution(self) -> float:
        return float(self.general["rlnFinalResolution"])

    @property
    def bfactor(self) -> float:
        return float(self.general.get("rlnBfactorUsedForSharpening", 0.0))

    @property
    def masked(self) -> bool:
        return "rlnMaskName" in self.general


def read_postprocess_star(path: Path) -> PostprocessStar:
    """Read ``postprocess.star``; :class:`InputError` (file, table, column) when it lacks what
    the monitor needs."""
    blocks = read_star(path)
    general = blocks.get("general")
    fsc = blocks.get("fsc")
    if not isinstance(general, dict) or "rlnFinalResolution" not in general:
        raise InputError("no final resolution", file=path, table="general", column="rlnFinalResolution")
    if not isinstance(fsc, pd.DataFrame) or "rlnResolution" not in fsc:
        raise InputError("no FSC table", file=path, table="fsc", column="rlnResolution")
    guinier = blocks.get("guinier")
    if not isinstance(guinier, pd.DataFrame):
        guinier = pd.DataFrame()
    return PostprocessStar(dict(general), fsc, guinier)


def postprocess_headline(pp: PostprocessStar) -> Headline:
    """Final resolution as the title ("2.82 Å"); the B-factor, the curve it comes from and the
    resolution phases were randomised from as facts; a warning at Nyquist."""
    resolution = pp.resolution
    fallback = unmasked_fallback(pp.fsc)
    facts = ["unmasked FSC 0.143 (RELION's fallback)" if fallback else
             "solvent-corrected FSC 0.143" if pp.masked else "unmasked FSC 0.143 (no mask)"]
    b = pp.bfactor
    if "rlnFittedSlopeGuinierPlot" in pp.general:
        facts.append(f"B-factor {b:.1f} Å² (auto, r² {float(pp.general['rlnCorrelationFitGuinierPlot']):.3f})")
    elif b != 0:
        facts.append(f"B-factor {b:.1f} Å² (given)")
    else:
        facts.append("not sharpened (B-factor 0)")
    if "rlnRandomiseFrom" in pp.general:
        facts.append(f"phases randomised from {float(pp.general['rlnRandomiseFrom']):.2f} Å")
    nyquist = float(np.min(pp.fsc["rlnAngstromResolution"].to_numpy(float)))
    warning = ""
    if abs(resolution - nyquist) < 1e-3:
        warning = (f"Nyquist-limited: the FSC stays above 0.143 up to the pixel size's limit ({nyquist:.2f} Å). "
                   "The data may hold more: use a smaller pixel size.")
    elif fallback:
        warning = ("The unmasked FSC reached further than the solvent-corrected one, so RELION reports the "
                   "unmasked resolution: the mask is probably too tight (extend it or soften its edge).")
    return Headline(title=f"{resolution:.2f} Å", facts=tuple(facts), warning=warning, value=resolution)


def postprocess_fsc_curves(pp: PostprocessStar) -> list[tuple[str, FscCurve, float | None, str]]:
    """``(label, curve, resolution in Å, colour)`` of every FSC column the file has, in
    :data:`FSC_COLUMNS` order; the corrected curve carries the final resolution. Without a mask
    RELION writes only the unmasked curve (which then is the final one)."""
    frequency = pp.fsc["rlnResolution"].to_numpy(float).copy()
    frequency[0] = 0.0  # RELION writes shell 0 as 1/999 Å⁻¹
    out = []
    for label, column, colour in FSC_COLUMNS:
        if column not in pp.fsc:
            continue
        curve = FscCurve(frequency=frequency, fsc=pp.fsc[column].to_numpy(float))
        final = column == "rlnFourierShellCorrelationCorrected" or not pp.masked
        out.append((label, curve, pp.resolution if final else curve.resolution_at(0.143), colour))
    return out


def guinier_lines(pp: PostprocessStar) -> list[tuple[str, np.ndarray, np.ndarray, str]]:
    """``(label, x = 1/d² in Å⁻², y = ln amplitude, colour)`` per Guinier column the file has,
    without RELION's -99 points (shells without amplitude)."""
    if pp.guinier.empty:
        return []
    x = pp.guinier["rlnResolutionSquared"].to_numpy(float)
    out = []
    for label, column, colour in GUINIER_COLUMNS:
        if column not in pp.guinier:
            continue
        y = pp.guinier[column].to_numpy(float)
        keep = y > NO_AMPLITUDE
        out.append((label, x[keep], y[keep], colour))
    return out


def guinier_fit_line(pp: PostprocessStar) -> tuple[np.ndarray, np.ndarray] | None:
    """The fitted line of the automatic B-factor (``y = slope x + intercept``) over the plot's
    x range, ``(x, y)`` of two points; None without an automatic fit."""
    if "rlnFittedSlopeGuinierPlot" not in pp.general or pp.guinier.empty:
        return None
    slope = float(pp.general["rlnFittedSlopeGuinierPlot"])
    intercept = float(pp.general["rlnFittedInterceptGuinierPlot"])
    x = np.array([0.0, float(pp.guinier["rlnResolutionSquared"].max())])
    return x, slope * x + intercept
