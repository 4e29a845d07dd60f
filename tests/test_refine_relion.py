"""3D auto-refine against RELION 5's own runs: iteration 0 and iteration 1 from RELION's inputs
(the stacks, the reference, RELION's random half sets, ``--perturb 0``), compared number by
number with RELION's files. Three cases (see each folder's ORIGIN.md): the demo data
(tests/data/refine_demo, RELION's own extraction), and two unkind variants of the TEST data
(tests/data/refine_unkind): stacks that are not CTF-premultiplied, and two optics groups.

Iteration 1 is deterministic up to floating point in both programs, so the tolerances are set
just above the differences measured here and well below what the deviations fixed in issue 10
produced (each named at its assertion).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import starfile

from processing.geometry.euler import euler_to_matrix
from processing.geometry.symmetry import symmetry_operators
from processing.io import OptimisationSet, ParticleSet
from processing.refine.driver import RefineRun
from processing.refine.inputs import reference_files
from processing.refine.state import RunState
from processing.refine.options import RefineOptions
from processing.refine.relion_code import RelionCode
from processing.io.refine_star import ModelStarContents, OptimiserStarContents

DATA = Path(__file__).parent / "data"
DEMO = DATA / "refine_demo"
RELION = DEMO / "Refine3D"


@dataclass(frozen=True)
class Case:
    """A RELION run of the fixtures: its folder, particle file, reference and mask diameter."""

    root: Path
    particles: str
    reference: str
    diameter: float

    @property
    def relion(self) -> Path:
        return self.root / "Refine3D"


CASES = {
    "demo": Case(DEMO, "Extract/particles.star", "Reconstruct/merged.mrc", 250.0),
    "not_premultiplied": Case(DATA / "refine_unkind" / "nopre", "ex/particles.star", "rec/merged.mrc", 200.0),
    "two_optics_groups": Case(DATA / "refine_unkind" / "optics2", "ex/particles.star", "rec/merged.mrc", 200.0),
}


def relion_options(out: Path, optimisation_set: Path, case: Case = CASES["demo"], **changes) -> RefineOptions:
    """RELION's command line of the fixture (ORIGIN.md), as RefineOptions."""
    options = RefineOptions(
        output_root=str(out / "run"), optimisation_set=str(optimisation_set),
        reference=str(case.root / case.reference), trust_ref_size=True, ini_high=60.0, ctf=True,
        particle_diameter=case.diameter, zero_mask=True, flatten_solvent=True, symmetry="C6", sigma_tilt=10.0,
        offset_range=4, offset_step=2, scale=True, random_seed=1, perturb=0.0, combine_weights_via_disc=False,
        low_resol_join_halves=40.0, healpix_order=2, auto_local_healpix_order=4, pool=3, threads=2,
    )
    return options.with_changes(**changes)


def with_relion_halves(tmp: Path, case: Case = CASES["demo"]) -> Path:
    """The case's extracted particles with RELION's rlnRandomSubset (from run_it000_data.star),
    image (and 3D weight) paths made absolute; returns the optimisation set."""
    particles = ParticleSet.read(case.root / case.particles)
    relion = starfile.read(case.relion / "run_it000_data.star")["particles"]
    table = particles.particles
    assert list(table["rlnTomoParticleName"]) == list(relion["rlnTomoParticleName"])
    table["rlnRandomSubset"] = relion["rlnRandomSubset"].to_numpy()
    for column in ("rlnImageName", "rlnCtfImage"):
        if column in table.columns:
            table[column] = [str(case.root / name) for name in table[column]]
    particles.write(tmp / "particles.star")
    OptimisationSet(particles=str(tmp / "particles.star"), tomograms=str(case.root / "tomograms.star")).write(
        tmp / "optimisation_set.star")
    return tmp / "optimisation_set.star"


def started_run(tmp: Path, case: Case = CASES["demo"], **changes) -> tuple[RefineRun, RunState]:
    run = RefineRun(relion_options(tmp / "out", with_relion_halves(tmp, case), case, **changes),
                    log=lambda *a, **k: None)
    (tmp / "out").mkdir()
    state, _ = run.start()
    return run, state


def relion_model(iteration: int, half: int, case: Case = CASES["demo"]) -> ModelStarContents:
    return ModelStarContents.read(case.relion / f"run_it{iteration:03d}_half{half}_model.star")


@pytest.fixture(scope="module", params=list(CASES))
def iteration_one(request, tmp_path_factory) -> tuple[Case, RefineRun, RunState, RunState]:
    """(case, run, state after initialisation, state after iteration 1)."""
    import copy

    case = CASES[request.param]
    run, state = started_run(tmp_path_factory.mktemp(f"relion_it1_{request.param}"), case)
    initial = copy.deepcopy(state)
    run.iterate(state, 1, cc=False, final=False)
    return case, run, initial, state


def test_iteration_zero_matches_relion(iteration_one) -> None:
    case, run, state, _ = iteration_one
    # Iteration 0 stands at --ini_high's shell (RELION's iteration-0 files say "inf").
    box = run.inputs.ori * run.inputs.pixel_size
    assert 1.0 / state.counters.current_resolution == pytest.approx(box / np.floor(box / 60.0 + 0.5))
    for half in (1, 2):
        model = relion_model(0, half, case)
        ours = state.halves[half - 1]
        # Noise spectra per optics group from the first ten tilt images of each group, half 1
        # first (RELION counts images, not particles): measured agreement 1e-5; ten particles
        # instead gave 10-100 % errors.
        assert ours.sigma2.shape[0] == len(model.sigma2_noise) == run.inputs.n_optics
        for group in range(run.inputs.n_optics):
            np.testing.assert_allclose(ours.sigma2[group], model.sigma2_noise[group], rtol=1e-3)
        # Reference power tau2 and the data-vs-prior ratio where the low-passed reference has
        # power (RELION's higher shells hold round-off at 1e-33).
        np.testing.assert_allclose(ours.tau2[1:7], model.reference_tau2[1:7], rtol=1e-3)
        np.testing.assert_allclose(ours.ssnr[1:7], model.ssnr_map[1:7], rtol=1e-3)


