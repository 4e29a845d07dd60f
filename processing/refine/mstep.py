"""Maximisation: gold-standard FSC, regularised reconstruction, noise and offset model,
resolution bookkeeping (spec 5.4 items 3-11, 5.6, 5.10)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from processing.fourier.backprojector import (
    enforce_hermitian,
    grid_shell_index,
    reconstruct,
    reference_sigma2,
    symmetrise,
    tau2_from_fsc,
)
from processing.fourier.masks import flatten_solvent

from .estep import HalfAccumulator

__all__ = [
    "symmetrise_half", "join_low_resolution", "half_map_fsc", "HalfModel", "reconstruct_half",
    "update_noise", "update_sigma_offset", "update_scales", "resolution_shell_from_ssnr",
]


def symmetrise_half(acc: HalfAccumulator, operators: NDArray) -> None:
    """Hermitian enforcement, then the point-group sum of data and weight, in place."""
    enforce_hermitian(acc.data, acc.weight)
    if len(operators) > 1:
        acc.data, acc.weight = symmetrise(acc.data, acc.weight, acc.c, operators, radius=float(acc.c - 2))


def join_low_resolution(a: HalfAccumulator, b: HalfAccumulator, max_shell: int) -> None:
    """Average both halves' sums for shells ``<= max_shell`` (``--low_resol_join_halves``)."""
    r, sh = grid_shell_index(a.c, a.pad)
    sel = sh <= max_shell
    data = 0.5 * (a.data[sel] + b.data[sel])
    weight = 0.5 * (a.weight[sel] + b.weight[sel])
    a.data[sel] = data
    b.data[sel] = data
    a.weight[sel] = weight
    b.weight[sel] = weight


def half_map_fsc(a: HalfAccumulator, b: HalfAccumulator, n_shells: int) -> NDArray[np.float64]:
    """FSC of the unregularised half reconstructions data/weight, per un-padded shell."""
    r, sh = grid_shell_index(a.c, a.pad)
    with np.errstate(divide="ignore", invalid="ignore"):
        fa = np.where(a.weight > 0, a.data / a.weight, 0.0)
        fb = np.where(b.weight > 0, b.data / b.weight, 0.0)
    sel = (sh < n_shells) & (r <= a.c - 2)
    s = sh[sel]
    num = np.bincount(s, (fa[sel] * np.conj(fb[sel])).real, minlength=n_shells)
    pa = np.bincount(s, np.abs(fa[sel]) ** 2, minlength=n_shells)
    pb = np.bincount(s, np.abs(fb[sel]) ** 2, minlength=n_shells)
    den = np.sqrt(pa * pb)
    fsc = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    fsc[0] = 1.0
    return fsc


@dataclass
class HalfModel:
    """Per-shell model of one half after the M-step (written to _model.star)."""

    map: NDArray[np.float64]
    sigma2_ref: NDArray[np.float64]
    tau2: NDArray[np.float64]
    ssnr: NDArray[np.float64]
    completeness: NDArray[np.float64]


def reconstruct_half(
    acc: HalfAccumulator,
    fsc: NDArray[np.float64],
    *,
    ori: int,
    r_max: float,
    tau2_fudge: float,
    joined: bool,
    regularise: bool = True,
) -> HalfModel:
    """Regularised (MAP) map of one half with tau² from the gold-standard FSC (spec 5.6)."""
    n_shells = ori // 2 + 1
    sigma2_ref = reference_sigma2(acc.weight, acc.c, padding_factor=acc.pad, n_shells=n_shells)
    ssnr, tau2 = tau2_from_fsc(sigma2_ref, fsc, tau2_fudge=tau2_fudge, joined=joined)
    volume = reconstruct(
        acc.data, acc.weight, acc.c, ori_size=ori, padding_factor=acc.pad, r_max=r_max,
        tau2=tau2 if regularise else None, tau2_fudge=tau2_fudge,
    )
    r, sh = grid_shell_index(acc.c, acc.pad)
    sel = (sh < n_shells) & (r <= acc.c - 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        reg = np.where(tau2[np.minimum(sh, n_shells - 1)] > 0,
                       1.0 / (acc.pad**3 * tau2_fudge * tau2[np.minimum(sh, n_shells - 1)]), np.inf)
    good = np.bincount(sh[sel], (acc.weight >= reg)[sel].astype(float), minlength=n_shells)
    cnt = np.bincount(sh[sel], minlength=n_shells)
    completeness = np.where(cnt > 0, good / np.maximum(cnt, 1), 0.0)
    return HalfModel(map=volume, sigma2_ref=sigma2_ref, tau2=tau2, ssnr=ssnr, completeness=completeness)


def solvent_flatten(volume: NDArray, *, radius_px: float, mask: NDArray | None) -> NDArray:
    """Multiply by the user mask or a soft sphere of the particle diameter (spec 5.10)."""
    return flatten_solvent(volume, radius=radius_px, edge_width=5.0, mask=mask)


def update_noise(
    accumulators: list[HalfAccumulator], previous: NDArray[np.float64], npix_per_shell: NDArray[np.float64],
) -> NDArray[np.float64]:
    """σ²(shell) = Σ w'|diff|² / (2 Σ_images Npix(shell)); empty shells keep the previous shell's value."""
    total = sum(a.sigma2_sum + a.highres_sum for a in accumulators)
    images = sum(a.sigma2_images for a in accumulators)
    if images <= 0:
        return previous
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(npix_per_shell > 0, total / (2.0 * images * npix_per_shell), 0.0)
    out = np.maximum(out, 0.0)
    for i in range(1, out.size):
        if out[i] <= 0:
            out[i] = out[i - 1]
    if out[0] <= 0:
        out[0] = out[1] if out.size > 1 else 1.0
    return np.maximum(out, 1e-15)


def update_sigma_offset(accumulators: list[HalfAccumulator], *, minimum_sigma2: float = 2.0) -> float:
    """σ_offset (Å) = sqrt(Σ w'|Δ|² / (3 Σ w')), with RELION's floor of 2 Å²."""
    s = sum(a.offset_sum for a in accumulators)
    w = sum(a.weight_sum for a in accumulators)
    if w <= 0:
        return math.sqrt(minimum_sigma2)
    return math.sqrt(max(s / (3.0 * w), minimum_sigma2))


def update_scales(accumulators: list[HalfAccumulator], counts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-group intensity scale <XA>/<AA>, clipped to [median/5, 5 median], particle-weighted mean 1."""
    xa = sum(a.scale_xa for a in accumulators)
    aa = sum(a.scale_aa for a in accumulators)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(aa > 0, xa / aa, 1.0)
    positive = scale[scale > 0]
    if positive.size == 0:
        return np.ones_like(scale)
    med = float(np.median(positive))
    scale = np.clip(scale, med / 5.0, med * 5.0)
    mean = float((scale * counts).sum() / max(counts.sum(), 1.0))
    return scale / mean if mean > 0 else np.ones_like(scale)


def resolution_shell_from_ssnr(ssnr: NDArray[np.float64], *, auto_refine_split: bool = True) -> int:
    """RELION's updateCurrentResolution: (first shell >= 1 with SSNR < 1) - 1, checked for an
    FSC that dips and recovers; at least 5."""
    n = ssnr.size
    below = np.flatnonzero((ssnr < 1.0) & (np.arange(n) >= 1))
    maxres = (int(below[0]) - 1) if below.size else n - 1
    if auto_refine_split:
        above = np.flatnonzero(ssnr > 1.0)
        if above.size:
            highest = int(above.max())
            if highest > maxres + 3:
                maxres = highest
    return max(maxres, 5)
