"""The runner: out-of-process launch, status reconciliation, abort, continue (dummy job
``sleeper``), plus one real Extract job on the tiny simulated dataset."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fake_jobs"))
from sessions_testkit import SleeperParameters, child_pythonpath, register_sleeper, wait_for  # noqa: E402
from conftest import fill_disk  # noqa: E402

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
    assert env["HOME"] == "/h" and not any(k.startswith("TOMODASH_") and "GPU" in k for k in env)


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


# ---- issue 12: races, disk full ----------------------------------------------------------------

_CONTINUE_AT = """
import sys, time
sys.path.insert(0, {fake!r})
from sessions_testkit import register_sleeper
register_sleeper()
from dashboard.cli import main
import sessions.runner  # imported by the command itself; here so that both start equally ready
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))  # both start at the same moment
print("ready", flush=True)
sys.exit(main(sys.argv[2:]))
"""


def _sleeper_processes(session: Session, job_dir_name: str) -> list[int]:
    """Live processes running the sleeper job ``job_dir_name`` of ``session`` (from /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if b"sleeper" in argv and job_dir_name.encode() in argv and state not in ("Z", "X") \
                and cwd == str(session.root):
            pids.append(int(entry))
    return pids


def _exit_markers(job_dir: Path) -> list[str]:
    return sorted(p.name for p in job_dir.glob("*_JOB_EXIT_*"))


@pytest.mark.parametrize("queued", [False, True], ids=["same-moment", "queued-behind-the-lock"])
def test_two_concurrent_continues_start_one_run(session, queued):
    """Two ``tomodash continue`` of one job at the same moment (real processes): exactly one
    starts a run, the other is refused (exit status 2, one clear line); the job ends with one
    exit marker. ``queued``: the session lock is held while both start, so both reach it
    before either has launched anything (the worst interleaving, made certain)."""
    from sessions.lock import SessionLock

    fake = str(Path(__file__).parent / "fake_jobs")
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=60))
    name = info.name.rstrip("/")
    assert runner.abort(session, info.name, grace=20) == "Aborted"
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    holder = SessionLock(session.root)
    if queued:
        holder.acquire("test: hold while both continues start")
    at = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, "-c", _CONTINUE_AT.format(fake=fake), str(at),
                               "continue", name, "--session", str(session.root)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    if queued:
        assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
        time.sleep(1.5)  # both are waiting for the lock by now
        assert all(p.poll() is None for p in procs)
        holder.release()
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    refused = next(err for code, _, err in results if code == 2)
    assert "still running" in refused and "not continuing it a second time" in refused, refused
    assert len(refused.strip().splitlines()) == 1 and "Traceback" not in refused
    time.sleep(1.0)
    record = runner.read_run_record(info.path)
    assert _sleeper_processes(session, name) == [record.identity.pid]
    assert session.job(info.name).status == "Running"
    assert (info.path / "run.out").read_text().count("continue True") == 1
    # Abort reaches the one run; exactly one exit marker (of each convention) remains.
    assert runner.abort(session, info.name, grace=20) == "Aborted"
    assert _sleeper_processes(session, name) == []
    assert _exit_markers(info.path) == ["PIPELINER_JOB_EXIT_ABORTED", "RELION_JOB_EXIT_ABORTED"]


def test_second_continue_in_process_is_refused(session):
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=60))
    runner.abort(session, info.name, grace=20)
    runner.continue_job(session, info.name)
    with pytest.raises(runner.JobAlreadyRunning, match="still running .pid \\d+"):
        runner.continue_job(session, info.name)
    with pytest.raises(runner.JobAlreadyRunning):
        runner.launch(session, info.name)
    assert len(_sleeper_processes(session, info.name.rstrip("/"))) == 1
    assert runner.abort(session, info.name, grace=20) == "Aborted"


def test_final_status_is_decided_again_under_the_lock(session, monkeypatch):
    """A reconciler that judged an old run over must not record it over a run that a continue
    started meanwhile: the verdict is confirmed under the lock."""
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=60))
    real = runner._verdict
    looks = []

    def stale_first_look(job_dir):
        looks.append(job_dir)
        return ("Failed", "stale verdict", True) if len(looks) == 1 else real(job_dir)

    monkeypatch.setattr(runner, "_verdict", stale_first_look)
    assert runner.reconcile(session, info.name) == "Running"
    assert len(looks) == 2 and session.job(info.name).status == "Running"
    assert _exit_markers(info.path) == [] and "stale verdict" not in (info.path / "run.err").read_text()
    monkeypatch.undo()
    assert runner.abort(session, info.name, grace=20) == "Aborted"


