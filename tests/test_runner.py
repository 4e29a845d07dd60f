"""The runner: out-of-process launch, status reconciliation, abort, continue (dummy job
``sleeper``), plus one real Extract job on the tiny simulated dataset."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fake_jobs"))
from sessions_testkit import SleeperParameters, child_pythonpath, register_sleeper, wait_for  # noqa: E402

from processing.errors import InputError  # noqa: E402
from processing.io.jobstar import JobStar  # noqa: E402
from processing.jobs.extract_params import ExtractParameters  # noqa: E402
from sessions import Session, create_demo_session, get_job_type  # noqa: E402
from sessions import runner  # noqa: E402
from processing.jobs.refine3d_params import continue_args as refine_continue_args  # noqa: E402
from sessions.procinfo import ProcessIdentity, identity_of, is_running  # noqa: E402

OPT = "Import/job001/optimisation_set.star"


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runner") / "session"
    create_demo_session(root, preset="test")
    return root


@pytest.fixture
def session(template, tmp_path, monkeypatch) -> Session:
    register_sleeper()
    monkeypatch.setenv("PYTHONPATH", child_pythonpath())
    dst = tmp_path / "session"
    shutil.copytree(template, dst, symlinks=True)
    return Session(dst)


def status(session: Session, name: str) -> str:
    return runner.reconcile(session, name)


def done(session: Session, name: str) -> str | None:
    """The final status once the job has ended (None while it runs)."""
    st = runner.reconcile(session, name)
    return None if st == "Running" else st


def test_command_lines():
    jt = get_job_type("extract")
    assert runner.build_command(jt, "Extract/job002", 1, python="py") == \
        ["py", "-m", "processing.jobs.extract", "--job-dir", "Extract/job002"]
    assert runner.build_command(jt, "Extract/job002", 3, python="py", mpiexec="mpx") == \
        ["mpx", "-n", "3", "py", "-m", "mpi4py", "-m", "processing.jobs.extract", "--job-dir", "Extract/job002"]
    env = runner.job_environment(SleeperParameters(nr_threads=6), base={"PMI_RANK": "1", "HOME": "/h"})
    assert env["OMP_NUM_THREADS"] == env["NUMBA_NUM_THREADS"] == "6" and "PMI_RANK" not in env
    assert env["HOME"] == "/h" and env["TOMODASH_USE_GPU"] == "0"


def test_process_identity_is_not_fooled_by_pid_reuse():
    me = identity_of(os.getpid())
    assert is_running(me) is True
    assert is_running(ProcessIdentity(me.pid, me.start_time + 1, me.host, me.boot_id)) is False
    assert is_running(ProcessIdentity(me.pid, me.start_time, "another-host", "")) is None


def test_job_succeeds_with_logs_record_and_markers(session):
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=0.5, nr_threads=3), alias="nap")
    assert info.status == "Running"
    record = runner.read_run_record(info.path)
    assert record.backend == "local" and record.identity.start_time > 0
    assert record.data["argv"][-2:] == ["--job-dir", "External/job002"]
    assert os.getpgid(record.identity.pid) == record.identity.pid if is_running(record.identity) else True
    assert wait_for(lambda: done(session, info.name), 30) == "Succeeded"
    assert (info.path / "result.txt").read_text() == "done\n"
    assert "threads 3" in (info.path / "run.out").read_text()
    assert "Executing new job" in (info.path / "note.txt").read_text()
    assert (info.path / "RELION_JOB_EXIT_SUCCESS").exists() and (info.path / "PIPELINER_JOB_EXIT_SUCCESS").exists()
    assert (session.root / ".Nodes/ProcessData/External/nap/result.txt").exists()
    assert (info.path / "default_pipeline.star").exists()


def test_job_reporting_failure_is_failed(session):
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=0.1, fail=True))
    assert wait_for(lambda: done(session, info.name), 30) == "Failed"
    assert "asked to fail" in runner.failure_reason(info.path)


def test_sigkill_shows_as_failed_with_reason(session):
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=60))
    pid = runner.read_run_record(info.path).identity.pid
    time.sleep(0.3)
    assert status(session, info.name) == "Running"
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: done(session, info.name), 10) == "Failed"
    reason = runner.failure_reason(info.path)
    assert "SIGKILL" in reason or "no longer running" in reason
    assert "tomodash:" in (info.path / "run.err").read_text()
    assert (info.path / "RELION_JOB_EXIT_FAILURE").exists()
    assert session.job(info.name).status == "Failed"


def test_vanished_process_seen_by_another_watcher_is_failed(session):
    """A second server (no Popen handle, only the record on disk) reaches the same verdict."""
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=60))
    record = runner.read_run_record(info.path)
    runner._CHILDREN.pop(str(info.path)).kill()
    time.sleep(0.2)
    assert wait_for(lambda: done(session, info.name), 10) == "Failed"
    assert str(record.identity.pid) in runner.failure_reason(info.path)


def test_abort_running_job(session):
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=60))
    time.sleep(0.5)
    start = time.monotonic()
    assert runner.abort(session, info.name, grace=20) == "Aborted"
    assert time.monotonic() - start < 5  # it honoured RELION_JOB_ABORT_NOW itself
    assert (info.path / "RELION_JOB_EXIT_ABORTED").exists()
    assert not is_running(runner.read_run_record(info.path).identity)
    with pytest.raises(InputError, match="not running"):
        runner.abort(session, info.name)


def test_abort_escalates_to_sigterm_and_sigkill(session):
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=60, ignore_abort=True, ignore_term=True))
    time.sleep(0.5)
    assert runner.abort(session, info.name, grace=0.5, term_grace=0.5) == "Aborted"
    assert not is_running(runner.read_run_record(info.path).identity)
    assert "SIGKILL" in runner.failure_reason(info.path)


def test_abort_without_waiting_uses_detached_helper(session):
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=60, ignore_abort=True))
    time.sleep(0.5)
    assert runner.abort(session, info.name, grace=0.3, term_grace=2, wait=False) == "Running"
    assert wait_for(lambda: session.job(info.name).status if session.job(info.name).status != "Running"
                    else None, 20) == "Aborted"


@pytest.mark.mpi
def test_mpi_job_and_abort_kill_the_whole_group(session):
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=60, nr_mpi=2, ignore_abort=True,
                                                                ignore_term=True))
    record = runner.read_run_record(info.path)
    assert Path(record.data["argv"][0]).name.startswith("mpiexec") and record.data["argv"][1:3] == ["-n", "2"]
    wait_for(lambda: (info.path / "run.out").read_text().count("sleeper pid") >= 2, 30)
    pids = [int(line.split()[2]) for line in (info.path / "run.out").read_text().splitlines()
            if line.startswith("sleeper pid")]
    assert runner.abort(session, info.name, grace=0.5, term_grace=1) == "Aborted"
    for pid in pids:
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or
                 Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z", 10)


def test_continue_relaunches_in_place(session):
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=60))
    time.sleep(0.3)
    with pytest.raises(InputError, match="still running"):
        runner.continue_job(session, info.name)
    runner.abort(session, info.name, grace=10)
    star = JobStar.read(info.path / "job.star")
    star.options["seconds"] = "0.2"
    star.write(info.path / "job.star")
    record = runner.continue_job(session, info.name)
    assert record.data["continue"] is True
    assert JobStar.read(info.path / "job.star").is_continue
    assert wait_for(lambda: done(session, info.name), 30) == "Succeeded"
    assert not (info.path / "RELION_JOB_EXIT_ABORTED").exists()
    assert "continue True" in (info.path / "run.out").read_text()
    assert len(session.jobs()) == 2  # same job, same directory


def test_refine_continue_hook_points_at_last_iteration(tmp_path):
    for it in (0, 1, 2):
        (tmp_path / f"run_it{it:03d}_optimiser.star").touch()
    assert refine_continue_args(tmp_path, "Refine3D/job004/") == {"fn_cont": "Refine3D/job004/run_it002_optimiser.star"}
    assert refine_continue_args(tmp_path / "nothing", "Refine3D/job004/") == {}


def test_launch_failure_marks_failed(session, monkeypatch):
    monkeypatch.setattr(runner, "find_mpiexec", lambda: "/nonexistent/mpiexec")
    info = session.create_job("sleeper", SleeperParameters(seconds=1, nr_mpi=2))
    with pytest.raises(OSError):
        runner.launch(session, info.name)
    assert session.job(info.name).status == "Failed"
    assert "could not start" in runner.failure_reason(info.path)


def test_real_extract_job_through_the_runner(session):
    params = ExtractParameters(in_optimisation=OPT, binning=2, box_size=64, crop_size=48)
    info = runner.run_job(session, "extract", params, alias="bin2")
    assert wait_for(lambda: done(session, info.name), 300, 0.5) == "Succeeded", \
        (info.path / "run.err").read_text()
    assert (info.path / "optimisation_set.star").exists() and (info.path / "particles.star").exists()
    assert (session.root / ".Nodes/TomoOptimisationSet/Extract/bin2/optimisation_set.star").exists()


def test_cli_session_run_jobs_abort_continue(tmp_path, monkeypatch, capsys):
    from dashboard.cli import main

    register_sleeper()
    monkeypatch.setenv("PYTHONPATH", child_pythonpath())
    root = tmp_path / "cli"
    assert main(["session", "new", str(root), "--demo-preset", "test"]) == 0
    assert main(["run", "extract", "--session", str(root), "--preset", "demo", "--set",
                 f"in_optimisation={OPT}", "--set", "box_size=64", "--alias", "demo3", "--wait"]) == 0
    out = capsys.readouterr()
    assert "Extract/job002/: Succeeded" in out.out and "WARNING: preset 'demo-extract'" in out.err
    assert main(["run", "sleeper", "--session", str(root), "--set", "seconds=60"]) == 0
    assert main(["abort", str(root / "External/job003"), "--grace", "10"]) == 0
    assert "External/job003/: Aborted" in capsys.readouterr().out
    assert main(["continue", "External/job003", "--session", str(root)]) == 0
    assert main(["abort", str(root / "External/job003")]) == 0
    capsys.readouterr()
    assert main(["jobs", str(root), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [j["status"] for j in listed] == ["Succeeded", "Succeeded", "Aborted"]
    assert main(["jobs", str(root)]) == 0
    table = capsys.readouterr().out
    assert "Extract/demo3/" in table and "Aborted" in table and "Succeeded" in table
    assert main(["run", "extract", "--session", str(root), "--set", "in_optimisation=nope.star"]) == 2
    assert not (root / "Extract/job004").exists()
    assert main(["run", "extract", "--session", str(root), "--set", "bogus=1"]) == 2
