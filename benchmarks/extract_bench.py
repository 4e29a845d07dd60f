"""Extraction and reconstruction throughput on the demo dataset: 1 process vs ``mpiexec -n 2``.

Prints particles x tilts per second for Extract subtomos (bin 3, box 64, crop 48, 2D stacks)
and Reconstruct particle (same geometry, C6), each with one process and with two MPI
processes (one thread each), and the ratios, all measured in this run::

    .venv/bin/python benchmarks/extract_bench.py [--dataset DIR]

Times are the jobs' own (from their logs: reading inputs to writing outputs); wall times
including interpreter start-up are printed beside them.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
GEOMETRY = ["--b", "64", "--crop", "48", "--bin", "3", "--j", "1"]


def _run(cmd: list[str]) -> tuple[str, float]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout, wall


def _command(job: str, args: list[str], n: int) -> list[str]:
    cmd = [str(BIN / "tomodash"), job, *args]
    if n > 1:
        mpiexec = BIN / "mpiexec" if (BIN / "mpiexec").exists() else shutil.which("mpiexec")
        if mpiexec is None:
            raise SystemExit("mpiexec not found (pip install mpich)")
        cmd = [str(mpiexec), "-n", str(n), *cmd]
    return cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, help="existing demo dataset (default: simulate one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="extract_bench_"))
    try:
        dataset = args.dataset
        if dataset is None:
            dataset = work / "demo"
            print("simulating the demo dataset ...", flush=True)
            _run([str(BIN / "tomodash"), "simulate", str(dataset), "--preset", "demo"])
        opt = dataset / "optimisation_set.star"
        results: dict[tuple[str, int], tuple[float, float, int]] = {}
        for n in (1, 2):
            out = work / f"Extract_n{n}"
            log, wall = _run(_command("extract", ["--i", str(opt), "--o", f"{out}/", "--stack2d", *GEOMETRY], n))
            m = re.search(r"(\d+) tilt images, in ([\d.]+) s", log)
            results[("extract", n)] = (float(m.group(2)), wall, int(m.group(1)))
        halves = work / "particles_halves.star"
        from processing.io import ParticleSet

        particles = ParticleSet.read(work / "Extract_n1" / "particles.star")
        particles.assign_random_subsets(1)
        particles.write(halves)
        for n in (1, 2):
            out = work / f"Reconstruct_n{n}"
            log, wall = _run(_command("reconstruct", ["--p", str(halves), "--t", str(dataset / "tomograms.star"),
                                                      "--o", f"{out}/", "--sym", "C6", *GEOMETRY], n))
            m = re.search(r"\((\d+) tilt images\) in ([\d.]+) s", log)
            results[("reconstruct", n)] = (float(m.group(2)), wall, int(m.group(1)))
        print(f"\nDemo dataset, bin 3, box 64, crop 48; {os.cpu_count()} CPU cores; 1 thread per process")
        print(f"{'job':<12} {'procs':>5} {'ptcl x tilts':>12} {'job s':>8} {'wall s':>8} {'ptcl x tilts/s':>15}")
        for (job, n), (seconds, wall, count) in results.items():
            print(f"{job:<12} {n:>5} {count:>12} {seconds:>8.2f} {wall:>8.2f} {count / seconds:>15.0f}")
        for job in ("extract", "reconstruct"):
            s1, w1, _ = results[(job, 1)]
            s2, w2, _ = results[(job, 2)]
            print(f"{job}: mpiexec -n 2 vs 1 process: speed-up x{s1 / s2:.2f} (job time), x{w1 / w2:.2f} (wall)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