def test_first_iteration_model_matches_relion(iteration_one) -> None:
    case, run, _, state = iteration_one
    c = state.counters
    optimiser = OptimiserStarContents.read(case.relion / "run_it001_optimiser.star")
    # Resolution and the image-size bookkeeping are RELION's (tomodash had 64.8 Å on the demo).
    assert 1.0 / c.current_resolution == pytest.approx(relion_model(1, 1, case).current_resolution)
    assert c.has_high_fsc_at_limit == bool(optimiser.has_high_fsc_at_resol_limit)
    assert c.incr_size == optimiser.increment_image_size
    # Hidden-variable changes: every particle changed class (RELION's input has class 0).
    assert c.current_changes_classes == pytest.approx(optimiser.changes_optimal_classes)
    assert c.current_changes_orientations == pytest.approx(optimiser.changes_optimal_orientations, abs=1.0)
    assert c.current_changes_offsets == pytest.approx(optimiser.changes_optimal_offsets, abs=0.5)
    # Accuracies on RELION's 100 particles (its std::shuffle visiting order, reproduced) with its
    # perturbed axes (glibc rand): measured 0.566 deg against RELION's 0.565 on the demo,
    # identical on the TEST cases; the first 100 in file order gave 0.593, and tomodash's old
    # one axis per particle 0.77.
    assert c.acc_rot == pytest.approx(optimiser.overall_accuracy_rotations, rel=0.01)
    assert c.acc_trans == pytest.approx(optimiser.overall_accuracy_translations_angst, rel=0.01)
    for half in (1, 2):
        model = relion_model(1, half, case)
        ours = state.halves[half - 1]
        # Gold-standard FSC per shell (down-sampled sums, RELION's pixel sets): measured within
        # 0.005; the per-voxel FSC and the other deviations gave 0.1 - 0.3 at shells 7-15.
        np.testing.assert_allclose(ours.fsc[: run.inputs.n_shells], model.gold_standard_fsc[: run.inputs.n_shells], atol=0.01)
        # Noise spectra within each half and optics group (measured 4e-4).
        for group in range(run.inputs.n_optics):
            np.testing.assert_allclose(ours.sigma2[group], model.sigma2_noise[group], rtol=2e-3)
        # tau2 where the FSC is above noise level, and sigma2_ref below the edge shell
        # (measured 2.6 % / 0.1 %). The edge shell (current size / 2) is 6 % low on the demo
        # and 1 % on the TEST cases: its mean weight depends on the image pixels exactly on the
        # circle |k| = size/2 (on the demo's (15, 0), (9, 12), (12, 9), (0, 15)), which
        # backproject2Dto3D inserts or not by the last bits of each image's matrix. tomodash
        # inserts them all (6 % low); none gave 7 % high; RELION's values imply it inserted
        # 49 % of them on the demo and about 72 % on the TEST cases.
        # Shell 1 holds the origin's neighbours: the origin back-projected with 1/σ²(0) and not
        # doubled by the Hermitian sum, as RELION (measured 1e-5; 2.2 % off with either rule
        # missing).
        edge = c.current_size // 2
        np.testing.assert_allclose(ours.tau2[1:11], model.reference_tau2[1:11], rtol=0.03)
        np.testing.assert_allclose(ours.sigma2_ref[1:edge], model.reference_sigma2[1:edge], rtol=3e-3)
        assert ours.sigma2_ref[1] == pytest.approx(model.reference_sigma2[1], rel=1e-3)
        assert ours.sigma2_ref[edge] == pytest.approx(model.reference_sigma2[edge], rel=0.08)
        # Within-half nuisance parameters: offsets prior width (measured 0.15 %), per-tomogram
        # scale corrections over SSNR > 3 shells (measured 0.002).
        assert ours.sigma_offset == pytest.approx(model.sigma_offsets_angst, rel=0.01)
        np.testing.assert_allclose(ours.scales, model.group_scale_correction, atol=0.01)
        np.testing.assert_allclose(ours.completeness[0:15], model.fourier_completeness[0:15], atol=0.01)
        # The class table's resolution and completeness from the data-versus-prior ratio
        # (tomodash wrote the resolution worked at and the mean completeness of all shells).
        written = ModelStarContents.read(Path(run.options.output_root).parent / f"run_it001_half{half}_model.star")
        assert written.estimated_resolution == pytest.approx(model.estimated_resolution, rel=1e-4)
        assert written.overall_fourier_completeness == pytest.approx(model.overall_fourier_completeness, abs=0.02)


def test_an_iteration_on_the_gpu_is_the_cpus(iteration_one, device_cupy, tmp_path) -> None:
    """Iteration 1 again with ``--gpu 0``: on CUDA, or rehearsed with the host stand-in of
    tests/host_cupy.py (numpy held to CuPy's rules, the gather kernel's CUDA code compiled for the
    host). The same poses, noise and maps as the numba kernels' iteration, on each fixture: two
    optics groups of another box and pixel size take the remapped frequencies through the
    device, and stacks not CTF-premultiplied their CTFs."""
    case, run, _, cpu = iteration_one
    (tmp_path / "out").mkdir()
    again = RefineRun(run.options.with_changes(output_root=str(tmp_path / "out" / "run"), gpu="0"),
                      log=lambda *a, **k: None)
    state, _ = again.start()
    again.iterate(state, 1, cc=False, final=False)
    assert again.device.on_gpu and again.array_kernels and not run.array_kernels
    # Slices agree to float32 rounding (1e-6 relative), so every particle's best pose is the same.
    assert_same_iteration(state, cpu)


def assert_same_iteration(state: RunState, cpu: RunState) -> None:
    """The same poses, noise spectra, maps and resolution as the reference iteration ``cpu``,
    up to sums taken in another order (1e-5 of the largest value)."""
    np.testing.assert_allclose(np.array([p.angles for p in state.particles]),
                               np.array([p.angles for p in cpu.particles]), atol=1e-6)
    np.testing.assert_allclose(np.array([p.origin for p in state.particles]),
                               np.array([p.origin for p in cpu.particles]), atol=1e-9)
    for ours, theirs in zip(state.halves, cpu.halves):
        np.testing.assert_allclose(ours.sigma2, theirs.sigma2, rtol=1e-5)
        np.testing.assert_allclose(ours.map, theirs.map, atol=1e-5 * np.abs(theirs.map).max())
    assert state.counters.current_resolution == cpu.counters.current_resolution


