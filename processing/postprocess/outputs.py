"""postprocess.star as relion_postprocess writes it (``Postprocessing::writeOutput``).

``data_general`` (a list): rlnFinalResolution, rlnBfactorUsedForSharpening,
rlnUnfilteredMapHalf1/2, rlnPostprocessedMap; with a mask rlnParticleBoxFractionSolventMask,
rlnMaskName, rlnRandomiseFrom, rlnPostprocessedMapMasked; with --auto_bfac
rlnFittedSlopeGuinierPlot, rlnFittedInterceptGuinierPlot, rlnCorrelationFitGuinierPlot.
``data_fsc``: rlnSpectralIndex, rlnResolution, rlnAngstromResolution, then with a mask
rlnFourierShellCorrelationCorrected, ...ParticleMaskFraction, ...UnmaskedMaps, ...MaskedMaps,
rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps; without a mask only
rlnFourierShellCorrelationUnmaskedMaps. ``data_guinier``: rlnResolutionSquared,
rlnLogAmplitudesOriginal, [MTFCorrected with an MTF], [Weighted unless FSC weighting is
skipped], [Sharpened with a B-factor], [Intercept with --auto_bfac].
"""
from __future__ import annotations

from os import PathLike
from typing import Any

import numpy as np
import pandas as pd

from processing.io.star import write_star

from .curves import PostprocessCurves
from .sharpen import SharpenResult

__all__ = ["postprocess_tables", "write_postprocess_star", "unmasked_fallback"]


def postprocess_tables(
    curves: PostprocessCurves,
    sharp: SharpenResult,
    *,
    half1: str,
    half2: str,
    output_root: str,
    mask: str | None,
    auto_bfac: bool,
) -> dict[str, Any]:
    """The three tables ``{"general": dict, "fsc": DataFrame, "guinier": DataFrame}``.

    ``half1``, ``half2``, ``mask`` and ``output_root`` are written as given (RELION writes
    the names from its command line; the maps are ``<output_root>.mrc`` and
    ``<output_root>_masked.mrc``).
    """
    general: dict[str, Any] = {
        "rlnFinalResolution": float(curves.resolution),
        "rlnBfactorUsedForSharpening": float(sharp.bfactor),
        "rlnUnfilteredMapHalf1": half1,
        "rlnUnfilteredMapHalf2": half2,
        "rlnPostprocessedMap": f"{output_root}.mrc",
    }
    if mask is not None:
        general["rlnParticleBoxFractionSolventMask"] = float(curves.mask_fraction_f)
        general["rlnMaskName"] = mask
        general["rlnRandomiseFrom"] = float(curves.randomise_from_angstrom)
        general["rlnPostprocessedMapMasked"] = f"{output_root}_masked.mrc"
    if auto_bfac and sharp.fit is not None:
        general["rlnFittedSlopeGuinierPlot"] = sharp.fit.slope
        general["rlnFittedInterceptGuinierPlot"] = sharp.fit.intercept
        general["rlnCorrelationFitGuinierPlot"] = sharp.fit.correlation
    ang = curves.angstrom_resolution
    fsc = pd.DataFrame({
        "rlnSpectralIndex": curves.spectral_index.astype(np.int64),
        "rlnResolution": 1.0 / ang,
        "rlnAngstromResolution": ang,
    })
    if mask is not None:
        fsc["rlnFourierShellCorrelationCorrected"] = curves.corrected
        fsc["rlnFourierShellCorrelationParticleMaskFraction"] = curves.particle_mask_fraction
        fsc["rlnFourierShellCorrelationUnmaskedMaps"] = curves.unmasked
        fsc["rlnFourierShellCorrelationMaskedMaps"] = curves.masked
        fsc["rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps"] = curves.randomized
    else:
        fsc["rlnFourierShellCorrelationUnmaskedMaps"] = curves.corrected
    guinier = pd.DataFrame({
        "rlnResolutionSquared": sharp.original.x,
        "rlnLogAmplitudesOriginal": sharp.original.y,
    })
    if sharp.mtf_corrected is not None:
        guinier["rlnLogAmplitudesMTFCorrected"] = sharp.mtf_corrected.y
    if sharp.fsc_weighted:
        guinier["rlnLogAmplitudesWeighted"] = sharp.weighted.y
    if abs(sharp.bfactor) > 0 or auto_bfac:
        guinier["rlnLogAmplitudesSharpened"] = sharp.sharpened.y
    if auto_bfac and sharp.fit is not None:
        guinier["rlnLogAmplitudesIntercept"] = sharp.fit.intercept
    return {"general": general, "fsc": fsc, "guinier": guinier}


def write_postprocess_star(path: str | PathLike, tables: dict[str, Any], *, command: str) -> None:
    """Write ``tables`` (from :func:`postprocess_tables`) atomically, with RELION's header
    comment (program and command line)."""
    write_star(path, tables, comments=["RELION postprocess; tomodash", command])


def unmasked_fallback(fsc: pd.DataFrame) -> bool:
    """Whether a ``data_fsc`` table (as read from postprocess.star) holds RELION's fallback:
    with a mask, the final curve is the unmasked one because that reached further than the
    solvent-corrected curve (a mask too tight). The file says so only by the two columns
    being equal."""
    return ("rlnFourierShellCorrelationMaskedMaps" in fsc and "rlnFourierShellCorrelationCorrected" in fsc
            and bool(np.array_equal(fsc["rlnFourierShellCorrelationCorrected"].to_numpy(float),
                                    fsc["rlnFourierShellCorrelationUnmaskedMaps"].to_numpy(float))))
