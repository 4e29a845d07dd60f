"""Maximisation: gold-standard FSC, regularised reconstruction, noise and offset model,
resolution bookkeeping (spec 5.4 items 3-11, 5.6, 5.10)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

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
from processing.fourier.fft import radial_average, shell_index
from processing.fourier.masks import flatten_solvent

from .estep import HalfAccumulator

if TYPE_CHECKING:
    from .state import HalfState

__all__ = [
    "symmetrise_half", "join_low_resolution", "half_map_fsc", "HalfModel", "reconstruct_half",
    "update_noise", "update_sigma_offset", "update_scales", "resolution_shell_from_ssnr", "initial_tau2",
    "initial_ssnr", "ini_high_edge_filtered", "report_cross_correlation",
]


def symmetrise_half(acc: HalfAccumulator, operators: NDArray) -> None:
    """Hermitian enforcement, then the point-group sum of data and weight, in place."""
    enforce_hermitian(acc.data, acc.weight)
    if len(operators) > 1:
        acc.data, acc.weight = symmetrise(acc.data, acc.weight, acc.c, operators, radius=float(acc.c - 2))


def join_low_resolution(a: HalfAccumulator, b: HalfAccumulator, max_shell: int) -> None:
    """Average both halves' sums inside padded radius ``round(pad * max_shell)``
    (``--low_resol_join_halves``; ``BackProjector::getLowResDataAndWeight``)."""
    r, _ = grid_shell_index(a.c, a.pad)
    limit = math.floor(a.pad * max_shell + 0.5)
    sel = r * r <= limit * limit + 1e-9
    data = 0.5 * (a.data[sel] + b.data[sel])
    weight = 0.5 * (a.weight[sel] + b.weight[sel])
    a.data[sel] = data
    b.data[sel] = data
    a.weight[sel] = weight
    b.weight[sel] = weight


def _round_half_away(x: NDArray) -> NDArray[np.int64]:
    """RELION's ROUND: halves rounded away from zero."""
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


