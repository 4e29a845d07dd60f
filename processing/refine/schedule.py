"""Auto-refine bookkeeping: image sizes, auto-sampling, hidden-variable changes and
convergence (spec 5.6 "Image sizes", 5.7, 5.9)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray

from processing.geometry.healpix import healpix_angular_step
from processing.geometry.symmetry import symmetry_operators

__all__ = ["SamplingState", "RefineCounters", "image_sizes", "optics_image_sizes", "update_angular_sampling",
           "hidden_variable_changes", "update_change_counters", "has_converged"]

#: RELION's MAX_NR_ITER_WO_RESOL_GAIN and MAX_NR_ITER_WO_LARGE_HIDDEN_VARIABLE_CHANGES.
MAX_ITER_WO_GAIN = 1
MAX_ITER_WO_CHANGES = 1


@dataclass
class SamplingState:
    """The current sampling (coarse values; oversampling order ``oversampling`` on top)."""

    healpix_order: int
    psi_step: float                # deg, coarse
    offset_range: float            # Å
    offset_step: float             # Å, coarse
    oversampling: int = 1
    local_search: bool = False
    sigma_rot: float = 0.0         # deg (angular prior widths)
    sigma_tilt: float = 0.0
    sigma_psi: float = 0.0
    healpix_order_original: int = 2
    psi_step_original: float = 15.0
    offset_range_original: float = 0.0
    offset_step_original: float = 0.0

    def angular_step(self, oversampled: bool = True) -> float:
        return healpix_angular_step(self.healpix_order + (self.oversampling if oversampled else 0))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RefineCounters:
    """Optimiser state carried between iterations (RELION's optimiser.star counters)."""

    iteration: int = 0
    current_resolution: float = 0.0            # 1/Å
    best_resolution: float = 0.0                # 1/Å
    nr_iter_wo_resol_gain: int = 0
    nr_iter_wo_large_changes: int = 0
    smallest_changes_orientations: float = 999.0
    smallest_changes_offsets: float = 999.0
    smallest_changes_classes: float = 9999999.0
    current_changes_orientations: float = 999.0
    current_changes_offsets: float = 999.0
    current_changes_classes: float = 9999999.0
    has_fine_enough_angular_sampling: bool = False
    has_converged: bool = False
    has_high_fsc_at_limit: bool = False
    incr_size: int = 10
    acc_rot: float = 999.0                       # deg
    acc_trans: float = 999.0                     # Å
    ave_pmax: float = 0.0
    current_size: int = 0
    coarse_size: int = 0
    sigma_offset: float = 10.0                  # Å
    random_perturbation: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def image_sizes(
    *, ori: int, pixel_size: float, counters: RefineCounters, sampling: SamplingState,
    particle_diameter: float, final: bool,
) -> tuple[int, int]:
    """(current_size, coarse_size) for the next E-step (updateImageSizeAndResolutionPointers)."""
    if final:
        current = ori
    else:
        m = int(round(counters.current_resolution * ori * pixel_size))
        if counters.ave_pmax > 0.1 and counters.has_high_fsc_at_limit:
            m += int(round(0.25 * ori / 2))
        else:
            m += counters.incr_size
        current = min(2 * m, ori)
        current -= current % 2
    coarse = min(2 * int(math.ceil(pixel_size * ori / _coarse_resolution(sampling, particle_diameter))), current)
    return current, max(coarse, 2)


def _coarse_resolution(sampling: SamplingState, particle_diameter: float) -> float:
    """Å: the resolution at which the coarse angular step moves the particle's edge by 1.2 Å
    per Å (RELION's keep-safe factor for 3D references)."""
    rotated_distance = sampling.angular_step(oversampled=False) / 360.0 * math.pi * particle_diameter
    return rotated_distance / 1.2


def optics_image_sizes(
    *, current_size: int, model_ori: int, model_pixel_size: float, box: int, pixel_size: float,
    sampling: SamplingState, particle_diameter: float,
) -> tuple[int, int]:
    """(current, coarse) image sizes of an optics group whose images are ``box`` px of
    ``pixel_size`` Å, for the model's ``current_size``: the same frequency limits on the group's
    grid, kept even and within its box (updateImageSizeAndResolutionPointers, in its order of
    floating-point operations)."""
    remap = (pixel_size * box) / (model_pixel_size * model_ori)
    current = min(box, 2 * int(math.ceil(0.5 * remap * current_size)))
    coarse_res = _coarse_resolution(sampling, particle_diameter)
    coarse = min(current, 2 * int(math.ceil(remap * model_pixel_size * model_ori / coarse_res)))
    return current, max(coarse, 2)


def update_angular_sampling(
    sampling: SamplingState, counters: RefineCounters, *, auto_ignore_angles: bool, auto_resol_angles: bool,
    local_order: int, particle_diameter: float, is_3d_data: bool, offset_rms_change: float,
) -> bool:
    """RELION's updateAngularSampling for auto-refine (spec 5.7); returns True if it changed."""
    step = sampling.angular_step()
    proceed_res = counters.nr_iter_wo_resol_gain >= MAX_ITER_WO_GAIN
    if auto_resol_angles and counters.current_resolution > 0:
        needed = 360.0 / math.ceil(math.pi * particle_diameter * counters.current_resolution)
        if needed < step and sampling.healpix_order + 1 != local_order:
            proceed_res = True
    proceed_hidden = auto_ignore_angles or counters.nr_iter_wo_large_changes >= MAX_ITER_WO_CHANGES
    if not (proceed_res and proceed_hidden):
        return False
    if step < 0.75 * counters.acc_rot:
        counters.has_fine_enough_angular_sampling = True
        return False
    counters.has_fine_enough_angular_sampling = False
    os_factor = 2 ** sampling.oversampling
    old_step, old_range = sampling.offset_step, sampling.offset_range
    new_step = min(1.5, 0.75 * counters.acc_trans) * os_factor
    new_step = max(new_step, old_step / 2.0)
    factor = 3.0 if is_3d_data else 5.0
    new_range = factor * offset_rms_change
    new_range = min(new_range, 1.3 * old_range)
    new_range = max(new_range, 1.5 * new_step)
    if new_range > 4 * new_step:
        new_range /= 2.0
    if new_range > 4 * new_step:
        new_step = new_range / 4.0
    if new_step > old_step:
        new_step, new_range = old_step, old_range
    sampling.offset_step = new_step
    sampling.offset_range = new_range
    sampling.healpix_order += 1
    sampling.psi_step = healpix_angular_step(sampling.healpix_order)
    counters.nr_iter_wo_resol_gain = 0
    counters.nr_iter_wo_large_changes = 0
    counters.smallest_changes_orientations = 999.0
    counters.smallest_changes_offsets = 999.0
    counters.smallest_changes_classes = 9999999.0
    if sampling.healpix_order >= local_order:
        sampling.local_search = True
        sigma = 2.0 * sampling.angular_step()
        sampling.sigma_rot = sampling.sigma_tilt = sampling.sigma_psi = sigma
    return True


def _axes_angle(a: NDArray, b: NDArray) -> NDArray:
    """Mean over the 3 axes of the angle (deg) between corresponding rows of a and b."""
    dots = np.clip(np.einsum("...ij,...ij->...i", a, b), -1.0, 1.0)
    return np.rad2deg(np.arccos(dots)).mean(axis=-1)


def hidden_variable_changes(
    old_matrices: NDArray, new_matrices: NDArray, old_origins: NDArray, new_origins: NDArray, symmetry: str,
) -> tuple[float, float]:
    """Mean orientation change (deg, nearest symmetry mate) and rms offset change (Å)."""
    ops = symmetry_operators(symmetry)
    mates = np.einsum("nij,kjl->nkil", old_matrices, ops)             # A_old R_k
    angle = _axes_angle(mates, new_matrices[:, None]).min(axis=1)
    d2 = ((new_origins - old_origins) ** 2).sum(axis=1)
    return float(angle.mean()), float(math.sqrt(d2.sum() / (2.0 * max(len(d2), 1))))


def update_change_counters(
    counters: RefineCounters, sampling: SamplingState, orient: float, offset: float, classes: float = 0.0,
    *, leader_sampling: tuple[int, float] | None = None,
) -> None:
    """nr_iter_wo_large_hidden_variable_changes and the running minima (spec 5.7,
    ``updateOverallChangesInHiddenVariables``).

    The class term counts too: the fraction of particles whose class changed must be within 3%
    of the smallest so far. With one class it is 0 after the first iteration, but the smallest
    starts at 9999999 (and is reset to it whenever the sampling gets finer), so the counter
    cannot grow in the first iteration at a sampling level: RELION spends at least two
    iterations per level.
    """
    counters.current_changes_orientations = orient
    counters.current_changes_offsets = offset
    counters.current_changes_classes = classes
    # relion_refine_mpi's leader, which keeps these counters, never runs updateAngularSampling
    # (only the followers do), so it compares the changes with the sampling it started the
    # process with: the initial one, or on --continue the continued iteration's
    # (``leader_sampling``: HEALPix order and offset step in Å).
    order, offset_step = leader_sampling or (sampling.healpix_order_original, sampling.offset_step_original)
    angular_step = healpix_angular_step(order + sampling.oversampling)
    translational_step = offset_step / (2 ** sampling.oversampling)
    small_classes = 1.03 * classes >= counters.smallest_changes_classes
    small_offsets = offset < 0.4 * translational_step or 1.03 * offset >= counters.smallest_changes_offsets
    small_orient = orient < 0.4 * angular_step or 1.03 * orient >= counters.smallest_changes_orientations
    if small_classes and small_offsets and small_orient:
        counters.nr_iter_wo_large_changes += 1
    else:
        counters.nr_iter_wo_large_changes = 0
    if classes < counters.smallest_changes_classes:
        counters.smallest_changes_classes = float(int(math.floor(classes + 0.5)))
    counters.smallest_changes_orientations = min(counters.smallest_changes_orientations, orient)
    counters.smallest_changes_offsets = min(counters.smallest_changes_offsets, offset)


def has_converged(counters: RefineCounters, *, auto_ignore_angles: bool) -> bool:
    """RELION's checkConvergence (spec 5.9)."""
    return (
        counters.has_fine_enough_angular_sampling
        and counters.nr_iter_wo_resol_gain >= MAX_ITER_WO_GAIN
        and (auto_ignore_angles or counters.nr_iter_wo_large_changes >= MAX_ITER_WO_CHANGES)
    )