@pytest.mark.parametrize("iteration_one", ["demo"], indirect=True)
def test_an_iteration_in_small_chunks_is_the_same(iteration_one, tmp_path, monkeypatch) -> None:
    """Iteration 1 again with the E-step's chunks of orientations cut to one
    (the cross-term products and the accumulate pass, whose insertion then runs chunk by
    chunk): the same poses, noise and maps, the sums taken in another order."""
    from processing.refine import estep

    case, run, _, cpu = iteration_one
    monkeypatch.setattr(estep, "CHUNK_BYTES", 1)                       # one orientation per chunk
    calls = []
    scatter = estep._scatter
    monkeypatch.setattr(estep, "_scatter", lambda *a, **k: (calls.append(1), scatter(*a, **k)))
    (tmp_path / "out").mkdir()
    again = RefineRun(run.options.with_changes(output_root=str(tmp_path / "out" / "run")), log=lambda *a, **k: None)
    state, _ = again.start()
    again.iterate(state, 1, cc=False, final=False)
    # more insertions than particles: some particles' significant orientations took several chunks
    assert len(calls) > len(state.particles)
    assert_same_iteration(state, cpu)


def _angle_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation angle (deg) between RELION orientations a and b (n, 3), over C6 mates."""
    A = euler_to_matrix(a[:, 0], a[:, 1], a[:, 2])
    B = euler_to_matrix(b[:, 0], b[:, 1], b[:, 2])
    best = np.full(len(a), np.inf)
    for R in symmetry_operators("C6"):
        M = np.einsum("nij,jk,nlk->nil", A, R, B)
        cos = np.clip((np.trace(M, axis1=1, axis2=2) - 1.0) / 2.0, -1.0, 1.0)
        best = np.minimum(best, np.degrees(np.arccos(cos)))
    return best


def _pose_differences(state: RunState, relion) -> tuple[np.ndarray, np.ndarray]:
    """Per particle: angle (deg, over C6 mates) and origin distance (Å) between tomodash's poses
    and those of RELION's particles table."""
    angles = np.array([p.angles for p in state.particles])
    origins = np.array([p.origin for p in state.particles])
    difference = _angle_between(relion[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(), angles)
    shift = np.linalg.norm(relion[["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]].to_numpy() - origins,
                           axis=1)
    return difference, shift


def test_first_iteration_poses_match_relion(iteration_one) -> None:
    case, _, _, state = iteration_one
    relion = starfile.read(case.relion / "run_it001_data.star")["particles"]
    difference, shift = _pose_differences(state, relion)
    # Same sampling grid, so a matching pose is identical. Measured: every orientation in all
    # three cases, origins 99.6 % (demo) and 100 %. Scoring the projection's empty pixels
    # (the rest of the edge shell) against the reference instead of zero gave 99.3 % / 98.2 %
    # on the demo; the tilt-prior window at exactly 3 sigma, the offset prior or the perturbed
    # translations done otherwise gave 54-84 %.
    assert np.median(difference) < 1e-3
    assert np.mean(difference < 1e-3) > 0.995
    assert np.mean(shift < 1e-3) > 0.99
    # Per-particle likelihood: median |difference| from RELION's measured 0.17 (demo) and 4e-4
    # (the TEST cases); 0.55 on the demo with the empty pixels scored.
    log_likelihood = state.log_likelihood_particles - relion["rlnLogLikeliContribution"].to_numpy()
    assert np.median(np.abs(log_likelihood)) < 0.3
    assert state.pmax.mean() == pytest.approx(relion["rlnMaxValueProbDistribution"].mean(), abs=0.01)


CROSS_CORRELATION = DATA / "refine_demo_cc" / "Refine3D"


@pytest.fixture(scope="module")
def cross_correlation_iteration(tmp_path_factory) -> tuple[RefineRun, RunState]:
    """The demo's iteration 1 with --firstiter_cc (tests/data/refine_demo_cc/ORIGIN.md)."""
    run, state = started_run(tmp_path_factory.mktemp("relion_cc_it1"), CASES["demo"], firstiter_cc=True)
    run.iterate(state, 1, cc=True, final=False)
    return run, state


def test_first_cross_correlation_iteration_poses_match_relion(cross_correlation_iteration) -> None:
    _, state = cross_correlation_iteration
    relion = starfile.read(CROSS_CORRELATION / "run_it001_data.star")["particles"]
    difference, shift = _pose_differences(state, relion)
    # Hard assignment by RELION's correlation: each image normalised by its own projection and
    # image norms, summed over the images. Measured: 99.3 % of orientations, 100 % of origins;
    # one normalisation over all images together (tomodash before) gave 70 % and 79 %.
    assert np.mean(difference < 1e-3) > 0.98
    assert np.mean(shift < 1e-3) > 0.98
    # rlnLogLikeliContribution is the best correlation averaged over the images (measured
    # within 1.2e-3, single-precision slices; tomodash wrote 0).
    np.testing.assert_allclose(state.log_likelihood_particles[difference < 1e-3],
                               relion["rlnLogLikeliContribution"].to_numpy()[difference < 1e-3], rtol=3e-3)


def test_cross_correlation_iteration_through_array_kernels_in_small_chunks(
        cross_correlation_iteration, tmp_path, monkeypatch) -> None:
    """The cross-correlation iteration again with the GPU's array-module kernels (run by
    numpy) and seven orientations per chunk, so that most particles' orientations end in a
    part-filled chunk: the same poses, noise and maps. (One orientation per chunk took 46 s
    here, against 13 s; the numba path's test above keeps chunks of one.)"""
    from processing.refine import estep

    run, cpu = cross_correlation_iteration
    monkeypatch.setattr(estep, "ROTATION_CHUNK", 7)
    (tmp_path / "out").mkdir()
    again = RefineRun(run.options.with_changes(output_root=str(tmp_path / "out" / "run")), log=lambda *a, **k: None,
                      array_kernels=True)
    state, _ = again.start()
    again.iterate(state, 1, cc=True, final=False)
    assert_same_iteration(state, cpu)
    np.testing.assert_allclose(state.log_likelihood_particles, cpu.log_likelihood_particles, rtol=1e-5)


def test_first_cross_correlation_iteration_model_matches_relion(cross_correlation_iteration) -> None:
    run, state = cross_correlation_iteration
    c = state.counters
    optimiser = OptimiserStarContents.read(CROSS_CORRELATION / "run_it001_optimiser.star")
    assert c.current_changes_orientations == pytest.approx(optimiser.changes_optimal_orientations, rel=0.01)
    assert c.current_changes_offsets == pytest.approx(optimiser.changes_optimal_offsets, rel=0.01)
    assert c.acc_rot == optimiser.overall_accuracy_rotations == 999.0  # not estimated after a CC iteration
    out = Path(run.options.output_root).parent
    for half in (1, 2):
        relion = ModelStarContents.read(CROSS_CORRELATION / f"run_it001_half{half}_model.star")
        ours = ModelStarContents.read(out / f"run_it001_half{half}_model.star")
        # Offset prior width from the hard-assigned offsets (measured 1e-7; 2 % with the old
        # correlation), the mean correlation per image as rlnLogLikelihood (measured 1e-6).
        assert ours.sigma_offsets_angst == pytest.approx(relion.sigma_offsets_angst, rel=1e-3)
        assert ours.log_likelihood == pytest.approx(relion.log_likelihood, rel=1e-3)
        np.testing.assert_allclose(ours.gold_standard_fsc, relion.gold_standard_fsc, atol=0.01)
        # tau2 and the data-versus-prior ratio of the maps low-passed to --ini_high again: zero
        # beyond the filter's edge (tomodash kept the unfiltered values there).
        edge = int(run.inputs.ori * run.inputs.pixel_size / 60.0) + 2
        np.testing.assert_allclose(ours.reference_tau2[1:edge], relion.reference_tau2[1:edge], rtol=0.03)
        np.testing.assert_allclose(ours.ssnr_map[1:edge], relion.ssnr_map[1:edge], rtol=0.03)
        assert not ours.reference_tau2[edge:].any() and not relion.reference_tau2[edge:].any()
        # The class table: resolution and completeness from that ratio (tomodash wrote the
        # resolution worked at, 64.8 Å against 54 Å), accuracies 0 until estimated.
        assert ours.estimated_resolution == pytest.approx(relion.estimated_resolution, rel=1e-4)
        assert ours.overall_fourier_completeness == pytest.approx(relion.overall_fourier_completeness, abs=0.01)
        assert ours.accuracy_rotations == relion.accuracy_rotations == 0.0


def relion_path(last: int, folder: Path = RELION) -> list[dict]:
    """RELION's state after each iteration 1..last of a demo run (its optimiser, sampling
    and half-1 model files)."""
    from processing.io.refine_star import SamplingStarContents

    path = []
    for iteration in range(1, last + 1):
        optimiser = OptimiserStarContents.read(folder / f"run_it{iteration:03d}_optimiser.star")
        sampling = SamplingStarContents.read(folder / f"run_it{iteration:03d}_sampling.star")
        model = ModelStarContents.read(folder / f"run_it{iteration:03d}_half1_model.star")
        path.append({
            "resolution": model.current_resolution, "healpix_order": sampling.healpix_order,
            "offset_range": sampling.offset_range, "offset_step": sampling.offset_step,
            "acc_rot": optimiser.overall_accuracy_rotations, "acc_trans": optimiser.overall_accuracy_translations_angst,
            "changes": (optimiser.changes_optimal_orientations, optimiser.changes_optimal_offsets),
            "wo_gain": optimiser.nr_iter_without_resolution_gain,
            "wo_changes": optimiser.nr_iter_without_changing_assignments,
            "fsc": np.asarray(model.gold_standard_fsc, dtype=float), "size": model.current_image_size,
        })
    return path


@pytest.fixture(scope="module")
def demo_path(tmp_path_factory) -> list[dict]:
    """tomodash's state after each of the first ten iterations on RELION's inputs (about a
    minute on 2 cores)."""
    return tomodash_path(tmp_path_factory.mktemp("relion_path"))


def tomodash_path(tmp: Path, **changes) -> list[dict]:
    """tomodash's state after each of the demo's first ten iterations, run with RELION's
    command line plus ``changes``."""
    run, state = started_run(tmp, **changes)
    path = []
    for iteration in range(1, RECORDED_ITERATIONS + 1):
        run.iterate(state, iteration, cc=False, final=False)
        c, s = state.counters, state.sampling
        path.append({
            "resolution": 1.0 / c.current_resolution, "healpix_order": s.healpix_order,
            "offset_range": s.offset_range, "offset_step": s.offset_step, "acc_rot": c.acc_rot,
            "acc_trans": c.acc_trans, "changes": (c.current_changes_orientations, c.current_changes_offsets),
            "wo_gain": c.nr_iter_wo_resol_gain, "wo_changes": c.nr_iter_wo_large_changes,
            "local": s.local_search, "joined": state.joined, "converged": c.has_converged,
            "fsc": np.array(state.halves[0].fsc, dtype=float), "size": c.current_size,
            "angles": np.array([p.angles for p in state.particles]),
            "origins": np.array([p.origin for p in state.particles]),
        })
    return path


#: Iterations RELION had finished when the demo fixture was cut (see ORIGIN.md).
RECORDED_ITERATIONS = 10


def test_whole_run_follows_relion(demo_path) -> None:
    relion = relion_path(RECORDED_ITERATIONS)
    first = relion_model(1, 1)
    box = first.ori_size * first.pixel_size                                     # Å
    worst_fsc: list[float] = []
    mean_fsc: list[float] = []
    for i, (ours, theirs) in enumerate(zip(demo_path, relion), start=1):
        # The gold-standard FSC, shell by shell below RELION's resolution (and below the edge
        # of the smaller image size of the two).
        shells = min(min(ours["size"], theirs["size"]) // 2, int(round(box / theirs["resolution"])))
        gap = np.abs(ours["fsc"][1:shells] - theirs["fsc"][1:shells])
        worst_fsc.append(float(gap.max()))
        mean_fsc.append(float(gap.mean()))
        # Measured: mean difference at most 0.0038 per iteration (iteration 5), below 1e-4 in
        # iteration 1; the largest single shell 0.029 (iteration 5). With the projection's empty
        # pixels (the rest of the edge shell) scored against the reference instead of zero, as
        # before this was found: 0.010 and 0.082 (iteration 9, shell 12).
        assert gap.mean() < 0.006 and gap.max() < 0.05, (i, np.round(gap, 3))
        # Resolution within one Fourier shell of RELION's, every iteration (tomodash lost 2-3
        # shells in iterations 2-3 before issue 10) - unless an FSC a hair from 0.5 decides:
        # then some shell between the two resolutions has both FSCs within 0.03 of 0.5. In
        # iteration 10, shell 18 has 0.503 for tomodash and 0.498 for RELION, so tomodash goes
        # on to shell 19 (17.05 Å) where RELION stops at 17 (19.06 Å); iterations 1-9 agree
        # exactly.
        low, high = sorted(int(round(box / p["resolution"])) for p in (ours, theirs))
        if high - low > 1:
            between = np.arange(low + 1, high + 1)
            assert np.any((np.abs(ours["fsc"][between] - 0.5) < 0.03) & (np.abs(theirs["fsc"][between] - 0.5) < 0.03)), \
                (i, ours, theirs)
        # The same sampling (order, offsets; RELION stays global at 7.5 deg through iteration 10,
        # where tomodash stepped the order every iteration).
        assert ours["healpix_order"] == theirs["healpix_order"], (i, ours, theirs)
        assert ours["offset_range"] == pytest.approx(theirs["offset_range"], rel=0.01), i
        assert ours["offset_step"] == pytest.approx(theirs["offset_step"], rel=0.01), i
        assert not ours["local"] and not ours["joined"] and not ours["converged"]
        # Accuracies, on RELION's own 100 particles: measured within 2.5 % (iteration 6; 5 % with
        # the first 100 in file order; tomodash's 13.1 deg against RELION's 1.4 in iteration 2
        # before issue 10).
        assert ours["acc_rot"] == pytest.approx(theirs["acc_rot"], rel=0.05), (i, ours, theirs)
        assert ours["acc_trans"] == pytest.approx(theirs["acc_trans"], rel=0.05), (i, ours, theirs)
        # Hidden-variable changes that drive the sampling: measured within 5 %, except the
        # orientation change of iteration 7 (5.6 deg against RELION's 6.6).
        assert ours["changes"][0] == pytest.approx(theirs["changes"][0], rel=0.2, abs=0.5), (i, ours, theirs)
        assert ours["changes"][1] == pytest.approx(theirs["changes"][1], rel=0.15, abs=0.5), (i, ours, theirs)
    print("largest FSC difference per iteration:", np.round(worst_fsc, 3))
    print("mean FSC difference per iteration:", np.round(mean_fsc, 4))
    resolutions = [box / p["resolution"] for p in demo_path]
    # While the halves are separate the resolution never falls by more than a shell.
    assert all(b >= a - 1.0 for a, b in zip(resolutions, resolutions[1:])), resolutions


def test_whole_run_of_the_accelerated_code_follows_relion(tmp_path) -> None:
    """The demo's first ten iterations with ``--cpu`` against RELION's ``--cpu`` run of the
    same command (``refine_demo/Refine3D_cpu``). From iteration 2 on, the accelerated code
    centres each 2D stack's search on its old offset rounded to whole pixels (the CPU code
    does not round for tilt stacks), and that offset is relion_refine's own sum in pixels, whose
    last bits decide: half a pixel reached through a 16.2 Å step at 8.1 Å/px is
    0.49999999999999989 and rounds to 0."""
    ours_path = tomodash_path(tmp_path, cpu=True)
    folder = DEMO / "Refine3D_cpu"
    relion = relion_path(RECORDED_ITERATIONS, folder)
    first = ModelStarContents.read(folder / "run_it001_half1_model.star")
    box = first.ori_size * first.pixel_size                                     # Å
    same_resolutions = True
    for i, (ours, theirs) in enumerate(zip(ours_path, relion), start=1):
        shells = min(min(ours["size"], theirs["size"]) // 2, int(round(box / theirs["resolution"])))
        gap = np.abs(ours["fsc"][1:shells] - theirs["fsc"][1:shells])
        # Measured: mean gap at most 0.0058 and largest 0.031 (iteration 3). There, centring on
        # the unrounded offset (the CPU code's rule) gave 0.024 and 0.15, and rounding offsets
        # summed as tomodash did (half a pixel exactly) 0.019 and 0.11.
        assert gap.mean() < 0.008 and gap.max() < 0.04, (i, np.round(gap, 3))
        assert ours["healpix_order"] == theirs["healpix_order"], i
        assert ours["offset_range"] == pytest.approx(theirs["offset_range"], rel=1e-3), i
        assert ours["offset_step"] == pytest.approx(theirs["offset_step"], rel=1e-3), i
        # Accuracies on RELION's 100 particles: within 0.7 % (iteration 7).
        assert ours["acc_rot"] == pytest.approx(theirs["acc_rot"], rel=0.015), (i, ours["acc_rot"], theirs["acc_rot"])
        assert ours["acc_trans"] == pytest.approx(theirs["acc_trans"], rel=0.015), i
        # The resolution is RELION's while shell 17's FSC stays clear of 0.5 (iterations 1-6).
        # From iteration 7 it hovers at 0.47-0.52 in both runs, and RELION's resolution goes
        # 19.06, 20.25, 19.06, 19.06 Å where tomodash's stays at 20.25; the hidden-variable
        # changes are compared while the resolutions have been the same: orientations within
        # 1.9 %, offsets (whole fine steps, so coarser) within 4.2 %.
        low, high = sorted(int(round(box / p["resolution"])) for p in (ours, theirs))
        if high != low:
            same_resolutions = False
            assert high - low == 1 and abs(ours["fsc"][high] - 0.5) < 0.03 and abs(theirs["fsc"][high] - 0.5) < 0.03, \
                (i, ours["resolution"], theirs["resolution"])
        assert i >= 7 or same_resolutions, i
        if same_resolutions:
            assert ours["changes"][0] == pytest.approx(theirs["changes"][0], rel=0.03), (i, ours["changes"], theirs["changes"])
            assert ours["changes"][1] == pytest.approx(theirs["changes"][1], rel=0.06), (i, ours["changes"], theirs["changes"])
    # Iteration 2's poses (Pmax 0.48 on average, so many near-ties): 98.6 % of the orientations
    # and 98.9 % of the origins identical; 45 % and 35 % before the offsets were rounded.
    relion_two = starfile.read(folder / "run_it002_data.star")["particles"]
    angles = relion_two[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy()
    origins = relion_two[["rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]].to_numpy()
    assert np.mean(_angle_between(angles, ours_path[1]["angles"]) < 1e-3) > 0.97
    assert np.mean(np.linalg.norm(origins - ours_path[1]["origins"], axis=1) < 1e-3) > 0.97


def test_half_maps_as_reference(tmp_path) -> None:
    """--ref .../half1.mrc: each half set starts from its own map, RELION's FileName::getHalf
    (only the base name is changed); a missing partner is a clear error."""
    from processing.errors import InputError
    from processing.fourier.filters import initial_lowpass
    from processing.io import read_mrc, write_mrc

    reference = read_mrc(DEMO / "Reconstruct" / "merged.mrc")
    maps = tmp_path / "half1_dir"
    maps.mkdir()
    write_mrc(maps / "run_half1_class001.mrc", reference.data, reference.pixel_size)
    write_mrc(maps / "run_half2_class001.mrc", -reference.data, reference.pixel_size)
    (tmp_path / "run").mkdir()
    run, state = started_run(tmp_path / "run", reference=str(maps / "run_half2_class001.mrc"))
    assert reference_files(run.options) == [str(maps / "run_half1_class001.mrc"), str(maps / "run_half2_class001.mrc")]
    expected = initial_lowpass(reference.data.astype(np.float64), resolution=60.0, pixel_size=reference.pixel_size)
    np.testing.assert_allclose(state.halves[0].map, expected, atol=1e-5)
    np.testing.assert_allclose(state.halves[1].map, -expected, atol=1e-5)
    (maps / "run_half1_class001.mrc").unlink()
    with pytest.raises(InputError, match="other half set's map"):
        reference_files(run.options)


def test_optics_groups_with_other_box_and_pixel_size(tmp_path) -> None:
    """Two optics groups extracted differently (tests/data/refine_unkind/sizes2: 24 px at 12 Å
    and 20 px at 18 Å): the second group's images are mapped onto the model's grid as RELION
    does (image shells remapped onto the model's for σ², projections and insertions scaled by
    box·pixel, sizes per group), compared with RELION's iterations 0 and 1 on the same data.

    RELION scores such a group by two sets of rules: its CPU code, which made ``Refine3D/``,
    and its accelerated code (``--gpu``, ``--cpu``), whose CPU kernels (``--cpu``) made
    ``Refine3D_cpu/``. They differ in the box of the shift phases and in the projection's
    radius (``EStepContext.projected``, ``phase_box``); ``--cpu`` also back-projects fewer
    pixels and the accelerated code does not normalise the priors in its log-likelihoods
    (:mod:`processing.refine.relion_code`). tomodash follows the code its command line names,
    as relion_refine does; each run is compared with RELION's run of the same command."""
    case = Case(DATA / "refine_unkind" / "sizes2", "ex/particles.star", "rec/merged.mrc", 200.0)
    run, state = started_run(tmp_path, case)
    assert run.inputs.optics_boxes == [24, 20] and run.inputs.optics_pixel_sizes == [12.0, 18.0]
    for half in (1, 2):
        model = relion_model(0, half, case)
        # Iteration 0: the second group's ten images resampled to 12 Å and windowed to 24 px
        # before their spectra (RELION's resizeMap, which drops the padded corners): measured
        # 1e-5 for group 2 and 3e-4 for group 1 (whose average-image term now includes group
        # 2's images); without the corner rule shells 8-12 of group 2 were 1.8 times too large.
        for group in range(2):
            np.testing.assert_allclose(state.halves[half - 1].sigma2[group], model.sigma2_noise[group], rtol=1e-3)
    optics = starfile.read(case.relion / "run_it001_data.star")["particles"]["rlnOpticsGroup"].to_numpy()
    for code, folder in ((RelionCode.CPU, case.relion), (RelionCode.ALTCPU, case.root / "Refine3D_cpu")):
        (tmp_path / code.value).mkdir()
        run, state = started_run(tmp_path / code.value, case, cpu=code is RelionCode.ALTCPU)
        assert run.options.relion_code is code
        run.iterate(state, 1, cc=False, final=False)
        c = state.counters
        optimiser = OptimiserStarContents.read(folder / "run_it001_optimiser.star")
        assert 1.0 / c.current_resolution == pytest.approx(
            ModelStarContents.read(folder / "run_it001_half1_model.star").current_resolution)
        # Accuracies from the first 100 particles, in each one's own pixels: identical to RELION's.
        assert c.acc_rot == pytest.approx(optimiser.overall_accuracy_rotations, abs=1e-3)
        assert c.acc_trans == pytest.approx(optimiser.overall_accuracy_translations_angst, abs=1e-3)
        for half in (1, 2):
            model = ModelStarContents.read(folder / f"run_it001_half{half}_model.star")
            ours = state.halves[half - 1]
            # σ² of each group summed onto the model's shells (measured within 1e-3), the
            # per-tomogram scales and the offsets' prior width.
            for group in range(2):
                np.testing.assert_allclose(ours.sigma2[group], model.sigma2_noise[group], rtol=2e-3)
            np.testing.assert_allclose(ours.scales, model.group_scale_correction, atol=0.01)
            assert ours.sigma_offset == pytest.approx(model.sigma_offsets_angst, rel=0.01)
            # The maps of both codes, up to the edge shell 12 that only group 1 reaches: FSC
            # and σ²_ref of the CPU code measured within 0.006 and 0.5 % (the edge shell), of
            # --cpu within 1.1e-5 and 1e-5. Back-projecting every scored pixel in the --cpu run
            # (the CPU code's rule) gave FSCs 0.19 lower at shells 8-9 and 0.36 at shell 12 and
            # σ²_ref 0.2 times RELION's at shell 8; inserting only the image window's radius
            # instead of the model's current radius gave FSCs 0.1 off.
            n = run.inputs.n_shells
            np.testing.assert_allclose(ours.fsc[:n], model.gold_standard_fsc[:n], atol=0.02)
            np.testing.assert_allclose(ours.sigma2_ref[1:n], model.reference_sigma2[1:n], rtol=0.01)
        relion = starfile.read(folder / "run_it001_data.star")["particles"]
        difference, shift = _pose_differences(state, relion)
        pmax = np.abs(state.pmax - relion["rlnMaxValueProbDistribution"].to_numpy())
        # Every pose of both groups is RELION's, Pmax within 4e-6 (median, both groups, both
        # codes). Group 2 scored by the other code's rules matches 80 % of the orientations
        # and 97 % of the origins of either run; so did tomodash against the CPU run before
        # it followed either (phases by each image's box, no projection radius).
        assert np.all(difference < 1e-3) and np.all(shift < 1e-3), code
        assert np.median(pmax[optics == 1]) < 1e-4 and np.median(pmax[optics == 2]) < 1e-4, code
        # The same log-likelihood for every particle: largest |difference| 1.1e-3 and 1.3e-3
        # (groups 1 and 2) for the CPU code, 2.2e-4 and 2.0e-4 for --cpu. The --cpu run's
        # differ from the CPU code's by the priors' normalisation (9.38 for every particle; the
        # CPU code's rule put every one 9.38 above RELION's) and, for 11 of group 1's 35
        # particles, by the power of the pixels where the CTF² is below 1e-8, which the
        # accelerated code leaves out (scoring them, as the CPU code does, put those 0.02-1.66
        # below RELION's; one of them, at (2, 12), only with the CTF's Nyquist row at +12).
        log_likelihood = state.log_likelihood_particles - relion["rlnLogLikeliContribution"].to_numpy()
        assert np.abs(log_likelihood).max() < 2e-3, code


def test_first_iteration_of_the_accelerated_code_matches_relion(tmp_path) -> None:
    """The demo's iteration 1 with ``--cpu`` against RELION's run of the same command
    (``refine_demo/Refine3D_cpu``): the accelerated code's rules (unnormalised priors, the CTF
    floor in the log-likelihood, the CPU kernels' back-projection) at the demo's scale. Its
    back-projection leaves out the pixels on the circle |k| = size/2 that the CPU code inserts
    by the last bits of each image's matrix, so here the maps match to the edge shell."""
    case = CASES["demo"]
    folder = case.root / "Refine3D_cpu"
    run, state = started_run(tmp_path, case, cpu=True)
    run.iterate(state, 1, cc=False, final=False)
    c = state.counters
    optimiser = OptimiserStarContents.read(folder / "run_it001_optimiser.star")
    assert 1.0 / c.current_resolution == pytest.approx(
        ModelStarContents.read(folder / "run_it001_half1_model.star").current_resolution)
    assert c.acc_rot == pytest.approx(optimiser.overall_accuracy_rotations, rel=0.01)
    assert c.acc_trans == pytest.approx(optimiser.overall_accuracy_translations_angst, rel=0.01)
    relion = starfile.read(folder / "run_it001_data.star")["particles"]
    difference, shift = _pose_differences(state, relion)
    # Measured: every orientation, 99.6 % of the origins (as the CPU code's run).
    assert np.all(difference < 1e-3) and np.mean(shift < 1e-3) > 0.99
    # Log-likelihoods: median |difference| 0.11, largest 0.68 of ~1e4, no offset (median
    # signed -0.007): single-precision sums on both sides. With the CPU code's normalised priors
    # every one was 9.37 above.
    log_likelihood = state.log_likelihood_particles - relion["rlnLogLikeliContribution"].to_numpy()
    assert np.median(np.abs(log_likelihood)) < 0.2 and abs(np.median(log_likelihood)) < 0.05
    n = run.inputs.n_shells
    edge = c.current_size // 2
    for half in (1, 2):
        model = ModelStarContents.read(folder / f"run_it001_half{half}_model.star")
        ours = state.halves[half - 1]
        # Measured: FSC 4e-4 per shell, σ² 2.7e-4, σ²_ref 3.5e-5 up to and with the edge
        # shell (the CPU code's run: 0.005, 4e-4, and 6 % at the edge), τ² 0.12 %.
        np.testing.assert_allclose(ours.fsc[:n], model.gold_standard_fsc[:n], atol=2e-3)
        np.testing.assert_allclose(ours.sigma2[0], model.sigma2_noise[0], rtol=1e-3)
        np.testing.assert_allclose(ours.sigma2_ref[1:edge + 1], model.reference_sigma2[1:edge + 1], rtol=5e-4)
        np.testing.assert_allclose(ours.tau2[1:15], model.reference_tau2[1:15], rtol=5e-3)
        np.testing.assert_allclose(ours.scales, model.group_scale_correction, atol=2e-3)
        assert ours.sigma_offset == pytest.approx(model.sigma_offsets_angst, rel=1e-3)


def test_cpu_kernels_back_project_fewer_pixels_of_each_row() -> None:
    """relion_refine --cpu's back-projection of 2D images (backprojectRef3D) runs x over
    [0, int(sqrt(h² - y²))): the pixels at x = 12 of row 0 and x = 0 of row 12 (on the
    circle) and at x = 10 of row 5 (|k| = 11.2) are left out, though they are scored and the
    CPU code inserts them."""
    from processing.refine.frequencies import frequency_set

    def inserted(freq, x: int, y: int) -> bool:
        return bool(freq.inserted[(freq.kx == x) & (freq.ky == y)][0])

    every, trimmed = frequency_set(32, 24), frequency_set(32, 24, trim_rows=True)
    assert np.array_equal(every.flat, trimmed.flat) and np.array_equal(every.measured, trimmed.measured)
    for x, y in ((12, 0), (0, 12), (10, 5), (10, -5), (4, 11)):
        assert inserted(every, x, y) and not inserted(trimmed, x, y)
    for x, y in ((11, 0), (9, 5), (3, 11)):
        assert inserted(every, x, y) and inserted(trimmed, x, y)
    assert not (trimmed.inserted & ~every.inserted).any()


@pytest.fixture(scope="module")
def pseudo3d_case(test_dataset, tmp_path_factory) -> Case:
    """RELION's iterations 0 and 1 on 3D pseudo-subtomograms (tests/data/refine_unkind/pseudo3d):
    RELION refined relion_tomo_subtomo's volumes of the TEST dataset, which tomodash's
    extraction reproduces to 1e-6 (test_extract_relion.py), so the volumes are made here by
    tomodash and only RELION's STAR files and reference are stored."""
    from conftest import processing_command

    root = tmp_path_factory.mktemp("pseudo3d")
    processing_command(["extract", "--i", str(test_dataset / "optimisation_set.star"),
                        "--o", f"{root / 'ex'}/", "--b", "32", "--crop", "24", "--bin", "2", "--j", "1"])
    source = DATA / "refine_unkind" / "pseudo3d"
    for name in ("Refine3D", "rec"):
        (root / name).symlink_to(source / name)
    for name in ("tomograms.star", "tilt_series"):
        (root / name).symlink_to(test_dataset / name)
    return Case(root, "ex/particles.star", "rec/merged.mrc", 200.0)


def test_pseudo_subtomograms_follow_relion(pseudo3d_case, tmp_path) -> None:
    """3D data: RELION's projector and initial τ² drop the image-side factor N for volumes; its
    CPU path divides 1/σ² by the multiplicity once per call of the image precalculation (twice
    in pass 2 at an unchanged size, once left in the back-projection); CTF and multiplicity
    exist only within radius N/2; the initial noise reads the volumes before the subtomogram
    correction; back-projection skips the kz < 0 half of the kx = 0 plane."""
    case = pseudo3d_case
    run, state = started_run(tmp_path, case)
    assert run.inputs.is_3d
    for half in (1, 2):
        model = relion_model(0, half, case)
        # Initial noise from the masked volumes before the empty voxels are zeroed: measured
        # 3e-7 (1.7 % off at shells 2-3 when read after the correction).
        np.testing.assert_allclose(state.halves[half - 1].sigma2[0], model.sigma2_noise[0], rtol=1e-4)
        # τ² without the factor N² of 2D images (576 times too large before).
        np.testing.assert_allclose(state.halves[half - 1].tau2[1:7], model.reference_tau2[1:7], rtol=1e-3)
    run.iterate(state, 1, cc=False, final=False)
    relion = starfile.read(case.relion / "run_it001_data.star")["particles"]
    difference, shift = _pose_differences(state, relion)
    # Every pose is RELION's (14 % were with 1/(σ²M) in pass 2; 19 % with the 2D projector scale).
    assert np.all(difference < 1e-3) and np.all(shift < 1e-3)
    # Per-particle likelihood and Pmax: measured at most 2e-4 and 5e-7 apart.
    log_likelihood = state.log_likelihood_particles - relion["rlnLogLikeliContribution"].to_numpy()
    assert np.abs(log_likelihood).max() < 0.01
    np.testing.assert_allclose(state.pmax, relion["rlnMaxValueProbDistribution"].to_numpy(), rtol=1e-3, atol=1e-6)
    for half in (1, 2):
        model = relion_model(1, half, case)
        ours = state.halves[half - 1]
        # Measured: FSC 3e-5, σ² 4e-7, σ²_ref 2e-7, τ² 2e-4 (σ²_ref 0.2-0.8 times RELION's
        # before the back-projection kept 1/(σ²M)), scales 5e-7. σ² was 1e-3 too large while
        # the image power entered the noise sums with weight 1 instead of the significant
        # samples' Σw (0.999).
        np.testing.assert_allclose(ours.fsc[: run.inputs.n_shells], model.gold_standard_fsc[: run.inputs.n_shells], atol=0.005)
        np.testing.assert_allclose(ours.sigma2[0], model.sigma2_noise[0], rtol=1e-4)
        np.testing.assert_allclose(ours.sigma2_ref[1:13], model.reference_sigma2[1:13], rtol=2e-3)
        np.testing.assert_allclose(ours.tau2[1:12], model.reference_tau2[1:12], rtol=2e-3)
        np.testing.assert_allclose(ours.scales, model.group_scale_correction, atol=1e-3)
    # The half-1 map, greyscale included: RELION normalises the inverse transform of 3D data
    # without the factor N of images (24 times too faint before). Measured: 4e-5 of its std.
    from processing.io import read_mrc

    theirs = read_mrc(case.relion / "run_it001_half1_class001.mrc").data.astype(np.float64)
    ours = state.halves[0].map
    assert np.abs(ours - theirs).max() <= 1e-3 * theirs.std()
    # Iterations 2-5, where the offsets and the scale corrections first matter:
    # - relion_refine moves each volume by its offset rounded to whole pixels in real space
    #   (before the mask) and searches the translations around that rounded offset; the
    #   fraction is dropped. With the exact offset, as for 2D stacks, 20 % of the orientations
    #   and none of the origins were RELION's in iteration 2.
    # - CTF-premultiplied data are back-projected unscaled with weight s·CTF², not s·X with
    #   s²·CTF²: σ²_ref and τ² were 1-8 % off in iteration 2 (FSC 0.49 against RELION's 0.51
    #   at shell 11, so 28.8 Å where RELION reached 26.2 Å).
    for iteration in range(2, PSEUDO3D_ITERATIONS + 1):
        run.iterate(state, iteration, cc=False, final=False)
        relion = starfile.read(case.relion / f"run_it{iteration:03d}_data.star")["particles"]
        difference, shift = _pose_differences(state, relion)
        # Every pose is RELION's. Per particle, measured: Pmax within 0.2 % and the likelihood
        # within 0.008 (1.1 apart in iteration 2 with σ² 1e-3 off).
        assert np.all(difference < 1e-3) and np.all(shift < 1e-3), iteration
        np.testing.assert_allclose(state.pmax, relion["rlnMaxValueProbDistribution"].to_numpy(), rtol=0.01)
        log_likelihood = state.log_likelihood_particles - relion["rlnLogLikeliContribution"].to_numpy()
        assert np.abs(log_likelihood).max() < 0.05, iteration
        assert 1.0 / state.counters.current_resolution == pytest.approx(relion_model(iteration, 1, case)
                                                                        .current_resolution), iteration
        for half in (1, 2):
            model, ours = relion_model(iteration, half, case), state.halves[half - 1]
            # Measured: FSC within 4e-5 per shell, σ² 1e-5, τ² 4e-4.
            np.testing.assert_allclose(ours.fsc[: run.inputs.n_shells], model.gold_standard_fsc[: run.inputs.n_shells], atol=1e-3,
                                       err_msg=str(iteration))
            np.testing.assert_allclose(ours.sigma2[0], model.sigma2_noise[0], rtol=1e-4, err_msg=str(iteration))
            np.testing.assert_allclose(ours.tau2[1:12], model.reference_tau2[1:12], rtol=2e-3, err_msg=str(iteration))


#: RELION's iterations in the pseudo3d fixture (--auto_iter_max 5).
PSEUDO3D_ITERATIONS = 5
