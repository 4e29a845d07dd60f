"""Kill matrix (issue 12): a real 3D auto-refine under MPI (3 processes, the tiny simulated
dataset) SIGKILLed as a whole process group at each kind of moment of an iteration, then
reconciled and continued.

Kill points, all in iteration 2 (iterations 0 and 1 are complete by then):

* in the E-step (found by polling ``progress.json``);
* at the start of the M-step (``TOMODASH_TEST_PAUSE=maximisation:2``: the leader waits there,
  a test hook in ``processing/refine/driver.py``);
* during each atomic write of the iteration's files, after the temporary file is written and
  before it is renamed (``TOMODASH_TEST_PAUSE=write:<name>``, ``processing/io/atomic.py``).

After every kill: the job is ``Failed`` (killed by SIGKILL), the files of the completed
iterations are byte-identical to before, no file with a final name is half-written (every STAR,
MRC and JSON file parses; the file being written at the kill does not exist under its name),
and a continue resumes from iteration 1. The kill points are chained on one job per group
(each continue is killed at the next point), so each kill costs only the redone part of
iteration 2; the last continue runs to ``--auto_iter_max 3`` and must succeed.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from conftest import wait_for_job
from processing.io.atomic import TEST_PAUSE_ENV, TEST_PAUSED_FILE
from processing.io.mrc import read_mrc
from processing.io.star import read_star
from processing.jobs.extract_params import ExtractParameters
from processing.jobs.reconstruct_params import ReconstructParameters
from processing.jobs.refine3d_params import Refine3DParameters
from sessions import create_demo_session, runner

pytestmark = pytest.mark.mpi

#: The kill points, grouped into chains (one refine job each).
CHAINS = {
    "estep-mstep": ["estep", "maximisation:2"],
    "map-writes": ["write:run_it002_half1_class001.mrc", "write:run_it002_half2_class001.mrc",
                   "write:run_it002_half1_model.star", "write:run_it002_half2_model.star"],
    "metadata-writes": ["write:run_it002_data.star", "write:run_it002_sampling.star",
                        "write:run_it002_optimisation_set.star", "write:run_it002_optimiser.star"],
}

_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
_LOGS = {"run.out", "run.err", "note.txt", TEST_PAUSED_FILE}


def _wait(predicate, timeout: float, what: str, job_dir: Path) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        time.sleep(0.05)
    err = (job_dir / "run.err").read_text(errors="replace")[-2000:] if (job_dir / "run.err").exists() else ""
    pytest.fail(f"timed out waiting for {what}; run.err:\n{err}")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A session with the tiny dataset extracted (bin 2) and reconstructed: refine's inputs."""
    session = create_demo_session(tmp_path_factory.mktemp("kill_matrix") / "s", preset="test")
    ex = runner.run_job(session, "extract", ExtractParameters(
        in_optimisation="Import/job001/optimisation_set.star", binning=2, box_size=32, crop_size=24))
    assert wait_for_job(session, ex.name) == "Succeeded"
    rec = runner.run_job(session, "reconstruct", ReconstructParameters(
        in_optimisation=f"{ex.name}optimisation_set.star", binning=2, box_size=32, crop_size=24, sym_name="C6"))
    assert wait_for_job(session, rec.name) == "Succeeded"
    return session, ex.name, rec.name


