"""3D classification (relion_refine without --auto_refine) against RELION 5's own run.

The fixture (tests/data/class3d_relion, see its ORIGIN.md) is RELION 5's classification of the
TEST data with 30 % planted decoys (picks on empty membrane), K = 2, six iterations, the tomo
Class3D GUI's command. The same data are made here (simulation, Extract and Reconstruct are
deterministic) and classified by ``tomodash refine`` with the same command.

* From RELION's own iteration-2 files (``--continue``), tomodash's next two iterations are
  RELION's: the same class for every particle, class distributions within 0.005, the same
  <Pmax>, resolution and data-versus-prior ratios. Given the same model, the E-step (the class
  as one more hidden variable, no class prior under orientation priors) and the M-step (τ² from
  each reference's power, the average CTF² of premultiplied data, pdf_class) are RELION's, and
  so is each class's accuracy estimate.
* From scratch: iteration 1 (cross-correlation, class 1 only) and the seed iteration 2 (each
  particle one random class: glibc ``srand(seed + j) rand() % K`` in the visiting order) give
  RELION's class of every particle and its class distribution, and so do iterations 3 and 4
  (measured: every particle's class, distributions within 4e-4, noise spectra within 0.14 %);
  iteration 1's maps, of the cross-correlation iteration's hard assignments, have an FSC above
  0.9 against RELION's at every shell.
* The run from scratch is made under MPI (leader + 2 ranks sharing all particles), as RELION's
  was; the continuation is one process with two threads.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import starfile

from processing.fourier.fsc import fsc
from processing.io import OptimisationSet, read_mrc
from processing.simulate import simulate_dataset
from processing.simulate.presets import TEST

from conftest import run_cmd, venv_bin, with_random_subsets

RELION = Path(__file__).parent / "data" / "class3d_relion"
K = 2
pytestmark = pytest.mark.slow


def class_args(out: str, iterations: int = 4) -> list[str]:
    """The command of the fixture (RELION's tomo Class3D GUI)."""
    return [
        venv_bin("tomodash"), "refine", "--o", f"{out}/run", "--ios", "ex/optimisation_set.star",
        "--ref", "rec/merged.mrc", "--firstiter_cc", "--trust_ref_size", "--ini_high", "60",
        "--dont_combine_weights_via_disc", "--pool", "4", "--pad", "2", "--ctf", "--iter", str(iterations), "--tau2_fudge", "4",
        "--particle_diameter", "200", "--K", str(K), "--flatten_solvent", "--zero_mask", "--oversampling", "1",
        "--healpix_order", "2", "--offset_range", "4", "--offset_step", "2", "--sym", "C6", "--norm", "--scale",
        "--sigma_tilt", "10", "--j", "1", "--random_seed", "1",
    ]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The fixture's project directory: TEST data (2 tomograms, 30 % decoys) with random
    halves, extracted at bin 2 (32 px, cropped to 24) and reconstructed (C6)."""
    root = tmp_path_factory.mktemp("class3d")
    simulate_dataset(dataclasses.replace(TEST, n_tomograms=2, decoy_fraction=0.3), root)
    with_random_subsets(root / "particles.star", root / "particles.star")
    OptimisationSet(particles="particles.star", tomograms="tomograms.star").write(root / "optimisation_set.star")
    tomodash = venv_bin("tomodash")
    run_cmd([tomodash, "extract", "--i", "optimisation_set.star", "--o", "ex/", "--b", "32", "--crop", "24",
             "--bin", "2", "--stack2d", "--float16", "--j", "2"], cwd=root)
    run_cmd([tomodash, "reconstruct", "--i", "ex/optimisation_set.star", "--o", "rec/", "--b", "32", "--crop", "24",
             "--bin", "2", "--sym", "C6", "--j", "2"], cwd=root)
    return root


@pytest.fixture(scope="module")
def ours(project) -> Path:
    """tomodash's classification of the fixture's data, four iterations, under MPI as RELION's
    (``mpiexec -n 3``: the leader and two ranks sharing all particles)."""
    run_cmd([venv_bin("mpiexec"), "-n", "3", *class_args("ours")], cwd=project, timeout=600)
    return project / "ours"


def _model(run: Path, iteration: int) -> dict:
    return starfile.read(run / f"run_it{iteration:03d}_model.star", always_dict=True)


def _classes(run: Path, iteration: int) -> np.ndarray:
    table = starfile.read(run / f"run_it{iteration:03d}_data.star", always_dict=True)["particles"]
    return table.set_index("rlnTomoParticleName")["rlnClassNumber"].astype(int)


def test_writes_relions_classification_files(ours: Path, project: Path) -> None:
    expected = {line.split("\t")[0] for line in (RELION / "files.txt").read_text().splitlines()
                if line.startswith("run_it00") and int(line[6:9]) <= 4 and not line.endswith("bild")
                and "_angdist" not in line}
    written = {p.name for p in ours.glob("run_it*")}
    assert expected <= written, sorted(expected - written)
    assert not list(ours.glob("*half*")) and not (ours / "run_model.star").exists()
    model = _model(ours, 4)
    assert int(model["model_general"]["rlnNrClasses"]) == K
    assert float(model["model_general"]["rlnTau2FudgeFactor"]) == 4.0
    classes = model["model_classes"]
    assert len(classes) == K and classes["rlnClassDistribution"].sum() == pytest.approx(1.0)
    assert list(classes["rlnReferenceImage"]) == [f"ours/run_it004_class{k:03d}.mrc" for k in (1, 2)]
    for k in range(1, K + 1):
        assert f"model_class_{k}" in model and f"model_pdf_orient_class_{k}" in model
    optimiser = starfile.read(ours / "run_it004_optimiser.star")
    assert int(optimiser["rlnDoAutoRefine"]) == 0 and int(optimiser["rlnNumberOfIterations"]) == 4
    assert int(optimiser["rlnDoSplitRandomHalves"]) == 0
    assert set(_classes(ours, 4).unique()) <= {1, 2}
    # Every table and label RELION writes, but the per-shell orientability contribution of its
    # accuracy estimate (not computed here).
    for kind in ("model", "data", "optimiser", "sampling"):
        theirs, mine = _labels(RELION / f"run_it004_{kind}.star"), _labels(ours / f"run_it004_{kind}.star")
        assert theirs - mine <= {"_rlnSpectralOrientabilityContribution"}, (kind, theirs - mine)


def _labels(path: Path) -> set[str]:
    return {line.split()[0] for line in path.read_text().splitlines() if line.startswith(("_rln", "data_"))}


def test_first_four_iterations_are_relions(ours: Path) -> None:
    # Measured in iterations 1-4: every particle's class, distributions within 4e-4 (float16
    # stacks scored in single precision against RELION's double), noise spectra within 0.14 %.
    for iteration in range(1, 5):
        theirs, mine = _classes(RELION, iteration), _classes(ours, iteration)
        assert (mine.loc[theirs.index] == theirs).all(), iteration
        a, b = _model(ours, iteration)["model_general"], _model(RELION, iteration)["model_general"]
        assert float(a["rlnCurrentResolution"]) == pytest.approx(float(b["rlnCurrentResolution"]), rel=1e-6)
        np.testing.assert_allclose(_model(ours, iteration)["model_classes"]["rlnClassDistribution"],
                                   _model(RELION, iteration)["model_classes"]["rlnClassDistribution"], atol=2e-3)
        noise_ours = _model(ours, iteration)["model_optics_group_1"]["rlnSigma2Noise"].to_numpy()
        noise_relion = _model(RELION, iteration)["model_optics_group_1"]["rlnSigma2Noise"].to_numpy()
        np.testing.assert_allclose(noise_ours, noise_relion, rtol=5e-3)
    # The cross-correlation iteration's likelihoods: each particle's best correlation averaged
    # over its images, and their sum over all images in the model (tomodash wrote 0).
    theirs, mine = (starfile.read(d / "run_it001_data.star")["particles"] for d in (RELION, ours))
    same = theirs["rlnTomoParticleName"].to_numpy() == mine["rlnTomoParticleName"].to_numpy()
    assert same.all()
    np.testing.assert_allclose(np.median(mine["rlnLogLikeliContribution"]),
                               np.median(theirs["rlnLogLikeliContribution"]), rtol=0.01)
    assert float(_model(ours, 1)["model_general"]["rlnLogLikelihood"]) == pytest.approx(
        float(_model(RELION, 1)["model_general"]["rlnLogLikelihood"]), rel=0.01)
    # Iteration 1's maps (the cross-correlation iteration's hard assignments)
    for k in (1, 2):
        curve = fsc(read_mrc(ours / f"run_it001_class{k:03d}.mrc").data,
                    read_mrc(RELION / f"run_it001_class{k:03d}.mrc").data)
        assert curve[1:12].min() > 0.9, curve


#: the project directory of RELION's run (ORIGIN.md), which its optimiser files name absolutely
RELION_PROJECT = "/tmp/c3/decoy/"


def copy_relion_run(files, destination: Path, project: Path) -> None:
    """RELION's run files copied into ``destination``, the absolute paths of RELION's project
    directory in them (``rlnTomoTomogramsFile``) pointing at ``project`` instead."""
    destination.mkdir(exist_ok=True)
    for path in files:
        text = path.read_text() if path.suffix == ".star" else None
        if text is not None and RELION_PROJECT in text:
            (destination / path.name).write_text(text.replace(RELION_PROJECT, f"{project}/"))
        else:
            shutil.copy(path, destination / path.name)


def test_continuing_relions_iteration_2_gives_relions_next_iterations(project: Path) -> None:
    """RELION's own iteration-2 files continued by tomodash for two iterations."""
    copy_relion_run(RELION.glob("run_it002_*"), project / "class", project)
    run_cmd([venv_bin("tomodash"), "refine", "--o", "cont/run", "--continue", "class/run_it002_optimiser.star",
             "--j", "2"], cwd=project, timeout=600)
    cont = project / "cont"
    for iteration in (3, 4):
        theirs, mine = _classes(RELION, iteration), _classes(cont, iteration)
        assert (mine.loc[theirs.index] == theirs).mean() >= 0.97, iteration
        a, b = _model(cont, iteration), _model(RELION, iteration)
        np.testing.assert_allclose(a["model_classes"]["rlnClassDistribution"],
                                   b["model_classes"]["rlnClassDistribution"], atol=0.005)
        assert float(a["model_general"]["rlnAveragePmax"]) == pytest.approx(
            float(b["model_general"]["rlnAveragePmax"]), rel=0.02)
        assert float(a["model_general"]["rlnCurrentResolution"]) == pytest.approx(
            float(b["model_general"]["rlnCurrentResolution"]), rel=1e-6)
        # each class's accuracy estimate (relion_refine's per class, not one for all)
        for label in ("rlnAccuracyRotations", "rlnAccuracyTranslationsAngst"):
            np.testing.assert_allclose(a["model_classes"][label], b["model_classes"][label], rtol=0.01)
        for k in (1, 2):
            ssnr_a = a[f"model_class_{k}"]["rlnSsnrMap"].to_numpy()[:8]
            ssnr_b = b[f"model_class_{k}"]["rlnSsnrMap"].to_numpy()[:8]
            np.testing.assert_allclose(ssnr_a, ssnr_b, rtol=0.05)


def test_classification_without_alignment_keeps_every_pose(project: Path) -> None:
    """``--skip_align`` ("Perform image alignment? No"): only the class is searched."""
    args = [a for a in class_args("noalign", iterations=2) if a not in ("--firstiter_cc",)] + ["--skip_align"]
    run_cmd(args, cwd=project, timeout=600)
    before = starfile.read(project / "ex" / "particles.star", always_dict=True)["particles"].set_index(
        "rlnTomoParticleName")
    after = starfile.read(project / "noalign" / "run_it002_data.star", always_dict=True)["particles"].set_index(
        "rlnTomoParticleName")
    for label in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst"):
        np.testing.assert_allclose(after[label].to_numpy(), before.loc[after.index, label].to_numpy(), atol=1e-6)
    assert set(after["rlnClassNumber"]) <= {1, 2} and after["rlnNrOfSignificantSamples"].max() <= K
    classes = _model(project / "noalign", 2)["model_classes"]
    assert classes["rlnClassDistribution"].sum() == pytest.approx(1.0)
    assert int(starfile.read(project / "noalign" / "run_it002_optimiser.star")["rlnDoSkipAlign"]) == 1


def test_fast_subsets_follow_relions_schedule() -> None:
    from processing.refine.classify import fast_subset_size

    # 1500 particles per class up to iteration 5, 4500 to 10, max(4500, 30 %) to 15, then all.
    sizes = [fast_subset_size(i, n_classes=2, n_particles=30_000) for i in (1, 5, 6, 10, 11, 15, 16)]
    assert sizes == [3000, 3000, 9000, 9000, 9000, 9000, 30_000]
    assert fast_subset_size(12, n_classes=2, n_particles=100_000) == 30_000
    assert fast_subset_size(1, n_classes=4, n_particles=5000) == 5000      # a subset no smaller than the data


def test_continuing_relions_pseudo_subtomogram_iteration(project: Path) -> None:
    """The same classification of 3D pseudo-subtomograms (the unkind case: CTF² and multiplicity
    volumes, the multiplicity-weighted average CTF²): RELION's iteration 2 continued by
    tomodash gives RELION's iteration 3."""
    run_cmd([venv_bin("tomodash"), "extract", "--i", "optimisation_set.star", "--o", "ex3d/", "--b", "32",
             "--crop", "24", "--bin", "2", "--j", "2"], cwd=project)
    copy_relion_run([p for p in (RELION / "pseudo3d").iterdir() if p.is_file()], project / "r3d", project)
    run_cmd([venv_bin("tomodash"), "refine", "--o", "cont3d/run", "--continue", "r3d/run_it002_optimiser.star",
             "--iter", "3", "--j", "2"], cwd=project, timeout=600)
    theirs = starfile.read(RELION / "pseudo3d" / "run_it003_data.star", always_dict=True)["particles"]
    mine = _classes(project / "cont3d", 3)
    theirs = theirs.set_index("rlnTomoParticleName")["rlnClassNumber"].astype(int)
    assert (mine.loc[theirs.index] == theirs).mean() >= 0.97
    a = _model(project / "cont3d", 3)
    b = starfile.read(RELION / "pseudo3d" / "run_it003_model.star", always_dict=True)
    np.testing.assert_allclose(a["model_classes"]["rlnClassDistribution"], b["model_classes"]["rlnClassDistribution"],
                               atol=0.005)
    assert float(a["model_general"]["rlnAveragePmax"]) == pytest.approx(float(b["model_general"]["rlnAveragePmax"]),
                                                                        rel=0.02)
    for k in (1, 2):
        np.testing.assert_allclose(a[f"model_class_{k}"]["rlnSsnrMap"].to_numpy()[:8],
                                   b[f"model_class_{k}"]["rlnSsnrMap"].to_numpy()[:8], rtol=0.02)
