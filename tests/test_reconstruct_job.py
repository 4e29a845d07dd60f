"""Reconstruct particle as a job on the TEST preset: outputs, MPI, validation."""
from __future__ import annotations

import sys

import mrcfile
import numpy as np
import pytest
import starfile

from conftest import run_cmd, venv_bin, with_random_subsets

FLAGS = ["--b", "48", "--crop", "32", "--bin", "2", "--sym", "C6", "--j", "1"]


@pytest.fixture(scope="module")
def halves_star(test_dataset, tmp_path_factory):
    return with_random_subsets(test_dataset / "particles_true.star",
                               tmp_path_factory.mktemp("rec") / "particles_halves.star")


def _reconstruct(test_dataset, star, out, *, mpi=1, extra=(), check=True):
    cmd = [venv_bin("tomodash"), "reconstruct", "--p", str(star), "--t", str(test_dataset / "tomograms.star"),
           "--o", f"{out}/", *FLAGS, *extra]
    if mpi > 1:
        cmd = [venv_bin("mpiexec"), "-n", str(mpi), *cmd]
    return run_cmd(cmd, check=check)


def test_reconstruct_outputs_and_mpi_agree(test_dataset, halves_star, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    _reconstruct(test_dataset, halves_star, one)
    proc = _reconstruct(test_dataset, halves_star, two, mpi=2)
    assert "on 2 process(es)" in proc.stdout
    for job in (one, two):
        assert (job / "RELION_JOB_EXIT_SUCCESS").exists()
        for name in ("half1.mrc", "half2.mrc", "merged.mrc"):
            with mrcfile.open(job / name) as mrc:
                assert mrc.data.shape == (32, 32, 32)
                assert float(mrc.voxel_size.x) == pytest.approx(12.0)
        fsc = starfile.read(job / "fsc.star")
        assert fsc["rlnFourierShellCorrelationUnmaskedMaps"].iloc[1] > 0.8
        opt = next(iter(starfile.read(job / "optimisation_set.star", always_dict=True).values()))
        assert str(opt["rlnTomoReferenceMap1File"]).endswith("half1.mrc")
        job_star = starfile.read(job / "job.star", always_dict=True)
        assert job_star["job"]["rlnJobTypeLabel"] == "relion.reconstructparticletomo"
    for name in ("half1.mrc", "half2.mrc", "merged.mrc"):
        with mrcfile.open(one / name) as a, mrcfile.open(two / name) as b:
            np.testing.assert_allclose(a.data, b.data, atol=1e-5 * float(np.abs(a.data).max()))


@pytest.mark.usefixtures("gpu_stand_in_commands")
def test_reconstruct_on_gpus_under_mpi_rehearsed_with_the_host_stand_in(test_dataset, halves_star, tmp_path):
    """``mpiexec -n 2 tomodash reconstruct --gpu 0:1`` with CuPy replaced in every process by the
    host stand-in (tests/host_cupy.py): each process on its device, the one-process CPU maps."""
    cpu, gpu = tmp_path / "cpu", tmp_path / "gpu"
    _reconstruct(test_dataset, halves_star, cpu)
    proc = _reconstruct(test_dataset, halves_star, gpu, mpi=2, extra=["--gpu", "0:1"])
    assert " + process 0 runs on GPU device 0" in proc.stdout and " + process 1 runs on GPU device 1" in proc.stdout
    for name in ("half1.mrc", "half2.mrc", "merged.mrc"):
        with mrcfile.open(cpu / name) as a, mrcfile.open(gpu / name) as b:
            # the array back-projection against numba's, summed over processes in another order
            np.testing.assert_allclose(b.data, a.data, atol=1e-5 * float(np.abs(a.data).max()))


def test_unknown_symmetry_fails_before_anything_is_written(test_dataset, halves_star, tmp_path):
    out = tmp_path / "Reconstruct" / "job009"
    cmd = [venv_bin("tomodash"), "reconstruct", "--p", str(halves_star), "--t", str(test_dataset / "tomograms.star"),
           "--o", f"{out}/", "--b", "48", "--sym", "Q5"]
    proc = run_cmd(cmd, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Symmetry:" in proc.stderr and "Q5" in proc.stderr
    assert not out.exists()


def test_job_dir_with_bad_job_star_gets_failure_marker(tmp_path):
    job = tmp_path / "Reconstruct" / "job010"
    job.mkdir(parents=True)
    (job / "job.star").write_text(
        "data_job\n_rlnJobTypeLabel relion.reconstructparticletomo\n_rlnJobIsContinue 0\n\n"
        "data_joboptions_values\nloop_\n_rlnJobOptionVariable\n_rlnJobOptionValue\n"
        "in_optimisation missing_optimisation_set.star\nbox_size 63\nnr_mpi 1\n\n")
    proc = run_cmd([sys.executable, "-m", "processing.jobs.reconstruct", "--job-dir", str(job)], check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (job / "RELION_JOB_EXIT_FAILURE").exists()
    err = (job / "run.err").read_text()
    assert "file does not exist: missing_optimisation_set.star" in err or "must be even" in err
    assert not (job / "merged.mrc").exists()
