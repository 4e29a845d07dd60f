"""3D auto-refine on simulated data: convergence against the truth, RELION's output files, MPI,
abort (SIGKILL + continue: tests/test_kill_matrix.py, test_refine_demo.py). The 3D
pseudo-subtomogram path is followed iteration by iteration against RELION's own run in
test_refine_relion.py::test_pseudo_subtomograms_follow_relion.

Small runs use the TEST preset (two tilt series, extracted at bin 2: 12 Å pixels, 24-px box);
the demo-scale convergence test is in test_refine_demo.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import starfile

from processing.fourier.fsc import fsc
from processing.io import read_mrc
from processing.io.refine_star import ModelStarContents, SamplingStarContents
from processing.simulate import render_truth

from conftest import in_iteration, run_cmd, start_process, venv_bin, wait_for, with_random_subsets

BIN, BOX, CROP = 2, 32, 24
#: RELION 5's run of this job (see its ORIGIN.md).
RELION_TEST_RUN = Path(__file__).parent / "data" / "refine_test_relion"


def refine_args(work: Path, out: str, *extra: str) -> list[str]:
    """The command RELION's GUI builds for this job (tutorial settings scaled to the TEST data)."""
    return [
        venv_bin("tomodash"), "refine", "--o", f"{out}/run", "--auto_refine", "--split_random_halves",
        "--ios", str(work / "ex" / "optimisation_set.star"), "--ref", str(work / "rec" / "merged.mrc"),
        "--trust_ref_size", "--ini_high", "60", "--dont_combine_weights_via_disc", "--pool", "4", "--pad", "2",
        "--ctf", "--particle_diameter", "200", "--flatten_solvent", "--zero_mask", "--oversampling", "1",
        "--healpix_order", "2", "--auto_local_healpix_order", "4", "--offset_range", "4", "--offset_step", "2",
        "--sym", "C6", "--low_resol_join_halves", "40", "--norm", "--scale", "--sigma_tilt", "10",
        "--random_seed", "1", *extra,
    ]


@pytest.fixture(scope="module")
def small_inputs(test_dataset, tmp_path_factory) -> Path:
    """TEST particles with random halves, extracted at bin 2 and reconstructed (C6) from the
    initial poses: the reference of the refinement."""
    work = tmp_path_factory.mktemp("refine_small")
    with_random_subsets(test_dataset / "particles.star", work / "particles.star")
    from processing.io import OptimisationSet

    OptimisationSet(particles=str(work / "particles.star"),
                    tomograms=str(test_dataset / "tomograms.star")).write(work / "input_set.star")
    run_cmd([venv_bin("tomodash"), "extract", "--i", str(work / "input_set.star"), "--o", str(work / "ex") + "/",
             "--b", str(BOX), "--crop", str(CROP), "--bin", str(BIN), "--stack2d", "--float16", "--j", "2"])
    run_cmd([venv_bin("tomodash"), "reconstruct", "--i", str(work / "ex" / "optimisation_set.star"),
             "--o", str(work / "rec") + "/", "--b", str(BOX), "--crop", str(CROP), "--bin", str(BIN),
             "--sym", "C6", "--j", "2"])
    return work


@pytest.fixture(scope="module")
def small_run(small_inputs) -> Path:
    """One complete single-process refinement (runs to convergence by itself)."""
    run_cmd(refine_args(small_inputs, str(small_inputs / "single"), "--j", "2"), timeout=900)
    return small_inputs / "single"