def downsampled_average(acc: HalfAccumulator, r_max: int) -> NDArray[np.complex128]:
    """``BackProjector::getDownsampledAverage``: Σdata/Σweight over the padded voxels that round
    (per axis) to each un-padded voxel; shape ``(2(r_max+1)+1, 2(r_max+1)+1, r_max+2)``,
    centred like the accumulators."""
    m = r_max + 1
    lk = np.arange(-acc.c, acc.c + 1)
    kx = np.arange(acc.c + 1)
    zz = _round_half_away(lk / acc.pad)
    xx = _round_half_away(kx / acc.pad)
    keep_z = np.abs(zz) <= m
    keep_x = xx <= m
    data = acc.data[np.ix_(keep_z, keep_z, keep_x)]
    weight = acc.weight[np.ix_(keep_z, keep_z, keep_x)]
    iz = (zz[keep_z] + m)[:, None, None]
    iy = (zz[keep_z] + m)[None, :, None]
    ix = xx[keep_x][None, None, :]
    shape = (2 * m + 1, 2 * m + 1, m + 1)
    flat = np.ravel_multi_index(np.broadcast_arrays(iz, iy, ix), shape).ravel()
    n = int(np.prod(shape))
    re = np.bincount(flat, data.real.ravel(), minlength=n)
    im = np.bincount(flat, data.imag.ravel(), minlength=n)
    w = np.bincount(flat, weight.ravel(), minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        avg = np.where(w > 0, (re + 1j * im) / np.where(w > 0, w, 1.0), 0.0)
    return avg.reshape(shape)


def half_map_fsc(a: HalfAccumulator, b: HalfAccumulator, n_shells: int, *, r_max: int) -> NDArray[np.float64]:
    """Gold-standard FSC as RELION computes it (``compareTwoHalves``): each half's sums
    averaged down to the un-padded grid, then correlated per shell ``round(|k|)`` over
    ``|k| <= r_max`` (the current image size / 2); FSC(0) = 1, ``(n_shells,)``."""
    fa = downsampled_average(a, r_max)
    fb = downsampled_average(b, r_max)
    m = r_max + 1
    lk = np.arange(-m, m + 1, dtype=np.float64)
    r = np.sqrt(lk[:, None, None] ** 2 + lk[None, :, None] ** 2 + np.arange(m + 1.0)[None, None, :] ** 2)
    sel = r <= r_max
    shell = np.floor(r[sel] + 0.5).astype(np.int64)
    num = np.bincount(shell, (fa[sel] * np.conj(fb[sel])).real, minlength=n_shells)[:n_shells]
    pa = np.bincount(shell, np.abs(fa[sel]) ** 2, minlength=n_shells)[:n_shells]
    pb = np.bincount(shell, np.abs(fb[sel]) ** 2, minlength=n_shells)[:n_shells]
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
    sigma2_ref = reference_sigma2(acc.weight, acc.c, padding_factor=acc.pad, n_shells=n_shells, r_max=r_max)
    ssnr, tau2 = tau2_from_fsc(sigma2_ref, fsc, tau2_fudge=tau2_fudge, joined=joined)
    # RELION's map of 3D data is N times that of 2D data from the same sums (windowToOridimRealSpace).
    volume = reconstruct(
        acc.data, acc.weight, acc.c, ori_size=ori, padding_factor=acc.pad, r_max=r_max,
        tau2=tau2 if regularise else None, tau2_fudge=tau2_fudge, data_dim=acc.data_dim,
    )
    r, sh = grid_shell_index(acc.c, acc.pad)
    limit = math.floor(r_max * acc.pad + 0.5)
    sel = (sh < n_shells) & (r * r < limit * limit - 1e-9)
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
    acc: HalfAccumulator, previous: NDArray[np.float64], npix_per_shell: NDArray[np.float64],
) -> NDArray[np.float64]:
    """σ²(optics group, shell) = Σ w'|diff|² / (2 Σ_images Npix(shell)) within one half set, or
    / (2 ΣM(shell)) where 3D pseudo-subtomograms brought multiplicity (``maximizationOtherParameters``): floored at 1e-15, values below 1e-14 replaced by the
    previous shell's; groups without images keep ``previous``. Shapes ``(n_optics, n_shells)``."""
    out = previous.copy()
    total = acc.sigma2_sum + acc.highres_sum
    for g in range(out.shape[0]):
        if acc.sigma2_images[g] <= 0 or total[g].sum() == 0:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            new = np.where(npix_per_shell > 0, total[g] / (2.0 * acc.sigma2_images[g] * npix_per_shell), 0.0)
            # 3D pseudo-subtomograms: shells with multiplicity are normalised by ΣM instead.
            multiplicity = acc.multiplicity_sum[g]
            new = np.where(multiplicity > 0, total[g] / (2.0 * np.where(multiplicity > 0, multiplicity, 1.0)), new)
        new = np.maximum(new, 1e-15)
        for n in range(1, new.size):
            if new[n] < 1e-14:
                new[n] = new[n - 1]
        out[g] = new
    return out


def update_sigma_offset(acc: HalfAccumulator, *, minimum_sigma2: float = 2.0) -> float:
    """σ_offset (Å) = sqrt(Σ w'|Δ|² / (3 Σ w')) within one half set, floored at 2 Å²."""
    if acc.weight_sum <= 0:
        return math.sqrt(minimum_sigma2)
    return math.sqrt(max(acc.offset_sum / (3.0 * acc.weight_sum), minimum_sigma2))


