"""3D auto-refine benchmark on the demo dataset.

Prints, for the first iterations of a refinement at bin 3 (the test's settings):
* seconds per iteration split into E-step, M-step and I/O;
* E-step throughput in pose evaluations per second and in effective GFLOP/s of the
  cross-term products, next to this machine's own single-precision complex matrix-multiply
  rate measured in the same run (the ratio is the figure that matters);
* the speed-up of ``mpiexec -n 3`` over one process (wall time of the same command).

Usage: python benchmarks/refine_bench.py [--iterations 2] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def complex_matmul_gflops(seconds: float = 2.0) -> float:
    """This machine's complex64 GEMM rate (GFLOP/s, 8 flops per complex multiply-add)."""
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((512, 15000)) + 1j * rng.standard_normal((512, 15000))).astype(np.complex64)
    b = (rng.standard_normal((97, 15000)) + 1j * rng.standard_normal((97, 15000))).astype(np.complex64)
    a @ b.T
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b.T
        n += 1
    return 8.0 * 512 * 97 * 15000 * n / (time.perf_counter() - start) / 1e9


def prepare(work: Path) -> tuple[Path, Path]:
    from processing.extract import ExtractionSettings, extract_subtomograms
    from processing.io import ParticleSet
    from processing.reconstruct import ReconstructionSettings, reconstruct_particles
    from processing.simulate import simulate_dataset
    from processing.simulate.presets import DEMO

    data = work / "demo"
    if not (data / "particles.star").exists():
        simulate_dataset(DEMO, data)
    particles = ParticleSet.read(data / "particles.star")
    particles.assign_random_subsets(np.random.default_rng(1))
    particles.write(work / "init.star")
    quiet = lambda *a, **k: None  # noqa: E731
    extract_subtomograms(particles_file=work / "init.star", tomograms_file=data / "tomograms.star",
                         output_dir=work / "ex", settings=ExtractionSettings(binning=3, box=64, crop=48, max_dose=50,
                                                                             threads=2), log=quiet)
    reconstruct_particles(particles_file=work / "ex" / "particles.star", tomograms_file=data / "tomograms.star",
                          output_dir=work / "rec", settings=ReconstructionSettings(binning=3, box=64, crop=48,
                                                                                   symmetry="C6", threads=2), log=quiet)
    return work / "ex" / "optimisation_set.star", work / "rec" / "merged.mrc"


def refine_argv(opt: Path, ref: Path, out: Path, iterations: int, threads: int) -> list[str]:
    return ["--o", f"{out}/run", "--auto_refine", "--split_random_halves", "--ios", str(opt), "--ref", str(ref),
            "--trust_ref_size", "--ini_high", "60", "--dont_combine_weights_via_disc", "--pool", "30", "--pad", "2",
            "--ctf", "--particle_diameter", "250", "--flatten_solvent", "--zero_mask", "--oversampling", "1",
            "--healpix_order", "2", "--auto_local_healpix_order", "4", "--offset_range", "4", "--offset_step", "2",
            "--sym", "C6", "--low_resol_join_halves", "40", "--norm", "--scale", "--sigma_tilt", "10",
            "--random_seed", "1", "--auto_iter_max", str(iterations), "--j", str(threads)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="refine_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    opt, ref = prepare(work)

    from processing.refine import estep
    from processing.refine.cli import parse_refine_args
    from processing.refine.driver import RefineRun

    rate = complex_matmul_gflops()
    out = work / "inproc"
    out.mkdir(exist_ok=True)
    run = RefineRun(parse_refine_args(refine_argv(opt, ref, out, args.iterations, 2)), log=lambda *a: None)
    estep.WORK.update(poses=0, matmul_flops=0.0, slices=0)
    run.run()
    timings = run.iteration_timings
    e_total = sum(t["expectation"] for t in timings)
    print(f"machine: complex64 matrix multiply {rate:.1f} GFLOP/s (2 threads)")
    print("iteration   E-step [s]   M-step [s]   I/O [s]   total [s]")
    for t in timings:
        print(f"{t['iteration']:9d}   {t['expectation']:10.1f}   {t['maximisation']:10.2f}   {t['io']:7.2f}   {t['total']:9.1f}")
    gflops = estep.WORK["matmul_flops"] / e_total / 1e9
    print(f"E-step: {estep.WORK['poses'] / e_total:,.0f} pose evaluations/s, {estep.WORK['slices'] / e_total:,.0f} "
          f"central slices/s, cross-term products at {gflops:.1f} GFLOP/s = {gflops / rate:.2f} x the machine's "
          "complex matmul rate (the rest of the E-step time is slices, phases and sums)")

    tomodash = str(Path(sys.executable).parent / "tomodash")
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    start = time.perf_counter()
    subprocess.run([tomodash, "refine", *refine_argv(opt, ref, work / "single", args.iterations, 2)], check=True,
                   capture_output=True)
    single = time.perf_counter() - start
    start = time.perf_counter()
    subprocess.run([mpiexec, "-n", "3", tomodash, "refine", *refine_argv(opt, ref, work / "mpi", args.iterations, 1)],
                   check=True, capture_output=True)
    mpi = time.perf_counter() - start
    print(f"wall time of {args.iterations} iterations: 1 process x 2 threads {single:.1f} s, mpiexec -n 3 "
          f"(leader + 2 workers x 1 thread) {mpi:.1f} s: speed-up x{single / mpi:.2f}")


if __name__ == "__main__":
    main()