def test_converges_and_writes_relion_outputs(small_run: Path, small_inputs: Path, test_dataset: Path) -> None:
    assert (small_run / "RELION_JOB_EXIT_SUCCESS").exists()
    for name in ("run_model.star", "run_class001.mrc", "run_half1_class001_unfil.mrc", "run_half2_class001_unfil.mrc",
                 "run_data.star", "run_optimiser.star", "run_sampling.star", "run_optimisation_set.star",
                 "run_it000_half1_model.star", "run_it001_half2_model.star", "run_it001_half1_class001.mrc",
                 "run_it001_optimiser.star", "run_it001_sampling.star", "run_it001_data.star",
                 "run_it001_optimisation_set.star", "progress.json", "note.txt"):
        assert (small_run / name).exists(), name
    model = starfile.read(small_run / "run_model.star")
    assert list(model) == ["model_general", "model_classes", "model_class_1", "model_groups",
                           "model_optics_group_1", "model_pdf_orient_class_1"]
    for label in ("rlnSpectralIndex", "rlnResolution", "rlnAngstromResolution", "rlnSsnrMap", "rlnGoldStandardFsc",
                  "rlnFourierCompleteness", "rlnReferenceSigma2", "rlnReferenceTau2"):
        assert label in model["model_class_1"].columns, label
    for label in ("rlnReferenceImage", "rlnAccuracyRotations", "rlnAccuracyTranslationsAngst", "rlnEstimatedResolution"):
        assert label in model["model_classes"].columns, label
    data = starfile.read(small_run / "run_data.star")
    assert list(data) == ["general", "optics", "particles"]
    for label in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst",
                  "rlnClassNumber", "rlnLogLikeliContribution", "rlnMaxValueProbDistribution",
                  "rlnNrOfSignificantSamples", "rlnNormCorrection", "rlnGroupNumber", "rlnRandomSubset"):
        assert label in data["particles"].columns, label
    optimiser = starfile.read(small_run / "run_optimiser.star")
    assert int(optimiser["rlnHasConverged"]) == 1
    progress = json.loads((small_run / "progress.json").read_text())
    assert {"iteration", "phase", "particles_done", "particles_total"} <= set(progress)
    # Science, first against RELION 5's own run of this job on the same inputs
    # (tests/data/refine_test_relion: the same stacks and reference, which tomodash's Extract
    # and Reconstruct make equal to RELION's; the same halves, --random_seed 1 and so the same
    # glibc perturbations). The two runs take the same path to convergence: resolution, HEALPix
    # order and perturbation of every iteration identical; the offset range of the local
    # searches within 3 % (measured 1.3 % and 2.2 %); both converge in iteration 13 (before
    # Extract and Reconstruct matched RELION, the runs parted after iteration 9 and converged 3
    # iterations apart).
    relion = RELION_TEST_RUN
    relion_iterations = len(list(relion.glob("run_it*_optimiser.star")))        # 0..12: final 13
    for iteration in range(1, relion_iterations):
        theirs = ModelStarContents.read(relion / f"run_it{iteration:03d}_half1_model.star")
        ours = ModelStarContents.read(small_run / f"run_it{iteration:03d}_half1_model.star")
        assert ours.current_resolution == pytest.approx(theirs.current_resolution, rel=1e-3), iteration
        theirs_sampling = SamplingStarContents.read(relion / f"run_it{iteration:03d}_sampling.star")
        ours_sampling = SamplingStarContents.read(small_run / f"run_it{iteration:03d}_sampling.star")
        assert ours_sampling.healpix_order == theirs_sampling.healpix_order, iteration
        assert ours_sampling.offset_range == pytest.approx(theirs_sampling.offset_range, rel=0.03), iteration
        assert ours_sampling.perturb_instance == pytest.approx(theirs_sampling.perturb_instance, abs=1e-5), iteration
    final_theirs = ModelStarContents.read(relion / "run_model.star").current_resolution
    final_ours = ModelStarContents.read(small_run / "run_model.star").current_resolution
    box = CROP * BIN * 6.0
    assert abs(box / final_ours - box / final_theirs) <= 1.0 + 1e-6
    # The final iteration is the one after the last run_itNNN file (its files say -1, as RELION's).
    assert int(starfile.read(small_run / "run_optimiser.star")["rlnCurrentIteration"]) == -1
    our_iterations = len(list(small_run.glob("run_it*_optimiser.star")))
    assert abs(our_iterations - relion_iterations) <= 1, (our_iterations, relion_iterations)
    # Then against the simulator's truth: RELION itself oscillates between 8 and 19 degrees
    # median error on these 12-px particles (its offset prior pins the translations), so the
    # check is only that the converged map is closer to the truth than the starting reference
    # (measured +0.08 in FSC at shells 6-9).
    truth = render_truth(test_dataset, CROP, BIN * 6.0)
    curve = fsc(read_mrc(small_run / "run_class001.mrc").data, truth)
    start = fsc(read_mrc(small_inputs / "rec" / "merged.mrc").data, truth)
    assert curve[6:10].mean() > start[6:10].mean() + 0.04


def test_mpi_run_matches_single_process(small_inputs: Path, small_run: Path) -> None:
    """Leader + one rank per half (mpiexec -n 3): the same maps as one process, iteration by iteration."""
    out = small_inputs / "mpi"
    run_cmd([venv_bin("mpiexec"), "-n", "3", *refine_args(small_inputs, str(out), "--j", "1", "--auto_iter_max", "3")],
            timeout=900)
    for half in (1, 2):
        a = read_mrc(out / f"run_it003_half{half}_class001.mrc").data
        b = read_mrc(small_run / f"run_it003_half{half}_class001.mrc").data
        curve = fsc(a, b)
        # 0.95 up to 0.8 x Nyquist: the runs share seeds and differ only in summation order.
        assert curve[1:int(0.8 * CROP / 2) + 1].min() > 0.95, curve


