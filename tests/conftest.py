"""Shared fixtures: simulated datasets and extractions, made once per test session."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from processing.io import ParticleSet
from processing.simulate import simulate_dataset
from processing.simulate.presets import DEMO, TEST

#: Extraction used with the demo dataset (bin 3: 8.1 Å pixels, 48-px maps, Nyquist 16.2 Å).
DEMO_EXTRACTION = {"bin": 3, "box": 64, "crop": 48}


def venv_bin(name: str) -> str:
    """An executable beside this Python (the venv's ``tomodash``, ``mpiexec``); fail if absent."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found beside {sys.executable} nor on PATH (pip install mpich)")
    return found


def run_cmd(args: list[str], cwd: Path | str | None = None, *, check: bool = True,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a command; on an unexpected exit status fail with its output."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def start_process(args: list[str], log: Path) -> subprocess.Popen:
    """Start a command in its own process group (so a test can SIGKILL all of it), output to ``log``."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONUNBUFFERED="1")
    return subprocess.Popen(args, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)


def wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    """Poll ``predicate`` until true; fail if ``proc`` ends first or on timeout."""
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"process ended early with {proc.returncode}")
        time.sleep(0.2)
    pytest.fail("timed out")


def in_iteration(run_dir: Path, iteration: int) -> bool:
    """A refinement's progress.json reports particles done in ``iteration``."""
    try:
        progress = json.loads((run_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return False
    return progress.get("iteration") == iteration and progress.get("particles_done", 0) > 0


def with_random_subsets(src: Path, dst: Path, seed: int = 1) -> Path:
    """Copy of a particle set with ``rlnRandomSubset`` 1/2 assigned at random."""
    particles = ParticleSet.read(src)
    particles.assign_random_subsets(np.random.default_rng(seed))
    particles.write(dst)
    return dst


@pytest.fixture(scope="session")
def host_cupy_gather(tmp_path_factory) -> Path:
    """The refinement's CUDA gather kernel compiled for the host (tests/host_cupy.py)."""
    import host_cupy

    # no skip: a machine without g++ would silently lose every GPU rehearsal (make test-deps
    # installs it)
    return host_cupy.build_gather(tmp_path_factory.mktemp("host_cupy"))


@pytest.fixture(params=[pytest.param("cuda", marks=pytest.mark.gpu), "host stand-in"])
def device_cupy(request):
    """CuPy on a CUDA device ("cuda", marked ``gpu``, skipped without one), or the host stand-in
    of tests/host_cupy.py ("host stand-in"), which holds numpy to CuPy's rules on host and
    device arrays and runs the gather kernel's own code compiled for the host: a GPU run
    rehearsed on any machine."""
    from processing.backend import cupy_available
    from processing.refine import _cuda_kernels as CK

    if request.param == "cuda":
        if not cupy_available():
            pytest.skip("needs CuPy and a CUDA device")
        import cupy

        yield cupy
        return
    import host_cupy

    CK._kernel.cache_clear()
    try:
        with host_cupy.installed() as cupy:
            # only the stand-in compiles the kernel for the host (a GPU machine may lack g++)
            host_cupy.register_kernel("gather_points",
                                      host_cupy.load_gather(request.getfixturevalue("host_cupy_gather")))
            yield cupy
    finally:
        CK._kernel.cache_clear()                       # the stand-in's kernel object stays behind


@pytest.fixture
def gpu_stand_in_commands(host_cupy_gather, monkeypatch) -> None:
    """Commands run by this test see two CUDA devices: CuPy replaced in every process by the
    host stand-in of tests/host_cupy.py (a rehearsal of a GPU run on a machine without one)."""
    tests = Path(__file__).parent
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tests / "host_cupy_site"), str(tests),
                                                      os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("HOST_CUPY_DEVICES", "2")
    monkeypatch.setenv("HOST_CUPY_GATHER", str(host_cupy_gather))


@pytest.fixture(scope="session")
def test_dataset(tmp_path_factory) -> Path:
    """TEST preset with two tilt series (so that MPI over tomograms has work for 2 ranks)."""
    out = tmp_path_factory.mktemp("test_dataset")
    simulate_dataset(dataclasses.replace(TEST, n_tomograms=2), out)
    return out


@pytest.fixture(scope="session")
def demo_dataset(tmp_path_factory) -> Path:
    """The demo dataset (4 tilt series, ~270 particles; ~12 s)."""
    out = tmp_path_factory.mktemp("demo_dataset")
    simulate_dataset(DEMO, out)
    return out


def processing_command(argv: list[str]) -> None:
    """A ``tomodash`` processing command (extract, reconstruct, ...) run in this process, with
    only the processing layer imported (a GPU machine's image lacks the dashboard's packages)."""
    import argparse

    from processing.cli import add_processing_commands

    parser = argparse.ArgumentParser(prog="tomodash")
    add_processing_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    assert int(args.func(args) or 0) == 0, argv


def _extract(dataset: Path, out: Path, *extra: str) -> Path:
    e = DEMO_EXTRACTION
    processing_command(["extract", "--i", str(dataset / "optimisation_set.star"), "--o", str(out) + "/",
                        "--b", str(e["box"]), "--crop", str(e["crop"]), "--bin", str(e["bin"]), "--j", "2", *extra])
    return out


@pytest.fixture(scope="session")
def demo_extraction(demo_dataset, tmp_path_factory) -> Path:
    """Demo particles (initial poses) extracted as 2D float16 stacks at bin 3, box 64, crop 48."""
    return _extract(demo_dataset, tmp_path_factory.mktemp("demo_extract2d"), "--stack2d", "--float16")


@pytest.fixture(scope="session")
def demo_extraction_3d(demo_dataset, tmp_path_factory) -> Path:
    """The same particles as 3D pseudo-subtomograms (float32)."""
    return _extract(demo_dataset, tmp_path_factory.mktemp("demo_extract3d"))


# ---- sessions: waiting for a job; a small file system for the disk-full tests -------------------

_PIPELINER_PROBE = """
import json, sys
from pipeliner.job_factory import read_job
from pipeliner.project_graph import ProjectGraph
with ProjectGraph(pipeline_dir='.', read_only=True) as pg:
    processes = {p.name: {'type': p.type, 'status': p.status, 'alias': p.alias, 'inputs': len(p.input_nodes),
                          'outputs': {n.name: n.type for n in p.output_nodes}} for p in pg.process_list}
jobs = {}
for request in sys.argv[1:]:
    job_star, *options = request.split(',')
    job = read_job(job_star)
    jobs[job_star] = {'class': type(job).__name__, **{k: job.joboptions[k].value for k in options}}
print(json.dumps({'processes': processes, 'jobs': jobs}))
"""


def ccpem_pipeliner_view(project: Path, jobs: dict[str, list[str]] | None = None) -> dict:
    """What the CCP-EM pipeliner reads of a project, in a process of its own (as a user of both
    tools would run it): ``{"processes": {name: {type, status, alias, inputs (count), outputs
    {node: type}}}, "jobs": {job.star: {"class": job class, option: value}}}`` for the job.star
    files in ``jobs`` (path -> job options to read back)."""
    requests = [",".join([star, *options]) for star, options in (jobs or {}).items()]
    proc = subprocess.run([sys.executable, "-c", _PIPELINER_PROBE, *requests], cwd=project, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def wait_for_job(session, name: str, timeout: float = 300) -> str:
    """Reconcile ``name`` until it is no longer running; its final status."""
    from sessions import runner

    end = time.time() + timeout
    while time.time() < end:
        status = runner.reconcile(session, name)
        if status != "Running":
            return status
        time.sleep(0.3)
    pytest.fail(f"{name} did not finish in {timeout} s")


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs, unmounted afterwards (root only; CI runs as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        # CI runs as root: a disk-full test that cannot make its disk must fail, not hide.
        pytest.fail(f"cannot mount a tmpfs for the disk-full tests (needs root): {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_disk(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk``'s file system to the last block, then free ``leave`` bytes (a multiple of
    the page size); returns the filler file."""
    import errno

    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 65536)  # unbuffered: a short write, then ENOSPC
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    if leave:
        os.truncate(filler, max(0, os.path.getsize(filler) - leave))
    else:
        assert os.statvfs(disk).f_bavail == 0
    return filler

