"""Extract subtomos as a job on the TEST preset: outputs, STAR columns, float16, MPI, restart."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile

from processing.io import ParticleSet, TomogramSet, read_star, write_star

from conftest import run_cmd, venv_bin

BOX, CROP, BIN = 48, 32, 2
BASE_OPTICS = ["rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage", "rlnSphericalAberration",
               "rlnAmplitudeContrast", "rlnTomoTiltSeriesPixelSize"]
EXTRACT_OPTICS = ["rlnCtfDataAreCtfPremultiplied", "rlnImageDimensionality", "rlnTomoSubtomogramBinning",
                  "rlnImagePixelSize", "rlnImageSize"]


def extract(dataset: Path, out: Path, *flags: str, mpi: int = 1, check: bool = True, particles: Path | None = None):
    inputs = (["--p", str(particles), "--t", str(dataset / "tomograms.star")] if particles
              else ["--i", str(dataset / "optimisation_set.star")])
    cmd = [venv_bin("tomodash"), "extract", *inputs, "--o", f"{out}/", "--b", str(BOX), "--crop", str(CROP),
           "--bin", str(BIN), "--j", "1", *flags]
    if mpi > 1:
        cmd = [venv_bin("mpiexec"), "-n", str(mpi), *cmd]
    return run_cmd(cmd, check=check)


@pytest.fixture(scope="module")
def shifted_particles(test_dataset, tmp_path_factory) -> Path:
    """The TEST particles with non-zero origins, to check re-centring."""
    blocks = read_star(test_dataset / "particles.star")
    table = blocks["particles"]
    rng = np.random.default_rng(5)
    for axis in "XYZ":
        table[f"rlnOrigin{axis}Angst"] = rng.uniform(-20, 20, len(table)).round(3)
    out = tmp_path_factory.mktemp("shifted") / "particles.star"
    write_star(out, blocks)
    return out


@pytest.fixture(scope="module")
def stacks32(test_dataset, shifted_particles, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("x") / "Extract" / "job002"
    extract(test_dataset, out, "--stack2d", particles=shifted_particles)
    return out


@pytest.fixture(scope="module")
def stacks16(test_dataset, shifted_particles, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("x") / "Extract" / "job003"
    extract(test_dataset, out, "--stack2d", "--float16", particles=shifted_particles)
    return out


@pytest.fixture(scope="module")
def volumes(test_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("x") / "Extract" / "job004"
    extract(test_dataset, out, "--float16")
    return out


def test_2d_outputs_open_with_starfile_and_mrcfile(stacks16, test_dataset):
    assert (stacks16 / "RELION_JOB_EXIT_SUCCESS").exists()
    blocks = starfile.read(stacks16 / "particles.star", always_dict=True)
    assert list(blocks) == ["general", "optics", "particles"]
    particles = blocks["particles"]
    for name, frames in zip(particles["rlnImageName"], particles["rlnTomoVisibleFrames"]):
        with mrcfile.open(name, permissive=False) as mrc:
            assert mrc.header.mode == 12 and mrc.data.dtype == np.float16
            n_visible = sum(int(v) for v in frames.strip("[]").split(","))
            assert mrc.data.shape == (n_visible, CROP, CROP)
            assert float(mrc.voxel_size.x) == pytest.approx(BIN * 6.0)
            assert np.isfinite(mrc.data).all() and mrc.data.std() > 0
    opt = starfile.read(stacks16 / "optimisation_set.star", always_dict=True)
    table = next(iter(opt.values()))
    assert Path(str(table["rlnTomoParticlesFile"])).resolve() == (stacks16 / "particles.star").resolve()


def test_2d_star_columns_are_relions(stacks32, shifted_particles, test_dataset):
    blocks = read_star(stacks32 / "particles.star")
    assert blocks["general"] == {"rlnTomoSubTomosAre2DStacks": 1} or \
        int(blocks["general"]["rlnTomoSubTomosAre2DStacks"]) == 1
    optics = blocks["optics"]
    assert list(optics.columns) == BASE_OPTICS + EXTRACT_OPTICS
    row = optics.iloc[0]
    assert int(row["rlnCtfDataAreCtfPremultiplied"]) == 1 and int(row["rlnImageDimensionality"]) == 2
    assert float(row["rlnTomoSubtomogramBinning"]) == BIN
    assert float(row["rlnImagePixelSize"]) == pytest.approx(BIN * 6.0)
    assert int(row["rlnImageSize"]) == CROP
    source = read_star(shifted_particles)["particles"]
    table = blocks["particles"]
    assert list(table.columns) == list(source.columns) + ["rlnTomoVisibleFrames", "rlnImageName"]
    assert not {"rlnCoordinateX", "rlnCtfImage"} & set(table.columns)
    # origins zeroed, coordinates re-centred onto the origin-corrected position
    for axis in "XYZ":
        assert np.all(table[f"rlnOrigin{axis}Angst"].astype(float) == 0.0)
    tomograms = TomogramSet.read(test_dataset / "tomograms.star")
    before = ParticleSet.read(shifted_particles, tomograms).positions(tomograms, apply_origins=True)
    after = ParticleSet.read(stacks32 / "particles.star", tomograms).positions(tomograms, apply_origins=True)
    kept = [list(source["rlnTomoParticleName"]).index(n) for n in table["rlnTomoParticleName"]]
    np.testing.assert_allclose(after, before[kept], atol=1e-4)
    assert str(table["rlnImageName"].iloc[0]).endswith("Subtomograms/TS_01/1_stack2d.mrcs")
    text = (stacks32 / "particles.star").read_text()
    assert "[1,1,1,1,1,1,1,1,1,1,1]" in text      # RELION's vector token: no spaces


def test_float16_stacks_equal_float32_within_precision(stacks16, stacks32):
    names = sorted((stacks32 / "Subtomograms").rglob("*_stack2d.mrcs"))
    assert names
    for path32 in names:
        path16 = stacks16 / path32.relative_to(stacks32)
        with mrcfile.open(path32) as a, mrcfile.open(path16) as b:
            x32, x16 = a.data.astype(np.float64), b.data.astype(np.float64)
            assert int(a.header.mode) == 2 and int(b.header.mode) == 12
        # float16: 11-bit significand -> relative spacing 2^-10, rounding error <= half of it
        np.testing.assert_array_less(np.abs(x16 - x32), 2.0**-11 * np.abs(x32) + 2.0**-24 + 1e-12)


def test_3d_pseudo_subtomograms_and_star(volumes):
    blocks = read_star(volumes / "particles.star")
    assert int(blocks["general"]["rlnTomoSubTomosAre2DStacks"]) == 0
    optics = blocks["optics"]
    assert list(optics.columns) == BASE_OPTICS + EXTRACT_OPTICS
    assert int(optics["rlnImageDimensionality"].iloc[0]) == 3
    assert int(optics["rlnCtfDataAreCtfPremultiplied"].iloc[0]) == 1
    table = blocks["particles"]
    assert list(table.columns)[-2:] == ["rlnImageName", "rlnCtfImage"]
    assert "rlnTomoVisibleFrames" not in table.columns
    data, weights = table["rlnImageName"].iloc[0], table["rlnCtfImage"].iloc[0]
    assert data.endswith("_data.mrc") and weights.endswith("_weights.mrc")
    with mrcfile.open(data) as mrc:
        assert mrc.data.shape == (CROP, CROP, CROP)
        assert float(mrc.voxel_size.x) == pytest.approx(BIN * 6.0)
    with mrcfile.open(weights) as mrc:
        w = mrc.data.astype(np.float64)
        assert w.shape == (2 * CROP, CROP, CROP // 2 + 1)
        assert float(mrc.voxel_size.x) == pytest.approx(1.0 / (BIN * 6.0), rel=1e-3)
    ctf2, multi = w[:CROP], w[CROP:]
    assert ctf2.min() >= 0 and multi.min() >= 0
    assert multi[0, 0, 0] > 1 and ctf2[0, 1, 1] > 0     # tilts overlap at low frequency


def test_mpi_two_processes_give_identical_output(test_dataset, tmp_path):
    one = tmp_path / "one"
    two = tmp_path / "two"
    extract(test_dataset, one, "--stack2d")
    proc = extract(test_dataset, two, "--stack2d", mpi=2)
    assert "on 2 process(es)" in proc.stdout
    assert (two / "RELION_JOB_EXIT_SUCCESS").exists()
    text1 = (one / "particles.star").read_text().replace(f"{one}/", "OUT/")
    text2 = (two / "particles.star").read_text().replace(f"{two}/", "OUT/")
    assert text1 == text2
    files1 = sorted(p.relative_to(one) for p in (one / "Subtomograms").rglob("*.mrcs"))
    files2 = sorted(p.relative_to(two) for p in (two / "Subtomograms").rglob("*.mrcs"))
    assert files1 == files2 and len({f.parts[1] for f in files1}) == 2   # both tomograms
    for rel in files1:
        with mrcfile.open(one / rel) as a, mrcfile.open(two / rel) as b:
            np.testing.assert_array_equal(a.data, b.data)


def test_only_do_unfinished_skips_complete_particles(test_dataset, tmp_path):
    out = tmp_path / "Extract" / "job005"
    extract(test_dataset, out, "--stack2d")
    stacks = sorted((out / "Subtomograms").rglob("*.mrcs"))
    n = len(stacks)
    removed = stacks[:3]
    for path in removed:
        path.unlink()
    (stacks[3]).write_bytes(b"truncated")          # an incomplete file is redone too
    mtimes = {p: os.stat(p).st_mtime_ns for p in stacks[4:]}
    proc = extract(test_dataset, out, "--stack2d", "--only_do_unfinished")
    assert f"Extracted {n} particles" in proc.stdout
    assert f"4 written, {n - 4} already complete" in proc.stdout
    assert all(p.exists() for p in stacks)
    assert {p: os.stat(p).st_mtime_ns for p in stacks[4:]} == mtimes
    assert (out / "RELION_JOB_EXIT_SUCCESS").exists()
    assert "--only_do_unfinished" in (out / "note.txt").read_text()


def test_job_dir_entry_point_reruns_the_saved_job(stacks32, tmp_path):
    """job.star written by the command line -> `python -m processing.jobs.extract` -> same output."""
    job = tmp_path / "Extract" / "job006"
    job.mkdir(parents=True)
    star = (stacks32 / "job.star").read_text()
    (job / "job.star").write_text(star)
    run_cmd([venv_bin("mpiexec"), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "processing.jobs.extract",
             "--job-dir", str(job)])
    assert (job / "RELION_JOB_EXIT_SUCCESS").exists()
    assert "processing.jobs.extract --job-dir" in (job / "note.txt").read_text()
    a = (stacks32 / "particles.star").read_text().replace(f"{stacks32}/", "OUT/")
    b = (job / "particles.star").read_text().replace(f"{job}/", "OUT/")
    assert a == b


def test_bad_input_in_job_dir_fails_cleanly(test_dataset, tmp_path):
    from processing.io import JobStar
    from processing.jobs.extract_params import ExtractParameters

    job = tmp_path / "Extract" / "job007"
    job.mkdir(parents=True)
    params = ExtractParameters(in_optimisation=str(test_dataset / "optimisation_set.star"),
                               box_size=48, crop_size=64)
    JobStar(ExtractParameters.job_type_label, options=params.to_job_options()).write(job / "job.star")
    proc = run_cmd([sys.executable, "-m", "processing.jobs.extract", "--job-dir", str(job)], check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert (job / "RELION_JOB_EXIT_FAILURE").exists()
    assert not (job / "RELION_JOB_EXIT_SUCCESS").exists()
    err = (job / "run.err").read_text()
    assert "Cropped box size" in err and "cannot be larger than the box size" in err
    assert sorted(p.name for p in job.iterdir()) == ["RELION_JOB_EXIT_FAILURE", "job.star", "run.err"]


def test_bad_input_on_command_line_creates_nothing(test_dataset, tmp_path):
    out = tmp_path / "Extract" / "job008"
    proc = run_cmd([venv_bin("tomodash"), "extract", "--i", str(test_dataset / "nope.star"), "--o", f"{out}/",
                    "--b", "48"], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "file does not exist" in proc.stderr and "nope.star" in proc.stderr
    assert not out.exists()