def test_job_failing_for_lack_of_space_says_so_once(template, small_disk, monkeypatch):
    """A real Extract job on a full disk: run.err says "job failed: no space left on device
    (writing <file>)" once, without a traceback; reconciliation shows that line as the reason
    (not "killed or crashed"), and repeats nothing when asked again."""
    monkeypatch.setenv("PYTHONPATH", child_pythonpath())
    root = small_disk / "session"
    shutil.copytree(template, root, symlinks=True)
    session = Session(root)
    fill_disk(small_disk, leave=160 * 1024)  # room for the job's small files and two or three stacks
    params = ExtractParameters(in_optimisation=OPT, binning=1, box_size=64, crop_size=48)
    info = runner.run_job(session, "extract", params)
    assert wait_for(lambda: done(session, info.name), 120, 0.3) == "Failed"
    reason = runner.failure_reason(info.path)
    assert re.fullmatch(r"job failed: no space left on device \(writing Extract/job002/Subtomograms/\S+\.mrcs\)",
                        reason), reason
    err = (info.path / "run.err").read_text()
    assert err.count("no space left on device") == 1 and reason in err, err
    assert "Traceback" not in err and "killed or crashed" not in err
    assert _exit_markers(info.path) == ["PIPELINER_JOB_EXIT_FAILED", "RELION_JOB_EXIT_FAILURE"]
    assert not [p for p in info.path.rglob("*.tmp")]  # the failed write left no temporary
    for _ in range(3):
        assert runner.reconcile(session, info.name) == "Failed"
        runner.refresh(session)
    assert (info.path / "run.err").read_text() == err


def test_reconcile_on_a_full_disk_records_the_reason_once(small_disk, monkeypatch):
    """A job that died while the disk was full: reconciliation cannot record it (the lock takes
    the last page) and says so by an error each time, without appending its reason to run.err
    again and again; once there is room it records it, once."""
    register_sleeper()
    monkeypatch.setenv("PYTHONPATH", child_pythonpath())
    session = Session.create(small_disk / "session")
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=60))
    wait_for(lambda: "sleeper pid" in (info.path / "run.out").read_text(), 30)
    with open(info.path / "run.err", "a") as err:
        err.write("some earlier warning\n")  # run.err has room left in its last page
    reserve = small_disk / "reserve"
    reserve.write_bytes(b"\0" * 4096)
    filler = fill_disk(small_disk)
    reserve.unlink()  # one page free: enough for the lock, not for the run record as well
    os.kill(runner.read_run_record(info.path).identity.pid, signal.SIGKILL)
    time.sleep(0.3)
    before = (info.path / "run.err").read_text()
    for _ in range(3):
        with pytest.raises(OSError, match="no space left on device"):
            runner.reconcile(session, info.name)
        assert not (session.root / ".relion_lock").exists()
    assert (info.path / "run.err").read_text() == before
    filler.unlink()
    assert runner.reconcile(session, info.name) == "Failed"
    assert runner.reconcile(session, info.name) == "Failed"
    after = (info.path / "run.err").read_text()
    assert after.count("tomodash:") == 1 and after.startswith(before)
    assert "SIGKILL" in runner.failure_reason(info.path) or "no longer running" in runner.failure_reason(info.path)


def test_processes_of_a_run_that_outlive_its_launcher_keep_it_running_and_are_aborted(session):
    """MPI ranks live in process groups of their own: when mpiexec is SIGKILLed they may go on
    (and write a second, different exit marker). A process carrying the run's id keeps the job
    Running, and abort stops it too."""
    info = runner.run_job(session, "sleeper", SleeperParameters(seconds=60))
    record = runner.read_run_record(info.path)
    run_id = record.data["run_id"]
    # A "rank" of this run in a session of its own (as hydra starts them).
    rank = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True,
                            env=dict(os.environ, **{runner.RUN_ID_ENV: run_id}))
    try:
        wait_for(lambda: runner._run_processes(record), 10)
        assert rank.pid in runner._run_processes(record)
        os.kill(record.identity.pid, signal.SIGKILL)  # the launcher dies, the rank does not
        runner._CHILDREN[str(info.path)].wait()
        time.sleep(0.2)
        assert runner.reconcile(session, info.name) == "Running"
        assert runner.abort(session, info.name, grace=0.5, term_grace=5) == "Aborted"
        assert rank.wait(timeout=10) is not None
        assert not runner._run_processes(record)
    finally:
        if rank.poll() is None:
            rank.kill()
            rank.wait()