def update_scales(acc: HalfAccumulator, counts: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-group intensity scale ⟨XA⟩/⟨AA⟩ within one half set, clipped to [median/5, 5·median]
    (RELION's median: the upper one of an even count) and normalised to a particle-weighted
    mean of 1 (``counts``: the half set's particles per group)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(acc.scale_aa > 0, acc.scale_xa / acc.scale_aa, 1.0)
    med = float(np.sort(scale)[scale.size // 2])
    scale = np.clip(scale, med / 5.0, med * 5.0)
    mean = float((scale * counts).sum() / max(counts.sum(), 1.0))
    return scale / mean if mean > 0 else np.ones_like(scale)


def resolution_shell_from_ssnr(ssnr: NDArray[np.float64], *, auto_refine_split: bool = True,
                               minres_map: int = 5) -> int:
    """RELION's updateCurrentResolution on ``ssnr`` ``(ori//2+1,)``: the shell before the first
    shell ``1 <= i < ori/2`` with SSNR < 1; for split-half auto-refine, the highest shell
    ``< ori/2`` with SSNR > 1 instead when it lies more than 3 shells higher (an FSC that dips
    and recovers); at least ``minres_map``."""
    half = ssnr.size - 1
    below = [i for i in range(1, half) if ssnr[i] < 1.0]
    ires = (below[0] if below else half) - 1
    if auto_refine_split:
        above = [i for i in range(half - 1, ires - 1, -1) if ssnr[i] > 1.0]
        if above and above[0] > ires + 3:
            ires = above[0]
    return max(ires, minres_map)


def initial_tau2(reference: NDArray, *, tau2_fudge: float = 1.0, data_dim: int = 2) -> NDArray[np.float64]:
    """Iteration-0 prior power τ² ``(N//2+1,)`` of a reference (``MlModel::
    initialiseDataVersusPrior``): T × the per-shell mean of |F|² (F normalised by N³, all
    half-transform voxels) × N²/2 for 2D images (``data_dim=2``), × 1/2 for 3D volumes."""
    vol = np.asarray(reference, dtype=np.float64)
    n = vol.shape[0]
    f = np.fft.rfftn(vol) / float(n) ** 3
    shells = shell_index(n, ndim=3)
    normfft = float(n * n) if data_dim == 2 else 1.0
    return tau2_fudge * radial_average(np.abs(f) ** 2, shells, n_shells=n // 2 + 1) * normfft / 2.0


def initial_ssnr(tau2: NDArray[np.float64], sigma2: NDArray[np.float64], n_particles: int) -> NDArray[np.float64]:
    """Iteration-0 data-versus-prior ratio (reporting only): N/⟨σ²⟩ per shell, divided by 2i
    for a 3D reference (i > 0), times τ². ``sigma2`` is ``(n_optics, n_shells)``; groups
    without a spectrum are left out of the average."""
    used = sigma2[sigma2.sum(axis=1) > 0]
    avg = used.mean(axis=0)
    i = np.arange(tau2.size, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        evidence = n_particles / avg
        evidence = np.where(i > 0, evidence / (2.0 * np.maximum(i, 1)), evidence)
        return evidence * tau2


def ini_high_edge_filtered(spectrum: NDArray[np.float64], *, box_angst: float, ini_high: float) -> NDArray[np.float64]:
    """After a first cross-correlation iteration relion_refine reports τ² and the
    data-versus-prior ratio of the maps low-passed to ``--ini_high`` again (its model.star; the
    next M-step computes both afresh): per shell times the square of a raised cosine 2 shells
    wide ending at ``box_angst/ini_high + 1``."""
    radius = box_angst / ini_high - 1.0
    outer = radius + 2.0
    r = np.arange(spectrum.size, dtype=np.float64)
    edge = (0.5 - 0.5 * np.cos(np.pi * (outer - r) / 2.0)) ** 2
    return spectrum * np.where(r < radius, 1.0, np.where(r > outer, 0.0, edge))


def report_cross_correlation(half: "HalfState", sums: HalfAccumulator, *, box_angst: float, ini_high: float) -> None:
    """What relion_refine's model.star holds after a first cross-correlation iteration: the
    mean correlation per image as the log-likelihood, and τ² and the data-versus-prior ratio
    low-passed to ``--ini_high`` again (``ini_high`` ≤ 0: unfiltered)."""
    half.log_likelihood = sums.log_likelihood / max(float(sums.sigma2_images.sum()), 1.0)
    if ini_high > 0:
        half.tau2, half.ssnr = (ini_high_edge_filtered(a, box_angst=box_angst, ini_high=ini_high)
                                for a in (half.tau2, half.ssnr))
