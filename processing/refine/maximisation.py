"""What the leader does after the E-step of a 3D auto-refine iteration (spec 5.4 items 3-11):
the hidden-variable changes and new poses, then per half set symmetrisation, low-resolution
joining, the gold-standard FSC (solvent-corrected on request), one M-step per half
(``mstep``), solvent flattening, and the new current resolution.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from processing.fourier.backprojector import reconstruct
from processing.fourier.filters import initial_lowpass
from processing.fourier.fsc import corrected_fsc, fsc
from processing.geometry.euler import euler_to_matrix
from processing.glibc_random import GlibcRandom
from processing.postprocess import randomize_phases_beyond

from . import mstep
from .estep import HalfAccumulator, ParticleResult
from .inputs import RefineInputs
from .options import RefineOptions
from .schedule import RefineCounters, hidden_variable_changes, update_change_counters
from .state import RunState

__all__ = ["maximise", "update_current_resolution", "angstrom", "record_poses"]


def maximise(inputs: RefineInputs, options: RefineOptions, state: RunState, accs: list[HalfAccumulator],
             results: dict[int, ParticleResult], *, cc: bool, final: bool,
             leader_sampling: tuple[int, float] | None = None) -> None:
    """Update ``state`` in place from the summed E-step of both halves.

    Parameters
    ----------
    accs
        Each half set's sums over all ranks (modified: symmetrised, joined at low resolution,
        and in the ``final`` iteration the two are added).
    results
        Every particle's new pose, by particle index.
    cc
        The iteration was a first-iteration cross-correlation (``--firstiter_cc``): the noise
        and scales are kept and the maps low-passed to ``--ini_high`` again.
    final
        The last iteration: both halves are reconstructed from the joined sums, and the
        unfiltered half maps are kept in ``state.unfil``.
    leader_sampling
        (HEALPix order, offset step Å) the change counters are judged against after
        ``--continue``.
    """
    o = options
    c = state.counters
    record_poses(inputs, state, results, leader_sampling=leader_sampling)
    for acc in accs:
        mstep.symmetrise_half(acc, inputs.operators)
    r_max = c.current_size / 2.0
    if final:
        state.unfil = [_reconstruct_unfiltered(inputs, acc) for acc in accs]
    if o.low_resol_join_halves > 0:
        join_shell = int(math.ceil(inputs.ori * inputs.pixel_size / max(
            o.low_resol_join_halves, angstrom(c.current_resolution))))
        mstep.join_low_resolution(accs[0], accs[1], join_shell)
    if o.solvent_correct_fsc and inputs.solvent_mask is not None:
        fsc = _solvent_corrected_fsc(inputs, accs, seed=inputs.seed + c.iteration)
    else:
        fsc = mstep.half_map_fsc(accs[0], accs[1], inputs.n_shells, r_max=int(r_max))
    _update_incr_size(c, fsc)
    if not c.has_high_fsc_at_limit:
        limit = c.current_size // 2 - 1
        c.has_high_fsc_at_limit = bool(0 <= limit < fsc.size and fsc[limit] > 0.2)
    if final:
        accs[0].add(accs[1])
        accs = [accs[0], accs[0]]
        state.joined = True
    n_groups = len(inputs.group_names)
    counts = [np.bincount(inputs.groups[[p.half == h for p in state.particles]], minlength=n_groups).astype(float)
              for h in range(2)]
    for h, (half, acc) in enumerate(zip(state.halves, accs)):
        model = mstep.reconstruct_half(acc, fsc, ori=inputs.ori, r_max=r_max, tau2_fudge=o.tau2_fudge, joined=final)
        volume = model.map
        if cc and o.ini_high > 0:
            volume = initial_lowpass(volume, resolution=o.ini_high, pixel_size=inputs.pixel_size)
        if o.flatten_solvent and not final:
            volume = mstep.solvent_flatten(volume, radius_px=inputs.mask_radius_px, mask=inputs.solvent_mask)
        half.map = volume
        half.fsc = fsc
        half.ssnr, half.tau2, half.sigma2_ref, half.completeness = (
            model.ssnr, model.tau2, model.sigma2_ref, model.completeness)
        if not cc:
            half.sigma2 = mstep.update_noise(acc, half.sigma2, inputs.npix_per_shell)
        half.sigma_offset = mstep.update_sigma_offset(acc)
        if acc.weight_sum > 0 and acc.pdf_sum.size == half.pdf_direction.size:
            half.pdf_direction = acc.pdf_sum / acc.weight_sum
        if o.scale and not cc:
            half.scales = mstep.update_scales(acc, counts[0] + counts[1] if final else counts[h])
        half.ave_pmax = acc.pmax_sum / max(acc.weight_sum, 1e-30)
        half.log_likelihood = acc.log_likelihood
    if cc:
        for half, acc in zip(state.halves, accs):
            mstep.report_cross_correlation(half, acc, box_angst=inputs.ori * inputs.pixel_size, ini_high=o.ini_high)
    # RELION broadcasts rank 1's <Pmax> (half 1) for the image-size rule.
    c.ave_pmax = state.halves[0].ave_pmax
    update_current_resolution(inputs, o, state, cc=cc)


def record_poses(inputs: RefineInputs, state: RunState, results: dict[int, ParticleResult], *,
                 leader_sampling: tuple[int, float] | None = None) -> None:
    """The hidden-variable changes (for convergence; the class changes are the fraction of
    particles whose best class changed), then the new poses and classes into ``state``."""
    c, s = state.counters, state.sampling
    idx = np.array(sorted(results))
    old_m = np.stack([euler_to_matrix(*state.particles[i].angles) for i in idx])
    new_m = np.stack([euler_to_matrix(*results[i].angles) for i in idx])
    old_o = np.stack([state.particles[i].origin for i in idx])
    new_o = np.stack([results[i].origin for i in idx])
    orient, offset = hidden_variable_changes(old_m, new_m, old_o, new_o, inputs.symmetry)
    class_changes = float(np.mean([state.particles[i].class_number != results[i].class_index + 1 for i in idx]))
    update_change_counters(c, s, orient, offset, class_changes, leader_sampling=leader_sampling)
    for i in idx:
        r = results[i]
        state.particles[i].angles = r.angles
        state.particles[i].origin = r.origin
        state.particles[i].origin_px = r.origin_px
        state.particles[i].class_number = r.class_index + 1
        state.pmax[i] = r.pmax
        state.n_significant[i] = r.n_significant
        state.log_likelihood_particles[i] = r.log_likelihood


def update_current_resolution(inputs: RefineInputs, options: RefineOptions, state: RunState, *, cc: bool) -> None:
    """RELION's updateCurrentResolution: the shell before SSNR (half 1's) first drops below 1
    (FSC 0.5 while the halves are separate, 0.143 once joined), held at ``--ini_high`` after a
    first cross-correlation iteration; no gain counts against the previous iteration's value."""
    c = state.counters
    box = inputs.ori * inputs.pixel_size
    if cc and options.ini_high > 0:
        shell = int(math.floor(box / options.ini_high + 0.5))
    else:
        shell = mstep.resolution_shell_from_ssnr(state.halves[0].ssnr)
    new_res = shell / box
    if new_res <= c.current_resolution + 1e-4:
        c.nr_iter_wo_resol_gain += 1
    else:
        c.nr_iter_wo_resol_gain = 0
    c.best_resolution = max(c.best_resolution, new_res)
    c.current_resolution = new_res


