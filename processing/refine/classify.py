"""3D classification (relion_refine without ``--auto_refine``): what differs from auto-refine.

K references refined against all particles together (no half sets, no FSC). The class is one
more hidden variable of the E-step (:func:`~processing.refine.estep.expect_particle`); this
module holds the rest, as relion_refine 5 does it:

* **Seeds.** With one reference and K > 1, the first iteration (the second after a
  cross-correlation first iteration, which uses class 1 only and copies it to every class)
  gives each particle one class at random: ``srand(random_seed + j); rand() % K`` for the
  particle at position ``j`` of the visiting order (``expectationSomeParticles``).
* **Regularisation** by the references' own power (``MlModel::setFourierTransformMaps``
  recomputes τ² from each reference at the start of an iteration), times ``--tau2_fudge``:
  ``BackProjector::updateSSNRarrays`` without the FSC gives the data-versus-prior ratio that
  sets each class's estimated resolution and the next image size; for CTF-premultiplied
  particles it is corrected by the average CTF² (``MlOptimiser::setAverageCTF2``).
* **Class prior** ``pdf_class`` = each class's share of the weights; each class's direction
  distribution is normalised by the weights of all classes (so it sums to ``pdf_class``).
* **Fixed iteration count** (``--iter``); no auto-sampling, no convergence; ``--fast_subsets``
  runs the early iterations on growing subsets.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from processing.fourier.backprojector import grid_shell_index, reconstruct, reference_sigma2
from processing.fourier.filters import initial_lowpass
from processing.glibc_random import GlibcRandom

from . import mstep
from .maximisation import record_poses
from .estep import HalfAccumulator, ParticleResult, Reference
from .inputs import RefineInputs
from .options import RefineOptions
from .schedule import image_sizes
from .state import RunState

__all__ = [
    "seed_classes", "reference_power", "average_ctf2", "ssnr_arrays", "estimated_resolution_shell",
    "total_fourier_coverage", "maximise_classes", "classification_image_sizes", "fast_subset_size",
    "copy_first_class",
]

#: relion_refine's minimum particles per class for ``--fast_subsets`` (3D).
FAST_SUBSET_PER_CLASS = 1500


def seed_classes(order: list[int], *, random_seed: int, n_classes: int) -> dict[int, int]:
    """Each particle's random class (0-based) in the seed iteration, by particle index;
    ``order`` is the visiting order (position ``j`` seeds glibc's ``srand(random_seed + j)``)."""
    return {i: GlibcRandom(random_seed + j).rand() % n_classes for j, i in enumerate(order)}


def fast_subset_size(iteration: int, *, n_classes: int, n_particles: int) -> int:
    """Particles used in ``iteration`` with ``--fast_subsets`` (``updateSubsetSize``):
    1500 K up to iteration 5, 4500 K up to 10, max(4500 K, 30 %) up to 15, then all; all
    whenever the subset would not be smaller than the data set."""
    base = FAST_SUBSET_PER_CLASS * n_classes
    if iteration <= 5:
        size = base
    elif iteration <= 10:
        size = 3 * base
    elif iteration <= 15:
        size = max(3 * base, int(0.3 * n_particles))
    else:
        return n_particles
    return n_particles if size > n_particles else size


def reference_power(ref: Reference, *, current_size: int, n_shells: int) -> NDArray[np.float64]:
    """τ² of a reference as relion_refine recomputes it each iteration
    (``Projector::computeFourierTransformMap``): the mean of |F|²/2 over the padded projector
    grid's voxels within radius ``round(pad · current_size/2)``, per shell
    ``round(|k|/pad)``; ``(n_shells,)``, zero where a shell has no voxel."""
    pad = ref.pad
    r_max = min(current_size // 2, n_shells - 1)
    limit = int(math.floor(r_max * pad + 0.5))
    r, shell = grid_shell_index(ref.c, pad)
    sel = r * r <= limit * limit + 1e-9
    sel &= shell < n_shells
    power = np.bincount(shell[sel], (np.abs(ref.grid[sel].astype(np.complex128)) ** 2) / 2.0, minlength=n_shells)
    count = np.bincount(shell[sel], minlength=n_shells).astype(np.float64)
    return np.where(count >= 1, power / np.maximum(count, 1.0), 0.0)[:n_shells]


def average_ctf2(accs: list[HalfAccumulator], npix_per_shell: NDArray[np.float64]) -> NDArray[np.float64]:
    """Average CTF² per shell over the weighted particles (``setAverageCTF2``): Σ w'·CTF² over
    pixels divided by Σ multiplicity (3D) or Σ images × pixels per shell (2D stacks)."""
    ctf2 = sum(a.ctf2_sum.sum(axis=0) for a in accs)
    multiplicity = sum(a.multiplicity_sum.sum(axis=0) for a in accs)
    if np.any(multiplicity > 0):
        denominator = multiplicity
    else:
        denominator = sum(float(a.sigma2_images.sum()) for a in accs) * npix_per_shell
    return np.where(denominator > 0, ctf2 / np.where(denominator > 0, denominator, 1.0), 0.0)


def ssnr_arrays(
    acc: HalfAccumulator, tau2: NDArray[np.float64], *, tau2_fudge: float, r_max: float, n_shells: int,
    avgctf2: NDArray[np.float64] | None,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """``BackProjector::updateSSNRarrays`` without the FSC (classification): per shell
    σ²_ref = count / Σ pad³·W, the data-versus-prior ratio = mean of W / (1/(pad³ T τ² ⟨CTF²⟩))
    (W/(1/(0.001 W)) where τ² = 0), and the Fourier coverage (fraction of voxels with ratio ≥ 1),
    over the padded voxels with |k|² < round(r_max·pad)²; the ratio is 999 in empty shells and
    0 beyond ``r_max``. Returns (σ²_ref, data versus prior, coverage)."""
    pad = acc.pad
    sigma2 = reference_sigma2(acc.weight, acc.c, padding_factor=pad, n_shells=n_shells, r_max=r_max)
    r, shell = grid_shell_index(acc.c, pad)
    limit = int(math.floor(r_max * pad + 0.5))
    sel = (r * r < limit * limit - 1e-9) & (shell < n_shells)
    weight = acc.weight[sel]
    sh = shell[sel]
    t = tau2[sh]
    factor = pad**3 * tau2_fudge * t
    if avgctf2 is not None:
        a = avgctf2[np.minimum(sh, avgctf2.size - 1)]
        factor = np.where(a > 0, factor * a, factor)
    ratio = np.where(t > 0, weight * factor, 0.001 * weight * weight)
    count = np.bincount(sh, minlength=n_shells).astype(np.float64)
    dvp = np.bincount(sh, ratio, minlength=n_shells)
    covered = np.bincount(sh, (ratio >= 1.0).astype(np.float64), minlength=n_shells)
    with np.errstate(divide="ignore", invalid="ignore"):
        dvp = np.where(count < 0.001, 999.0, dvp / np.maximum(count, 1e-300))
        coverage = np.where(count > 0, covered / np.maximum(count, 1e-300), 0.0)
    dvp[np.arange(n_shells) > r_max] = 0.0
    return sigma2, dvp, coverage


def estimated_resolution_shell(data_vs_prior: NDArray[np.float64]) -> int:
    """The last shell from 0 before the data-versus-prior ratio first drops below 1
    (``calculateTotalFourierCoverage``)."""
    below = np.flatnonzero(data_vs_prior < 1.0)
    if below.size == 0:
        return data_vs_prior.size - 1
    return max(int(below[0]) - 1, 0)


def total_fourier_coverage(data_vs_prior: NDArray[np.float64], coverage: NDArray[np.float64]) -> float:
    """Mean per-shell coverage over the voxels of a cube with integer radius ≤ the estimated
    resolution shell (``rlnOverallFourierCompleteness``)."""
    maxres = estimated_resolution_shell(data_vs_prior)
    window = 2 * maxres - 1
    if window < 1:
        return float(coverage[0]) if coverage.size else 0.0
    k = np.arange(window) - window // 2
    r = np.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2).astype(np.int64)
    inside = r[r <= maxres]
    return float(coverage[inside].mean())


def classification_image_sizes(inputs: RefineInputs, options: RefineOptions, state: RunState) -> tuple[int, int]:
    """(current, coarse) sizes of a classification iteration: auto-refine's rule (no FSC, so
    ``incr_size`` shells beyond the resolution), and with ``--strict_highres_exp`` the coarse
    size ``2·round(box·pixel/limit)`` (within the current size)."""
    c = state.counters
    current, coarse = image_sizes(ori=inputs.ori, pixel_size=inputs.pixel_size, counters=c, sampling=state.sampling,
                                  particle_diameter=inputs.particle_diameter, final=False)
    if options.strict_highres_exp > 0:
        coarse = min(current, 2 * int(math.floor(inputs.ori * inputs.pixel_size / options.strict_highres_exp + 0.5)))
    return current, max(coarse, 2)


def copy_first_class(state: RunState) -> None:
    """After a first cross-correlation iteration with class 1 only: every class starts from
    class 1's map and model, with an equal share of the class prior."""
    first = state.halves[0]
    K = len(state.halves)
    first.pdf_class /= K
    first.pdf_direction = first.pdf_direction.copy()
    for k in range(1, K):
        h = state.halves[k]
        h.map = first.map.copy()
        h.tau2, h.ssnr = first.tau2.copy(), first.ssnr.copy()
        h.pdf_direction = first.pdf_direction.copy()
        h.pdf_class = first.pdf_class


def maximise_classes(
    inputs: RefineInputs, options: RefineOptions, state: RunState, accs: list[HalfAccumulator],
    results: dict[int, ParticleResult], *, cc: bool, tau2: list[NDArray[np.float64]],
) -> None:
    """Update ``state`` in place from the summed E-step of every class (relion_refine's
    maximization for 3D classification).

    Parameters
    ----------
    accs
        One accumulator per class (modified: symmetrised).
    tau2
        Each class's τ² for this iteration (:func:`reference_power` of its reference).
    cc
        A first cross-correlation iteration: noise and scales kept, maps low-passed to
        ``--ini_high``, class 1 copied to every class.
    """
    o = options
    c = state.counters
    K = len(accs)
    record_poses(inputs, state, results)
    for acc in accs:
        mstep.symmetrise_half(acc, inputs.operators)
    r_max = c.current_size / 2.0
    n_shells = inputs.n_shells
    all_sums = _summed(accs)
    avgctf2 = None
    if np.any(inputs.store.premultiplied):
        avgctf2 = average_ctf2(accs, inputs.npix_per_shell)
    total_weight = float(all_sums.weight_sum)
    for k, (half, acc) in enumerate(zip(state.halves, accs)):
        if total_weight > 0:
            half.pdf_class = float(acc.weight_sum) / total_weight
        if np.sum(acc.weight) > 1e-12 and half.pdf_class > 0:
            sigma2_ref, dvp, coverage = ssnr_arrays(acc, tau2[k], tau2_fudge=o.tau2_fudge, r_max=r_max,
                                                    n_shells=n_shells, avgctf2=avgctf2)
            volume = reconstruct(acc.data, acc.weight, acc.c, ori_size=inputs.ori, padding_factor=acc.pad,
                                 r_max=r_max, tau2=tau2[k], tau2_fudge=o.tau2_fudge, data_dim=acc.data_dim)
            if cc and o.ini_high > 0:
                volume = initial_lowpass(volume, resolution=o.ini_high, pixel_size=inputs.pixel_size)
            if o.flatten_solvent:
                volume = mstep.solvent_flatten(volume, radius_px=inputs.mask_radius_px, mask=inputs.solvent_mask)
            half.map = volume
            half.sigma2_ref, half.ssnr, half.completeness = sigma2_ref, dvp, coverage
        half.tau2 = tau2[k]
        half.fsc = np.zeros(n_shells)
        if total_weight > 0 and acc.pdf_sum.size == half.pdf_direction.size:
            half.pdf_direction = acc.pdf_sum / total_weight
    # Noise, offsets, scales and <Pmax>: one model for all classes.
    sigma2 = state.halves[0].sigma2
    if not cc:
        sigma2 = mstep.update_noise(all_sums, sigma2, inputs.npix_per_shell)
    sigma_offset = mstep.update_sigma_offset(all_sums)
    scales = state.halves[0].scales
    if o.scale and not cc:
        counts = np.bincount(inputs.groups, minlength=len(inputs.group_names)).astype(float)
        scales = mstep.update_scales(all_sums, counts)
    ave_pmax = all_sums.pmax_sum / max(all_sums.n_particles, 1)
    for half in state.halves:
        half.sigma2, half.sigma_offset, half.scales = sigma2.copy(), sigma_offset, scales.copy()
        half.ave_pmax, half.log_likelihood = ave_pmax, all_sums.log_likelihood
        if cc:
            mstep.report_cross_correlation(half, all_sums, box_angst=inputs.ori * inputs.pixel_size,
                                           ini_high=o.ini_high)
    c.ave_pmax = ave_pmax
    if cc and K > 1:
        copy_first_class(state)
    _update_resolution(inputs, o, state, cc=cc)


def _summed(accs: list[HalfAccumulator]) -> HalfAccumulator:
    """The per-particle and noise sums of all classes in one accumulator (maps left out)."""
    first = accs[0]
    out = HalfAccumulator.create(c=1, pad=first.pad, n_shells=first.sigma2_sum.shape[1],
                                 n_directions=first.pdf_sum.size, n_groups=first.scale_xa.size,
                                 n_optics=first.sigma2_sum.shape[0], r_max=first.r_max, data_dim=first.data_dim)
    for acc in accs:
        arrays = out.arrays()
        others = acc.arrays()
        out.set_arrays([arrays[0], arrays[1]] + [a + b for a, b in zip(arrays[2:], others[2:])])
    return out


def _update_resolution(inputs: RefineInputs, options: RefineOptions, state: RunState, *, cc: bool) -> None:
    """updateCurrentResolution for classification: the highest over the classes of the shell
    before the data-versus-prior ratio drops below 1 (held at ``--ini_high`` after a
    cross-correlation iteration), at least ``minres_map``."""
    c = state.counters
    box = inputs.ori * inputs.pixel_size
    if cc and options.ini_high > 0:
        shell = int(math.floor(box / options.ini_high + 0.5))
    else:
        shell = max(mstep.resolution_shell_from_ssnr(h.ssnr, auto_refine_split=False) for h in state.halves)
    new_res = shell / box
    if new_res <= c.current_resolution + 1e-4:
        c.nr_iter_wo_resol_gain += 1
    else:
        c.nr_iter_wo_resol_gain = 0
    c.best_resolution = max(c.best_resolution, new_res)
    c.current_resolution = new_res
