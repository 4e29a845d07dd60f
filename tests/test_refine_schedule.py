"""Auto-refine bookkeeping replayed on RELION's recorded demo run (tests/data/refine_demo):
each iteration's hidden-variable changes, accuracies and resolution go into tomodash's
schedule, which must produce RELION's counters and sampling decisions (spec 5.6, 5.7, 5.9)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from processing.refine.mstep import resolution_shell_from_ssnr
from processing.refine.schedule import (
    RefineCounters, SamplingState, update_angular_sampling, update_change_counters,
)
from processing.io.refine_star import ModelStarContents, OptimiserStarContents, SamplingStarContents

RELION = Path(__file__).parent / "data" / "refine_demo" / "Refine3D"
LAST = 10


def recorded(iteration: int) -> tuple[OptimiserStarContents, SamplingStarContents, ModelStarContents]:
    return (OptimiserStarContents.read(RELION / f"run_it{iteration:03d}_optimiser.star"),
            SamplingStarContents.read(RELION / f"run_it{iteration:03d}_sampling.star"),
            ModelStarContents.read(RELION / f"run_it{iteration:03d}_half1_model.star"))


def test_change_counters_follow_relion() -> None:
    """nr_iter_wo_large_hidden_variable_changes and the smallest changes, iteration by iteration,
    from RELION's own changes: the class term keeps the counter at 0 in the first iteration at
    a sampling level (RELION's input has class 0, so iteration 1 changes every class)."""
    counters = RefineCounters()
    sampling = SamplingState(healpix_order=2, psi_step=15.0, offset_range=32.4, offset_step=16.2,
                             healpix_order_original=2, offset_step_original=16.2)
    for iteration in range(1, LAST + 1):
        optimiser, _, _ = recorded(iteration)
        update_change_counters(counters, sampling, optimiser.changes_optimal_orientations,
                               optimiser.changes_optimal_offsets, optimiser.changes_optimal_classes)
        assert counters.nr_iter_wo_large_changes == optimiser.nr_iter_without_changing_assignments, iteration
        assert counters.smallest_changes_orientations == pytest.approx(optimiser.smallest_changes_orientations)
        assert counters.smallest_changes_offsets == pytest.approx(optimiser.smallest_changes_offsets)
        assert counters.smallest_changes_classes == optimiser.smallest_changes_classes


def test_resolution_counter_follows_relion() -> None:
    """The resolution from half 1's SSNR and nr_iter_wo_resol_gain, judged against the previous
    iteration (tomodash compared with the best so far)."""
    previous = 0.0
    wo_gain = 0
    for iteration in range(1, LAST + 1):
        optimiser, _, model = recorded(iteration)
        shell = resolution_shell_from_ssnr(model.ssnr_map)
        resolution = shell / (model.ori_size * model.pixel_size)
        assert 1.0 / resolution == pytest.approx(model.current_resolution, rel=1e-4), iteration
        wo_gain = wo_gain + 1 if resolution <= previous + 1e-4 else 0
        previous = resolution
        assert wo_gain == optimiser.nr_iter_without_resolution_gain, iteration


def test_sampling_decision_of_iteration_11() -> None:
    """RELION's iteration 11 (run.out): with no resolution gain and the changes stable it goes
    to HEALPix 3 (3.75 deg), offsets 5 x the last rms change (28.2373 A) at the old step, because
    for tomography the step may at most halve."""
    optimiser, sampling_file, model = recorded(LAST)
    sampling = SamplingState(healpix_order=sampling_file.healpix_order, psi_step=sampling_file.psi_step,
                             offset_range=sampling_file.offset_range, offset_step=sampling_file.offset_step)
    counters = RefineCounters(
        current_resolution=1.0 / model.current_resolution, acc_rot=optimiser.overall_accuracy_rotations,
        acc_trans=optimiser.overall_accuracy_translations_angst,
        nr_iter_wo_resol_gain=optimiser.nr_iter_without_resolution_gain,
        nr_iter_wo_large_changes=optimiser.nr_iter_without_changing_assignments,
        current_changes_offsets=optimiser.changes_optimal_offsets,
    )
    changed = update_angular_sampling(
        sampling, counters, auto_ignore_angles=False, auto_resol_angles=False, local_order=4,
        particle_diameter=250.0, is_3d_data=False, offset_rms_change=optimiser.changes_optimal_offsets)
    assert changed and not counters.has_fine_enough_angular_sampling
    assert sampling.healpix_order == 3 and not sampling.local_search
    assert sampling.angular_step() == pytest.approx(3.75)
    assert sampling.offset_range == pytest.approx(28.2373, abs=1e-3)       # RELION's run.out
    assert sampling.offset_step / 2 == pytest.approx(4.05)                  # printed oversampled
    assert counters.nr_iter_wo_resol_gain == 0 and counters.nr_iter_wo_large_changes == 0
    assert counters.smallest_changes_classes == 9999999
    assert math.isclose(sampling.psi_step, 7.5)


def test_change_counters_use_the_initial_sampling() -> None:
    """relion_refine_mpi's leader keeps the change counters but never updates its sampling, so
    changes are judged against the initial steps: RELION's TEST run (refine_test_relion,
    iteration 13, HEALPix 4 and 6 A coarse offsets by then) counted changes of 1.15 deg / 1.48 A as
    small (below 0.4 x 7.5 deg / 0.4 x 12 A), not against 1.875 deg / 3 A."""
    counters = RefineCounters(smallest_changes_orientations=1.547291, smallest_changes_offsets=1.918281,
                              smallest_changes_classes=0.0)
    sampling = SamplingState(healpix_order=4, psi_step=3.75, offset_range=15.34, offset_step=6.0,
                             healpix_order_original=2, offset_step_original=24.0)
    update_change_counters(counters, sampling, 1.146250, 1.481130, 0.0)
    assert counters.nr_iter_wo_large_changes == 1


def test_change_counters_after_continue_use_the_continued_sampling() -> None:
    """On --continue the leader starts from the continued iteration's sampling file, so from
    then on changes are judged against that iteration's steps (HEALPix 4 and 6 Å here): the
    same changes as above are no longer small."""
    counters = RefineCounters(smallest_changes_orientations=2.0, smallest_changes_offsets=2.0,
                              smallest_changes_classes=0.0)
    sampling = SamplingState(healpix_order=4, psi_step=3.75, offset_range=15.34, offset_step=6.0,
                             healpix_order_original=2, offset_step_original=24.0)
    # Oversampled steps 1.875 deg / 3 Å: 1.15 deg and 1.48 Å exceed 40 % of them.
    update_change_counters(counters, sampling, 1.146250, 1.481130, 0.0, leader_sampling=(4, 6.0))
    assert counters.nr_iter_wo_large_changes == 0
    update_change_counters(counters, sampling, 0.3, 1.0, 0.0, leader_sampling=(4, 6.0))
    assert counters.nr_iter_wo_large_changes == 1
