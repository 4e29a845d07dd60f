"""The Guinier plot and the automatic B-factor of relion_postprocess (Rosenthal & Henderson 2003).

``makeGuinierPlot``: for shells ``i = 0 .. N/2`` (``i = round(|k|)`` over the half transform),
``x = 1/d^2`` with ``d = N px / i`` (Å), ``y = ln(mean |F|)`` of the shell (``-99`` for a shell
without amplitude). A point enters the fit (weight 1) when ``autob_highres <= d <= autob_lowres``
and it has amplitude; after FSC weighting the shells beyond the first FSC < 0.0001 have none, so
with the default ``--autob_highres 0`` the fit runs from 10 Å to where the corrected FSC ends.
``fitStraightLine``: weighted least squares; B = 4 x slope; the "correlation" RELION reports
is ``ss_xy^2 / (ss_xx ss_yy)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from processing.fourier.fft import shell_index

__all__ = ["GuinierCurve", "guinier_curve", "GuinierFit", "fit_guinier", "NO_AMPLITUDE"]

#: RELION's value of ``y`` for a shell without amplitude.
NO_AMPLITUDE = -99.0


@dataclass(frozen=True)
class GuinierCurve:
    """One Guinier plot: ``x`` = 1/d² (Å⁻²), ``y`` = ln mean amplitude, ``weight`` (0/1),
    all ``(N//2+1,)``."""

    x: NDArray[np.float64]
    y: NDArray[np.float64]
    weight: NDArray[np.float64]


@dataclass(frozen=True)
class GuinierFit:
    """The fitted line ``y = slope x + intercept``; ``bfactor = 4 slope`` (Å²);
    ``correlation`` as RELION reports it (r²)."""

    slope: float
    intercept: float
    correlation: float

    @property
    def bfactor(self) -> float:
        return 4.0 * self.slope


def guinier_curve(
    transform: ArrayLike, *, box: int, pixel_size: float, autob_lowres: float = 10.0, autob_highres: float = 0.0
) -> GuinierCurve:
    """The Guinier plot of a half transform.

    Parameters
    ----------
    transform
        ``(N, N, N//2+1)`` complex half transform of the map (RELION's normalisation: the
        forward transform divided by N³; see :func:`processing.fourier.fft.rfftn`).
    box, pixel_size
        N (px) and Å per voxel.
    autob_lowres, autob_highres
        Resolution range (Å) of the points that get weight 1 (``--autob_lowres``/``_highres``).
    """
    ft = np.asarray(transform)
    n_shells = box // 2 + 1
    shells = shell_index(box, ndim=3)
    sel = shells < n_shells
    amp_sum = np.bincount(shells[sel], np.abs(ft[sel]), minlength=n_shells)
    count = np.bincount(shells[sel], minlength=n_shells)
    i = np.arange(n_shells, dtype=np.float64)
    with np.errstate(divide="ignore"):
        d = np.where(i > 0, box * pixel_size / np.maximum(i, 1), np.inf)
    x = np.where(i > 0, 1.0 / (d * d), 0.0)
    has = amp_sum > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.where(has, np.log(np.where(has, amp_sum, 1.0) / np.maximum(count, 1)), NO_AMPLITUDE)
    w = np.where(has & (d <= autob_lowres) & (d >= autob_highres), 1.0, 0.0)
    return GuinierCurve(x=x, y=y, weight=w)


def fit_guinier(curve: GuinierCurve) -> GuinierFit:
    """RELION's ``fitStraightLine`` on the weighted points (zeros when they span no range)."""
    w, x, y = curve.weight, curve.x, curve.y
    sw = float(w.sum())
    if sw <= 0:
        return GuinierFit(0.0, 0.0, 0.0)
    ax = float((w * x).sum()) / sw
    ay = float((w * y).sum()) / sw
    ss_xx = float((w * x * x).sum()) - sw * ax * ax
    ss_yy = float((w * y * y).sum()) - sw * ay * ay
    ss_xy = float((w * x * y).sum()) - sw * ax * ay
    if ss_xx <= 0:
        return GuinierFit(0.0, 0.0, 0.0)
    slope = ss_xy / ss_xx
    corr = ss_xy * ss_xy / (ss_xx * ss_yy) if ss_yy > 0 else 0.0
    return GuinierFit(slope, ay - slope * ax, corr)