def _processes() -> dict[int, tuple[int, int]]:
    """Live processes: pid -> (parent pid, process group)."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                rest = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if rest[0] not in ("Z", "X"):
                table[int(entry)] = (int(rest[1]), int(rest[2]))
    return table


def _job_processes(leader: int) -> set[int]:
    """``leader`` and all its descendants."""
    table = _processes()
    found, frontier = set(), {leader} & set(table)
    while frontier:
        found |= frontier
        frontier = {pid for pid, (parent, _) in table.items() if parent in frontier} - found
    return found


def _kill_group(job_dir: Path) -> None:
    """SIGKILL the whole job at once: mpiexec's process group and the groups of its proxy and
    ranks (hydra starts each in a session of its own), as a crash of the node would."""
    record = runner.read_run_record(job_dir)
    members = _job_processes(record.identity.pid)
    table = _processes()
    groups = {table[pid][1] for pid in members if pid in table} | {int(record.data["pgid"])}
    assert len(members) >= 5  # mpiexec, hydra's proxy, three ranks
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _wait(lambda: not (members & set(_processes())), 20, "every process of the job to die", job_dir)


def _iteration_files(job_dir: Path, iterations: range) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for it in iterations for p in sorted(job_dir.glob(f"run_it{it:03d}_*"))}


def _assert_no_half_written_file(job_dir: Path) -> None:
    """Every file under a final name is complete: it parses as what its name says."""
    for path in sorted(job_dir.rglob("*")):
        if not path.is_file() or path.name in _LOGS or _TEMP_RE.match(path.name):
            continue
        try:
            if path.suffix == ".star":
                read_star(path)
            elif path.suffix in (".mrc", ".mrcs"):
                read_mrc(path)
            elif path.suffix == ".json":
                json.loads(path.read_text())
        except Exception as exc:  # noqa: BLE001 - any failure to parse is the finding
            pytest.fail(f"{path.name} is not a complete file after the kill: {exc}")


def _last_complete_iteration(job_dir: Path) -> int:
    done = [int(m.group(1)) for p in job_dir.glob("run_it*_optimiser.star")
            if (m := re.match(r"run_it(\d{3})_optimiser\.star$", p.name))]
    return max(done, default=-1)


@pytest.mark.parametrize("chain", list(CHAINS))
def test_refine_killed_then_continued(prepared, chain, monkeypatch):
    session, extract, reconstruct = prepared
    params = Refine3DParameters(
        in_optimisation=f"{extract}optimisation_set.star", fn_ref=f"{reconstruct}merged.mrc",
        ref_correct_greyscale=True, ini_high=60, sym_name="C6", particle_diameter=200, sigma_tilt=10,
        offset_range=4, nr_pool=1, nr_mpi=3, nr_threads=1, other_args="--auto_iter_max 3")
    job = None
    before: dict[str, str] = {}
    for n, point in enumerate(CHAINS[chain]):
        if point == "estep":
            monkeypatch.delenv(TEST_PAUSE_ENV, raising=False)
        else:
            monkeypatch.setenv(TEST_PAUSE_ENV, point)
        if job is None:
            job = runner.run_job(session, "refine3d", params, alias=f"kill_{chain}")
        else:
            runner.continue_job(session, job.name)
        job_dir = session.root / job.name
        paused = job_dir / TEST_PAUSED_FILE
        if point == "estep":
            def in_estep_of_2() -> bool:
                try:
                    progress = json.loads((job_dir / "progress.json").read_text())
                except (OSError, ValueError):
                    return False
                return (progress.get("iteration") == 2 and progress.get("phase") == "expectation"
                        and progress.get("particles_done", 0) > 0)
            _wait(in_estep_of_2, 240, "the E-step of iteration 2", job_dir)
        else:
            _wait(lambda: paused.exists() and paused.read_text().startswith(f"{point} "), 240, point, job_dir)
        # At the kill, iterations 0 and 1 are complete and iteration 2 is not.
        assert _last_complete_iteration(job_dir) == 1, f"{point}: not in iteration 2"
        if not before:
            before = _iteration_files(job_dir, range(2))
            assert len(before) == 2 * 8  # maps, models, data, sampling, optimisation set, optimiser
        _kill_group(job_dir)

        assert runner.reconcile(session, job.name) == "Failed"
        assert "SIGKILL" in runner.failure_reason(job_dir)
        assert _iteration_files(job_dir, range(2)) == before, f"{point}: a completed iteration changed"
        _assert_no_half_written_file(job_dir)
        if point.startswith("write:"):
            target = point.split(":", 1)[1]
            assert not (job_dir / target).exists(), f"{target} exists under its final name"
            assert [p for p in job_dir.iterdir() if p.name.startswith(f".{target}.") and p.name.endswith(".tmp")]
        paused.unlink(missing_ok=True)
        assert len([p for p in job_dir.glob("RELION_JOB_EXIT_*")]) == 1

    # The last continue runs to the end: nothing more lost, nothing half-written, one marker.
    monkeypatch.delenv(TEST_PAUSE_ENV, raising=False)
    runner.continue_job(session, job.name)
    assert wait_for_job(session, job.name) == "Succeeded", (job_dir / "run.err").read_text()[-2000:]
    assert _iteration_files(job_dir, range(2)) == before
    assert (job_dir / "run_it003_optimiser.star").exists()
    _assert_no_half_written_file(job_dir)
    assert not [p for p in job_dir.rglob("*.tmp")]
    assert sorted(p.name for p in job_dir.glob("*_JOB_EXIT_*")) == ["PIPELINER_JOB_EXIT_SUCCESS",
                                                                     "RELION_JOB_EXIT_SUCCESS"]
    note = (job_dir / "note.txt").read_text()
    assert note.count(f"--continue {job.name}run_it001_optimiser.star") == len(CHAINS[chain])
