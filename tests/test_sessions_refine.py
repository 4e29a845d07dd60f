"""A real 3D auto-refine through a session: launched by the runner under MPI, aborted within a
particle batch (marked Aborted), continued from its last completed iteration to the end."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import wait_for_job
from processing.jobs.extract_params import ExtractParameters
from processing.jobs.reconstruct_params import ReconstructParameters
from processing.jobs.refine3d_params import Refine3DParameters
from sessions import create_demo_session, runner


def _progress(job_dir: Path) -> dict:
    try:
        return json.loads((job_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.fixture(scope="module")
def session_with_a_reference(tmp_path_factory):
    """A TEST session with its particles extracted at bin 2 and reconstructed (C6): (session,
    Extract job, Reconstruct job). The tests add their own refinements to it."""
    session = create_demo_session(tmp_path_factory.mktemp("refine_session") / "s", preset="test")
    ex = runner.run_job(session, "extract", ExtractParameters(
        in_optimisation="Import/job001/optimisation_set.star", binning=2, box_size=32, crop_size=24))
    assert wait_for_job(session, ex.name, 900) == "Succeeded"
    rec = runner.run_job(session, "reconstruct", ReconstructParameters(
        in_optimisation=f"{ex.name}optimisation_set.star", binning=2, box_size=32, crop_size=24, sym_name="C6"))
    assert wait_for_job(session, rec.name, 900) == "Succeeded"
    return session, ex, rec


def test_refine_abort_then_continue(session_with_a_reference) -> None:
    session, ex, rec = session_with_a_reference
    params = Refine3DParameters(
        in_optimisation=f"{ex.name}optimisation_set.star", fn_ref=f"{rec.name}merged.mrc",
        ref_correct_greyscale=True, ini_high=60, sym_name="C6", particle_diameter=200, sigma_tilt=10,
        offset_range=4, nr_pool=1, nr_mpi=3, nr_threads=1)
    job = runner.run_job(session, "refine3d", params, alias="small_refine")
    job_dir = session.root / job.name
    end = time.time() + 600
    while time.time() < end and not (job_dir / "run_it001_optimiser.star").exists():
        time.sleep(0.2)
    while time.time() < end and not (_progress(job_dir).get("iteration") == 2
                                     and _progress(job_dir).get("particles_done", 0) > 0):
        time.sleep(0.2)
    # Abort within a batch: the job stops by itself (no escalation needed) and is marked aborted.
    started = time.time()
    status = runner.abort(session, job.name, grace=60, term_grace=5)
    assert status == "Aborted"
    assert time.time() - started < 60
    assert (job_dir / "RELION_JOB_EXIT_ABORTED").exists()
    assert not (job_dir / "run_it002_optimiser.star").exists()
    # Continue: resumes after iteration 1 (fn_cont = run_it001_optimiser.star) and converges.
    runner.continue_job(session, job.name)
    assert wait_for_job(session, job.name, 900) == "Succeeded"
    assert (job_dir / "run_class001.mrc").exists() and (job_dir / "run_model.star").exists()
    note = (job_dir / "note.txt").read_text()
    assert "--continue" in note and "run_it001_optimiser.star" in note
    # run.out tells the story: aborted, then continued; the job keeps its first start time
    out = (job_dir / "run.out").read_text()
    assert out.index("=== aborted") < out.index("=== continued") < out.index("Auto-refine converged")
    assert "(the previous run aborted)" in out
    record = runner.read_run_record(job_dir).data
    assert record["continue"] and record["first_launched_at"] < record["launched_at"] - 1
    # The dashboard's headline of the finished job is the converged model's resolution, with the
    # iterations of both runs (the aborted one's first iteration and the continuation's).
    from dashboard.viewmodels.job import job_headline
    from dashboard.watcher import SessionWatcher
    from processing.io.refine_star import ModelStarContents

    watcher = SessionWatcher(session.root, interval=0.0)
    headline = job_headline(watcher, watcher.job(job.name))
    final = ModelStarContents.read(job_dir / "run_model.star")
    assert headline is not None and headline.value == pytest.approx(final.current_resolution)
    assert headline.title == f"{final.current_resolution:.2f} Å"
    assert headline.warning == "" or headline.warning.startswith("Nyquist")
    iterations = len(list(job_dir.glob("run_it[0-9][0-9][0-9]_half1_model.star")))
    assert headline.facts[0].startswith(f"{iterations} iterations")


@pytest.mark.usefixtures("gpu_stand_in_commands")
def test_a_gpu_refinement_launched_from_a_session_runs_on_its_devices(session_with_a_reference) -> None:
    """"Use GPU acceleration? Yes" and "Which GPUs to use: 0:1", launched by the runner as the
    dashboard launches it, with CuPy replaced by the host stand-in of tests/host_cupy.py in this
    process (the launch checks the machine's devices) and in the job's processes: each working
    rank runs on its device and the refinement ends."""
    import host_cupy

    session, ex, rec = session_with_a_reference
    params = Refine3DParameters(
        in_optimisation=f"{ex.name}optimisation_set.star", fn_ref=f"{rec.name}merged.mrc",
        ref_correct_greyscale=True, ini_high=60, sym_name="C6", particle_diameter=200, sigma_tilt=10,
        offset_range=4, nr_pool=1, nr_mpi=3, nr_threads=1, use_gpu=True, gpu_ids="0:1",
        other_args="--auto_iter_max 2")
    with host_cupy.installed(devices=2):
        job = runner.run_job(session, "refine3d", params, alias="gpu_refine")
    assert wait_for_job(session, job.name, 900) == "Succeeded"
    job_dir = session.root / job.name
    assert "--gpu 0:1" in (job_dir / "note.txt").read_text()
    out = (job_dir / "run.out").read_text()
    lines = out.splitlines()
    assert " + process 1 runs on GPU device 0" in lines and " + process 2 runs on GPU device 1" in lines, out
    assert " + process 0 runs on GPU" not in out
    assert "Stopped at --auto_iter_max" in out and (job_dir / "run_it002_half2_class001.mrc").exists()
