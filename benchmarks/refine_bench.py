"""3D auto-refine benchmark on the demo dataset.

Prints, for the first iterations of a refinement at bin 3 with tests/test_refine_demo.py's
settings (the default 4 iterations: three global at HEALPix order 2, one global at order 3):
* seconds per iteration split into E-step, M-step and I/O;
* E-step throughput in pose evaluations per second and in effective GFLOP/s of the
  cross-term products, next to this machine's own single-precision matrix-multiply rate on
  the same shapes measured in the same run (the ratio is the figure that matters);
* the speed-up of ``mpiexec -n 3`` over one process (wall time of the same command).

With ``--to-convergence`` it instead runs the whole refinement (one process x 2 threads) and
prints the number of iterations, the final resolution and the wall time per iteration; run it
with another checkout first on ``PYTHONPATH`` to compare two versions on the same machine.

With ``--gpu`` (on a machine where CuPy sees a CUDA device) it runs the whole demo refinement
twice in this process, on 2 CPU threads and with ``--gpu 0``, and prints the E-step time of
each iteration on both with their ratio, the GPU's E-step rate against the device's own GEMM
rate on the same shapes, the iteration counts and the FSC between the two final maps.

Usage: python benchmarks/refine_bench.py [--iterations 4] [--workdir DIR] [--to-convergence | --gpu]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def matmul_gflops(threads: int, seconds: float = 2.0) -> float:
    """This machine's float32 GEMM rate (GFLOP/s) on the E-step's shapes: 512 rotations x
    (2 x 11 tilts x ~630 pixels) times 81 translations, on ``threads`` threads."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 13860)).astype(np.float32)
    b = rng.standard_normal((81, 13860)).astype(np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        a @ b.T
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a @ b.T
            n += 1
        return 2.0 * a.shape[0] * b.shape[0] * a.shape[1] * n / (time.perf_counter() - start) / 1e9


def device_matmul_gflops(seconds: float = 2.0) -> float:
    """The GPU's float32 GEMM rate (GFLOP/s) on the shapes of :func:`matmul_gflops`."""
    import cupy

    rng = cupy.random.default_rng(0)
    a = rng.standard_normal((512, 13860), dtype=cupy.float32)
    b = rng.standard_normal((81, 13860), dtype=cupy.float32)
    a @ b.T
    cupy.cuda.Device().synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b.T
        n += 1
    cupy.cuda.Device().synchronize()
    return 2.0 * a.shape[0] * b.shape[0] * a.shape[1] * n / (time.perf_counter() - start) / 1e9


def gpu_against_cpu(opt: Path, ref: Path, work: Path) -> None:
    """The demo refinement to convergence on 2 CPU threads and on GPU 0, in this process."""
    from processing.fourier.fsc import fsc
    from processing.io import read_mrc
    from processing.refine import estep
    from processing.refine.driver import RefineRun
    from processing.refine.flags import parse_refine_args

    runs = {}
    for name, extra in (("cpu", []), ("gpu", ["--gpu", "0"])):
        out = work / f"{name}_{int(time.time())}"
        out.mkdir()
        run = RefineRun(parse_refine_args(refine_argv(opt, ref, out, 999, 2) + extra), log=lambda *a: None)
        estep.WORK.update(poses=0, matmul_flops=0.0, slices=0)
        begin = time.perf_counter()
        run.run()
        runs[name] = (out, run.iteration_timings, time.perf_counter() - begin, dict(estep.WORK))
    (cpu_out, cpu_t, cpu_wall, _), (gpu_out, gpu_t, gpu_wall, work_gpu) = runs["cpu"], runs["gpu"]
    print("iteration   CPU E-step [s]   GPU E-step [s]   CPU/GPU")
    for a, b in zip(cpu_t, gpu_t):
        print(f"{a['iteration']:9d}   {a['expectation']:14.2f}   {b['expectation']:14.2f}   "
              f"x{a['expectation'] / b['expectation']:.1f}")
    e_gpu = sum(t["expectation"] for t in gpu_t)
    rate = device_matmul_gflops()
    gflops = work_gpu["matmul_flops"] / e_gpu / 1e9
    print(f"GPU E-step cross-term products {gflops:.1f} GFLOP/s = {gflops / rate:.2f} x the device's float32 "
          f"GEMM rate on the same shapes ({rate:.0f} GFLOP/s)")
    print(f"whole refinement: CPU (2 threads) {len(cpu_t)} iterations in {cpu_wall:.1f} s; GPU {len(gpu_t)} "
          f"iterations in {gpu_wall:.1f} s: x{cpu_wall / gpu_wall:.1f}")
    a, b = read_mrc(cpu_out / "run_class001.mrc").data, read_mrc(gpu_out / "run_class001.mrc").data
    curve = fsc(a, b)
    print(f"FSC between the CPU and GPU final maps: minimum {curve[1:].min():.4f} over shells 1-{curve.size - 1}")


def prepare(work: Path) -> tuple[Path, Path]:
    from processing.io import ParticleSet
    from processing.simulate import simulate_dataset
    from processing.simulate.presets import DEMO

    data = work / "demo"
    if not (data / "particles.star").exists():
        simulate_dataset(DEMO, data)
    particles = ParticleSet.read(data / "particles.star")
    particles.assign_random_subsets(np.random.default_rng(1))
    particles.write(work / "init.star")
    return extract_and_reconstruct(work / "init.star", data / "tomograms.star", work / "ex", work / "rec")


def extract_and_reconstruct(particles: Path, tomograms: Path, ex: Path, rec: Path) -> tuple[Path, Path]:
    """Extract at bin 3 (64 px cropped to 40, as the demo refinement) and
    reconstruct (C6); returns (optimisation set, reference map)."""
    from processing.extract import ExtractionSettings, extract_subtomograms
    from processing.reconstruct import ReconstructionSettings, reconstruct_particles

    quiet = lambda *a, **k: None  # noqa: E731
    extract_subtomograms(particles_file=particles, tomograms_file=tomograms, output_dir=ex,
                         settings=ExtractionSettings(binning=3, box=64, crop=40, max_dose=30, threads=2), log=quiet)
    reconstruct_particles(particles_file=ex / "particles.star", tomograms_file=tomograms, output_dir=rec,
                          settings=ReconstructionSettings(binning=3, box=64, crop=40, symmetry="C6", threads=2),
                          log=quiet)
    return ex / "optimisation_set.star", rec / "merged.mrc"


def refine_argv(opt: Path, ref: Path, out: Path, iterations: int, threads: int) -> list[str]:
    return ["--o", f"{out}/run", "--auto_refine", "--split_random_halves", "--ios", str(opt), "--ref", str(ref),
            "--trust_ref_size", "--ini_high", "60", "--dont_combine_weights_via_disc", "--pool", "30", "--pad", "2",
            "--ctf", "--particle_diameter", "250", "--flatten_solvent", "--zero_mask", "--oversampling", "1",
            "--healpix_order", "2", "--auto_local_healpix_order", "4", "--offset_range", "4", "--offset_step", "2",
            "--sym", "C6", "--low_resol_join_halves", "40", "--norm", "--scale", "--sigma_tilt", "10",
            "--auto_ignore_angles", "--auto_resol_angles", "--random_seed", "1", "--auto_iter_max", str(iterations),
            "--j", str(threads)]


def converge(opt: Path, ref: Path, work: Path) -> None:
    """The whole demo refinement in this process: iterations, final resolution, wall time."""
    import processing
    from processing.refine.flags import parse_refine_args
    from processing.refine.driver import RefineRun

    out = work / f"converge_{int(time.time())}"
    out.mkdir()
    run = RefineRun(parse_refine_args(refine_argv(opt, ref, out, 999, 2)), log=lambda *a: None)
    begin = time.perf_counter()
    run.run()
    seconds = time.perf_counter() - begin
    from processing.io.refine_star import ModelStarContents

    resolution = ModelStarContents.read(out / "run_model.star").current_resolution       # Å
    timings = run.iteration_timings
    n = len(timings)
    print(f"{Path(processing.__file__).parent.parent}: converged in {n} iterations, final resolution "
          f"{resolution:.2f} Å, wall time {seconds:.1f} s ({seconds / n:.1f} s per iteration)")
    # The scale benchmark times the first iteration only; this ratio turns its figure into a
    # whole refinement's (on the demo's schedule: global HEALPix 2, then 3, then local searches).
    first = timings[0]["total"]
    print("iteration   total [s]   / iteration 1")
    for t in timings:
        print(f"{t['iteration']:9d}   {t['total']:9.1f}   {t['total'] / first:13.2f}")
    print(f"all {n} iterations = {sum(t['total'] for t in timings) / first:.1f} x iteration 1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--to-convergence", action="store_true")
    parser.add_argument("--gpu", action="store_true", help="the demo refinement on 2 CPU threads and on GPU 0")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="refine_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    opt, ref = prepare(work)
    if args.to_convergence:
        converge(opt, ref, work)
        return
    if args.gpu:
        gpu_against_cpu(opt, ref, work)
        return

    from processing.refine import estep
    from processing.refine.flags import parse_refine_args
    from processing.refine.driver import RefineRun

    rate = matmul_gflops(threads=2)
    out = work / "inproc"
    out.mkdir(exist_ok=True)
    run = RefineRun(parse_refine_args(refine_argv(opt, ref, out, args.iterations, 2)), log=lambda *a: None)
    estep.WORK.update(poses=0, matmul_flops=0.0, slices=0)
    run.run()
    timings = run.iteration_timings
    e_total = sum(t["expectation"] for t in timings)
    print(f"machine: float32 matrix multiply on the E-step's shapes {rate:.1f} GFLOP/s (2 threads)")
    print("iteration   E-step [s]   M-step [s]   I/O [s]   total [s]")
    for t in timings:
        print(f"{t['iteration']:9d}   {t['expectation']:10.1f}   {t['maximisation']:10.2f}   {t['io']:7.2f}   {t['total']:9.1f}")
    gflops = estep.WORK["matmul_flops"] / e_total / 1e9
    print(f"E-step: {estep.WORK['poses'] / e_total:,.0f} pose evaluations/s, {estep.WORK['slices'] / e_total:,.0f} "
          f"central slices/s, cross-term products at {gflops:.1f} GFLOP/s = {gflops / rate:.2f} x the machine's "
          "matmul rate (the rest of the E-step time is mostly the central-slice gathers)")

    tomodash = str(Path(sys.executable).parent / "tomodash")
    mpiexec = str(Path(sys.executable).parent / "mpiexec")

    def wall(command: list[str], name: str, threads: int) -> float:
        begin = time.perf_counter()
        subprocess.run([*command, *refine_argv(opt, ref, work / name, args.iterations, threads)], check=True,
                       capture_output=True)
        return time.perf_counter() - begin

    one = wall([tomodash, "refine"], "one_thread", 1)
    threaded = wall([tomodash, "refine"], "two_threads", 2)
    mpi = wall([mpiexec, "-n", "3", tomodash, "refine"], "mpi", 1)
    print(f"wall time of {args.iterations} iterations: 1 process x 1 thread {one:.1f} s (baseline); "
          f"1 process x 2 threads {threaded:.1f} s: x{one / threaded:.2f}; mpiexec -n 3 (leader + one worker "
          f"per half, 1 thread each) {mpi:.1f} s: x{one / mpi:.2f} over the baseline, x{threaded / mpi:.2f} over "
          "1 process x 2 threads")

if __name__ == "__main__":
    main()
