"""Queue submission: RELION's template placeholders (unit tests) and a real one-node SLURM
cluster started on this machine by tests/slurm/start_slurm.sh (submit, watch, cancel)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fake_jobs"))
from sessions_testkit import SleeperParameters, child_pythonpath, register_sleeper, wait_for  # noqa: E402

from processing.errors import InputError  # noqa: E402
from sessions import Session, create_demo_session  # noqa: E402
from sessions import runner, slurm  # noqa: E402

START_SCRIPT = Path(__file__).parent / "slurm" / "start_slurm.sh"


# ---- template (no SLURM needed) ---------------------------------------------------------------

def test_template_placeholders_as_relion():
    template = ("#!/bin/bash\n#$ -pe XXXqueueXXX XXXnodesXXX\n#SBATCH -n XXXmpinodesXXX -c XXXthreadsXXX\n"
                "#cores XXXcoresXXX dedicated XXXdedicatedXXX name XXXnameXXX\n"
                "#SBATCH -o XXXoutfileXXX -e XXXerrfileXXX\n#SBATCH XXXextra1XXX XXXextra2XXX XXXextra3XXX\n"
                "srun XXXcommandXXX\n")
    values = slurm.submission_values(
        slurm.QueueSettings(nr_mpi=3, nr_threads=8, min_dedicated=4, queuename="gpu", extras={1: "--mem=8G", 2: ""}),
        "Refine3D/job004/")
    text = slurm.render_template(template, values, [["mpiexec", "-n", "3", "python", "-m", "x", "--job-dir",
                                                     "Refine3D/job004 with space"]])
    assert "#$ -pe gpu 6" in text  # nodes = ceil(24 / 4)
    assert "#SBATCH -n 3 -c 8" in text and "#cores 24 dedicated 4 name Refine3D/job004/" in text
    assert "-o Refine3D/job004/run.out -e Refine3D/job004/run.err" in text
    assert "#SBATCH --mem=8G  XXXextra3XXX" in text  # unknown extras stay literal, as in RELION
    assert "srun mpiexec -n 3 python -m x --job-dir 'Refine3D/job004 with space'" in text
    assert text.endswith("\n\n")


@pytest.mark.parametrize("bad", ["debug\n#SBATCH --uid=0", "q; rm -rf /", "$(reboot)", "`id`"])
def test_unsafe_template_values_are_refused(bad):
    with pytest.raises(InputError):
        slurm.submission_values(slurm.QueueSettings(queuename=bad), "Extract/job002/")


# ---- a real SLURM cluster --------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory) -> str:
    """Start munge + slurmctld + slurmd (installing slurm-wlm and munge if needed)."""
    if os.geteuid() != 0 and not shutil.which("slurmctld"):
        pytest.fail("SLURM is not installed and the tests do not run as root to install it "
                    "(apt-get install slurm-wlm munge)")
    state = os.environ.get("TOMODASH_SLURM_STATE", "/tmp/tomodash-slurm")
    proc = subprocess.run(["bash", str(START_SCRIPT), state], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"could not start SLURM ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    conf = [line.split("=", 1)[1] for line in proc.stdout.splitlines() if line.startswith("SLURM_CONF=")][-1]
    return conf


@pytest.fixture
def session(slurm_conf, tmp_path_factory, monkeypatch) -> Session:
    register_sleeper()
    monkeypatch.setenv("SLURM_CONF", slurm_conf)
    monkeypatch.setenv("PYTHONPATH", child_pythonpath())
    root = tmp_path_factory.mktemp("slurm") / "session"
    return create_demo_session(root, preset="test")


def queued(seconds: float, **kw) -> SleeperParameters:
    return SleeperParameters(seconds=seconds, do_queue=True, qsub="sbatch", queuename="debug", **kw)


def queue_state_is(job_id: str, *states: str):
    return lambda: slurm.queue_state(job_id) in states


@pytest.mark.slurm
def test_slurm_submit_watch_finish(session):
    info = runner.run_job(session, "sleeper", queued(3))
    record = runner.read_run_record(info.path)
    assert record.backend == "slurm" and record.slurm_job_id.isdigit()
    script = (info.path / "run_submit.script").read_text()
    assert "#SBATCH --job-name=External/job002/" in script and "--partition=debug" in script
    assert "-m sleeper --job-dir External/job002" in script
    wait_for(queue_state_is(record.slurm_job_id, "RUNNING"), 60, 0.2)
    assert runner.reconcile(session, info.name) == "Running"
    final = wait_for(lambda: None if runner.reconcile(session, info.name) == "Running"
                     else runner.reconcile(session, info.name), 90, 0.5)
    assert final == "Succeeded", (info.path / "run.err").read_text()
    assert slurm.queue_state(record.slurm_job_id) is None
    assert "sleeper pid" in (info.path / "run.out").read_text()


@pytest.mark.slurm
def test_slurm_abort_cancels(session):
    info = runner.run_job(session, "sleeper", queued(120, ignore_abort=True))
    job_id = runner.read_run_record(info.path).slurm_job_id
    wait_for(queue_state_is(job_id, "RUNNING"), 60, 0.2)
    assert runner.abort(session, info.name, grace=1, term_grace=3) == "Aborted"
    wait_for(lambda: slurm.queue_state(job_id) is None, 30, 0.2)
    assert "SLURM job" in runner.failure_reason(info.path)


@pytest.mark.slurm
def test_slurm_scancel_outside_tomodash_is_failed(session):
    info = runner.run_job(session, "sleeper", queued(120))
    job_id = runner.read_run_record(info.path).slurm_job_id
    wait_for(queue_state_is(job_id, "RUNNING", "PENDING"), 60, 0.2)
    slurm.cancel(job_id)
    final = wait_for(lambda: None if runner.reconcile(session, info.name) == "Running"
                     else session.job(info.name).status, 60, 0.5)
    assert final == "Failed"
    assert f"SLURM job {job_id}" in runner.failure_reason(info.path)