def _solvent_corrected_fsc(inputs: RefineInputs, accs: list[HalfAccumulator], *, seed: int) -> NDArray[np.float64]:
    """"Use solvent-flattened FSCs" (needs a reference mask, as in RELION, and runs in every
    iteration, the final one included): the FSC of the unregularised half maps inside the
    solvent mask, corrected for the mask by phase randomisation beyond the first shell where the
    unmasked FSC falls below 0.8, zero where the randomised curve exceeds the masked one;
    relion_refine's own rule (relion_postprocess differs in that zero and in its fallback).
    The curve replaces the unmasked one for tau² and the resolution. The random phases come
    from glibc's ``rand()`` seeded with ``seed``; RELION's stream is at an unknowable state by
    then, so the randomised curve agrees with RELION's only statistically."""
    half1, half2 = (_reconstruct_unfiltered(inputs, acc) for acc in accs)
    unmasked = fsc(half1, half2)
    below = np.nonzero(unmasked[1:] < 0.8)[0]
    if below.size == 0:
        curve = unmasked          # RELION warns and keeps the unmasked FSC until it drops
    else:
        randomize_at = int(below[0]) + 1
        mask = inputs.solvent_mask
        generator = GlibcRandom(seed)
        random1, random2 = (randomize_phases_beyond(h, index=randomize_at, generator=generator) for h in (half1, half2))
        curve = corrected_fsc(fsc(half1, half2, mask=mask), fsc(random1, random2, mask=mask),
                              randomize_at=randomize_at, zero_where_noise_exceeds=True)
    out = np.zeros(inputs.n_shells)
    n = min(out.size, curve.size)
    out[:n] = curve[:n]
    out[0] = 1.0
    return out


def _reconstruct_unfiltered(inputs: RefineInputs, acc: HalfAccumulator) -> NDArray[np.float64]:
    return reconstruct(acc.data, acc.weight, acc.c, ori_size=inputs.ori, padding_factor=acc.pad,
                       r_max=inputs.ori / 2.0, tau2=None, data_dim=acc.data_dim)


def _update_incr_size(c: RefineCounters, fsc: NDArray) -> None:
    """incr_size >= (first shell with FSC < 0.143) - (first with FSC < 0.5) + 5 (-1 if none)."""
    below_0143 = np.flatnonzero(fsc < 0.143)
    below_05 = np.flatnonzero(fsc < 0.5)
    first_0143 = int(below_0143[0]) if below_0143.size else -1
    first_05 = int(below_05[0]) if below_05.size else -1
    c.incr_size = max(c.incr_size, first_0143 - first_05 + 5)


def angstrom(resolution: float) -> float:
    """A resolution in Å from one in 1/Å (999 for none yet, as RELION writes)."""
    return 1.0 / resolution if resolution > 0 else 999.0