@pytest.mark.usefixtures("gpu_stand_in_commands")
def test_gpu_run_under_mpi_rehearsed_with_the_host_stand_in(small_inputs: Path, small_run: Path) -> None:
    """``mpiexec -n 3 tomodash refine --gpu 0:1`` with CuPy replaced in every process by the host
    stand-in (tests/host_cupy.py: numpy held to CuPy's rules on host and device arrays, two
    devices, the gather kernel's own code compiled for the host): each working rank takes its
    device, the leader none, and iteration 1 gives the single-process CPU run's maps."""
    out = small_inputs / "gpu_rehearsal"
    proc = run_cmd([venv_bin("mpiexec"), "-n", "3", *refine_args(small_inputs, str(out), "--j", "2", "--gpu", "0:1",
                                                                 "--auto_iter_max", "1")], timeout=900)
    assert " + process 1 runs on GPU device 0" in proc.stdout and " + process 2 runs on GPU device 1" in proc.stdout
    assert " + process 0 runs on GPU" not in proc.stdout
    for half in (1, 2):
        ours = read_mrc(out / f"run_it001_half{half}_class001.mrc").data
        cpu = read_mrc(small_run / f"run_it001_half{half}_class001.mrc").data
        # the array kernels' float32 slices against numba's, sums in another order: measured 3e-7
        np.testing.assert_allclose(ours, cpu, atol=1e-5 * np.abs(cpu).max())
    assert ModelStarContents.read(out / "run_it001_half1_model.star").current_resolution == \
        ModelStarContents.read(small_run / "run_it001_half1_model.star").current_resolution


def test_combine_through_disc_under_mpi(small_inputs: Path, small_run: Path) -> None:
    out = small_inputs / "disc"
    args = [a for a in refine_args(small_inputs, str(out), "--j", "1", "--auto_iter_max", "1")
            if a != "--dont_combine_weights_via_disc"]
    run_cmd([venv_bin("mpiexec"), "-n", "3", *args], timeout=600)
    assert not list(out.glob(".combine_rank*"))
    curve = fsc(read_mrc(out / "run_it001_half1_class001.mrc").data,
                read_mrc(small_run / "run_it001_half1_class001.mrc").data)
    assert curve[1:10].min() > 0.95


def test_abort_request_stops_at_next_batch(small_inputs: Path) -> None:
    out = small_inputs / "aborted"
    proc = start_process(refine_args(small_inputs, str(out), "--j", "1", "--pool", "1"), small_inputs / "aborted.log")
    wait_for(lambda: in_iteration(out, 1), 600, proc)
    (out / "RELION_JOB_ABORT_NOW").touch()
    proc.wait(timeout=120)
    assert (out / "RELION_JOB_EXIT_ABORTED").exists()
    assert not (out / "RELION_JOB_ABORT_NOW").exists()
    assert not (out / "run_it001_optimiser.star").exists()


def test_bad_input_is_a_clear_error(small_inputs: Path) -> None:
    out = small_inputs / "bad"
    args = refine_args(small_inputs, str(out))
    args[args.index("--ref") + 1] = str(small_inputs / "missing.mrc")
    proc = run_cmd(args, check=False)
    assert proc.returncode != 0
    assert "missing.mrc" in proc.stderr and "Traceback" not in proc.stderr


def test_solvent_corrected_fsc_uses_the_mask(small_inputs: Path, small_run: Path) -> None:
    """"Use solvent-flattened FSCs" with a reference mask: the FSC that drives tau² and the
    resolution is the mask-corrected one (phase randomisation), not the unmasked curve."""
    from processing.fourier.masks import soft_sphere_mask
    from processing.io import write_mrc

    mask = small_inputs / "mask.mrc"
    write_mrc(mask, soft_sphere_mask(CROP, radius=7.0, edge_width=3.0).astype(np.float32), BIN * 6.0)
    out = small_inputs / "solvent"
    run_cmd([*refine_args(small_inputs, str(out), "--j", "2", "--auto_iter_max", "2"),
             "--solvent_mask", str(mask), "--solvent_correct_fsc"], timeout=600)
    masked = starfile.read(out / "run_it002_half1_model.star")["model_class_1"]["rlnGoldStandardFsc"].to_numpy()
    plain = starfile.read(small_run / "run_it002_half1_model.star")["model_class_1"]["rlnGoldStandardFsc"].to_numpy()
    assert np.abs(masked - plain)[1:].max() > 0.02
    assert float(starfile.read(out / "run_it002_optimiser.star")["rlnDoSolventFscCorrection"]) == 1
