"""relion_postprocess's sharpening of the merged map (``Postprocessing::sharpenMap``).

In Fourier space (RELION's half transform, shells ``round(|k|)``), in this order:

1. Guinier plot of the input ("original");
2. division by the detector MTF (optional) and its Guinier plot;
3. FSC weighting ``sqrt(2 FSC / (1 + FSC))`` with the corrected FSC, 0 where the FSC <= 0 and
   beyond the last shell before it first drops below 0.0001 (skipped with
   ``--skip_fsc_weighting``), and its Guinier plot ("weighted");
4. the B-factor: fitted to the weighted Guinier plot (``--auto_bfac``, B = 4 slope) or given
   (``--adhoc_bfac``); ``exp(-B s^2 / 4)`` up to Nyquist and 0 beyond; its Guinier plot
   ("sharpened");
5. the low-pass filter (``--low_pass``; negative: the final resolution) with RELION's raised
   cosine edge from shell ``round(N px / res) - w/2`` to ``+ w/2`` (``--filter_edge_width`` w).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from processing.fourier.fft import half_radius, irfftn, rfftn, shell_index
from processing.fourier.filters import raised_cosine_lowpass_weights

from .guinier import GuinierCurve, GuinierFit, fit_guinier, guinier_curve

__all__ = ["SharpenSettings", "SharpenResult", "fsc_weights", "sharpen_map", "lowpass_weights"]


@dataclass(frozen=True)
class SharpenSettings:
    """Sharpening options (relion_postprocess flags in brackets).

    auto_bfac [--auto_bfac], autob_lowres / autob_highres [--autob_lowres/_highres, Å],
    adhoc_bfac [--adhoc_bfac, Å², 0: none], fsc_weighting [not --skip_fsc_weighting],
    low_pass [--low_pass, Å; 0: none; negative: the final resolution],
    filter_edge_width [--filter_edge_width, shells].
    """

    auto_bfac: bool = False
    autob_lowres: float = 10.0
    autob_highres: float = 0.0
    adhoc_bfac: float = 0.0
    fsc_weighting: bool = True
    low_pass: float = 0.0
    filter_edge_width: int = 2

    def __post_init__(self) -> None:
        if self.auto_bfac and abs(self.adhoc_bfac) > 0:
            raise ValueError("provide either an automatic B-factor or an ad-hoc one, not both")
        if self.filter_edge_width < 0:
            raise ValueError(f"filter_edge_width must be >= 0, got {self.filter_edge_width}")


@dataclass(frozen=True)
class SharpenResult:
    """The sharpened map ``(N, N, N)`` float64, the B-factor applied (Å²), whether the FSC
    weighting was applied, the fit (auto-B only), the filter applied (Å, 0: none) and the Guinier plots (``mtf_corrected`` only
    with an MTF)."""

    map: NDArray[np.float64]
    bfactor: float
    fsc_weighted: bool
    fit: GuinierFit | None
    applied_low_pass: float
    original: GuinierCurve
    mtf_corrected: GuinierCurve | None
    weighted: GuinierCurve
    sharpened: GuinierCurve


def fsc_weights(fsc_curve: ArrayLike, *, box: int) -> NDArray[np.float64]:
    """RELION's FSC weight of every half-transform element, ``(N, N, N//2+1)``."""
    c = np.asarray(fsc_curve, dtype=np.float64)
    below = np.nonzero(c < 0.0001)[0]
    ires_max = c.size - 1 if below.size == 0 else int(below[0]) - 1
    per_shell = np.where(c > 0, np.sqrt(2.0 * np.clip(c, 0, None) / (1.0 + np.clip(c, 0, None))), 0.0)
    per_shell = np.where(np.arange(c.size) <= ires_max, per_shell, 0.0)
    shells = shell_index(box, ndim=3)
    out = np.zeros(shells.shape)
    inside = shells < c.size
    out[inside] = per_shell[shells[inside]]
    return out


def lowpass_weights(*, box: int, pixel_size: float, resolution: float, edge_width: int) -> NDArray[np.float64]:
    """RELION's ``lowPassFilterMap`` weights on a half transform ``(N, N, N//2+1)``."""
    if resolution <= 0:
        raise ValueError(f"the low-pass resolution must be > 0, got {resolution}")
    ires = int(np.floor(box * pixel_size / resolution + 0.5))
    half = edge_width // 2
    lo = max(0.0, float(ires - half))
    hi = min(float(box // 2 + 1) * box, float(ires + half))
    return raised_cosine_lowpass_weights(box, ndim=3, radius=(lo + hi) / 2, edge_width=hi - lo)


def sharpen_map(
    merged: ArrayLike,
    *,
    fsc_corrected: ArrayLike,
    pixel_size: float,
    settings: SharpenSettings,
    final_resolution: float,
    mtf: NDArray[np.float64] | None = None,
) -> SharpenResult:
    """Sharpen the merged map ``(half1 + half2) / 2`` as relion_postprocess does.

    Parameters
    ----------
    merged
        ``(N, N, N)`` average of the two unfiltered half maps.
    fsc_corrected
        ``(N//2+1,)`` corrected FSC (``rlnFourierShellCorrelationCorrected``).
    pixel_size
        Å per voxel.
    settings
        See :class:`SharpenSettings`.
    final_resolution
        Å; the filter of ``low_pass < 0``.
    mtf
        ``(N, N, N//2+1)`` MTF per element (:func:`~processing.postprocess.mtf.mtf_weights`),
        or ``None``.
    """
    vol = np.asarray(merged, dtype=np.float64)
    n = vol.shape[0]
    guinier = dict(box=n, pixel_size=pixel_size, autob_lowres=settings.autob_lowres,
                   autob_highres=settings.autob_highres)
    ft = rfftn(vol, ndim=3)
    original = guinier_curve(ft, **guinier)
    mtf_curve = None
    if mtf is not None:
        ft = ft / mtf
        mtf_curve = guinier_curve(ft, **guinier)
    if settings.fsc_weighting:
        ft = ft * fsc_weights(fsc_corrected, box=n)
    weighted = guinier_curve(ft, **guinier)
    fit = None
    bfactor = 0.0
    if settings.auto_bfac:
        fit = fit_guinier(weighted)
        bfactor = fit.bfactor
    elif abs(settings.adhoc_bfac) > 0:
        bfactor = float(settings.adhoc_bfac)
    if abs(bfactor) > 0:
        s = half_radius(n, ndim=3) / (n * pixel_size)
        ft = ft * np.where(s <= 1.0 / (2.0 * pixel_size), np.exp(-(bfactor / 4.0) * s * s), 0.0)
    sharpened = guinier_curve(ft, **guinier)
    applied = float(settings.low_pass)
    if applied != 0:
        if applied < 0:
            applied = float(final_resolution)
        ft = ft * lowpass_weights(box=n, pixel_size=pixel_size, resolution=applied,
                                  edge_width=settings.filter_edge_width)
    return SharpenResult(irfftn(ft, size=n, ndim=3), bfactor, settings.fsc_weighting, fit, applied, original, mtf_curve, weighted,
                         sharpened)
