"""Scale benchmark: time per particle and peak memory of the tutorial's chain, vs particle count.

For each particle count it simulates the ``tutorial`` preset (:data:`processing.simulate.TUTORIAL`,
via ``with_particle_count``; a dataset already in ``--workdir`` is reused) and runs, each as
its own ``tomodash`` process (one process, ``--j 2`` threads):

===================  =================================================================
extract_bin6         Extract subtomos, tutorial bin 6: 8.1 Å px, box 192, crop 96, 2D stacks
reconstruct_bin6     Reconstruct particle, same geometry, C6
refine_bin6          one iteration of 3D auto-refine (tutorial bin-6 settings)
extract_bin2         Extract subtomos, tutorial bin 2: 2.7 Å px, box 256, crop 128
reconstruct_bin2     Reconstruct particle, same geometry, C6
refine_bin2          one iteration of 3D auto-refine from the bin-2 half1.mrc
===================  =================================================================

The preset stores its tilt series at 2.7 Å (the tutorial's bin 2), so the tutorial's bin 6
is ``--bin 3`` here and its bin 2 ``--bin 1``: same output pixel sizes and boxes (see the
preset's notes for everything else that differs). The bin-2 extraction uses the same initial
poses as the bin-6 one (its cost does not depend on how good the poses are).

Printed: a table (step, particles, wall s, s/particle, peak RSS MB of that process, read by
``os.wait4``: see ``_MEASURE``), then for each step the growth from the smallest count to each larger one (time
ratio against particle ratio: 1.0 = linear; RSS ratio: 1.0 = flat), measured in this run, and
a projection of the hours the tutorial's refinements (30,596 particles) would take on this
machine, from the largest count's s/particle and an assumed number of iterations.

Full run (about an hour and a half of simulation plus the steps on 2 cores; run it on an
otherwise idle machine)::

    .venv/bin/python benchmarks/scale_bench.py --workdir /tmp/scale_bench \\
        --particles 1000 3000 10000

Small form (CI, < 60 s; one tomogram of a 640² field, small boxes, 30 and 90 particles; its
figures are start-up costs, not projections of anything)::

    .venv/bin/python benchmarks/scale_bench.py --small

Whole refinements (``--refine-iterations N``, e.g. 50: each refinement runs until it converges
or reaches N iterations): the bin-2 chain then starts from the bin-6 refinement's poses, as in
the tutorial, and the report lists every iteration's E-step (which grows with the particles)
and the rest of its time (M-step, I/O, accuracy estimate: fixed per iteration), and projects the
tutorial's refinements from those measured iterations instead of from iteration 1 times an
assumed count. ``--steps`` runs some steps only, on the outputs the earlier steps left in
``--workdir``::

    .venv/bin/python benchmarks/scale_bench.py --workdir /tmp/scale_bench --particles 1000 \
        --refine-iterations 50
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
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent

#: The tutorial's particle count (30,596 picked particles) and the iteration counts assumed for
#: its refinements when only iteration 1 is timed: RELION's auto-refine on the tutorial data
#: stops after roughly 10-15 iterations (no figure in the project's references); 12 at bin 6
#: and 10 at bin 2 are assumed. Iteration 1 times that count is a lower bound: on 1,000
#: particles of the preset's geodesic data (2026-12-07, ``--refine-iterations 50``) the whole
#: refinements converged after 26 iterations at bin 6 (the sampling went on to HEALPix 8: these
#: clean particles give an accuracy estimate of 0.23°) and 16 at bin 2, whose E-steps summed to
#: 158x and 127x iteration 1's.
TUTORIAL_PARTICLES = 30596
ASSUMED_ITERATIONS = {"refine_bin6": 12, "refine_bin2": 10}

STEPS = ("extract_bin6", "reconstruct_bin6", "refine_bin6", "extract_bin2", "reconstruct_bin2", "refine_bin2")


@dataclass(frozen=True)
class Geometry:
    """Boxes of one form of the benchmark (binned pixels; binning relative to the stored 2.7 Å)."""

    bin6: tuple[int, int, int]  # (bin, box, crop)
    bin2: tuple[int, int, int]
    diameter6: float  # particle diameter (Å) of the refine's mask
    diameter2: float


FULL = Geometry(bin6=(3, 192, 96), bin2=(1, 256, 128), diameter6=500.0, diameter2=230.0)
SMALL = Geometry(bin6=(3, 48, 32), bin2=(1, 64, 48), diameter6=200.0, diameter2=120.0)


@dataclass(frozen=True)
class IterationTiming:
    """One refinement iteration as its log reports it (``tomodash refine``)."""

    iteration: int
    search: str          # e.g. "image size 46 (coarse 30), sampling 7.50° (HEALPix 2)"
    expectation_s: float
    maximisation_s: float


@dataclass(frozen=True)
class StepResult:
    """One step at one particle count: wall seconds and peak RSS (MiB) of its process; for a
    refinement its iterations and whether it converged."""

    step: str
    particles: int
    seconds: float
    peak_rss_mb: float
    iterations: tuple[IterationTiming, ...] = ()
    converged: bool = False


_ITERATION = re.compile(r"^Iteration (\d+)(?: \(final\))?: resolution [\d.]+ Å, (image size .*?), offsets")
_ITERATION_DONE = re.compile(r"E ([\d.]+) s, M ([\d.]+) s$")


def refine_iterations(log: str) -> tuple[tuple[IterationTiming, ...], bool]:
    """The iterations a ``tomodash refine`` log reports, and whether the refinement converged."""
    found, search = [], None
    for line in log.splitlines():
        start = _ITERATION.match(line.strip())
        if start:
            search = (int(start.group(1)), start.group(2))
            continue
        done = _ITERATION_DONE.search(line.strip())
        if done and search is not None:
            found.append(IterationTiming(search[0], search[1], float(done.group(1)), float(done.group(2))))
            search = None
    return tuple(found), "Auto-refine converged" in log


#: Runs ``argv[2:]`` and writes its peak RSS (KiB, ``os.wait4``) to ``argv[1]``. A child's
#: ``ru_maxrss`` starts from the RSS of the process that forked it (Linux records the old
#: memory map's high-water mark at exec), so the steps are forked from this small process,
#: not from the benchmark, which holds a simulation's arrays.
_MEASURE = (
    "import os, subprocess, sys\n"
    "proc = subprocess.Popen(sys.argv[2:])\n"
    "_pid, status, usage = os.wait4(proc.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status) % 256)\n"
)


def run_step(cmd: list[str], log_file: Path) -> tuple[float, float]:
    """Run ``cmd`` (stdout+stderr to ``log_file``); its wall seconds and peak RSS in MiB.

    The peak RSS is that of the command's own process (``ru_maxrss`` from ``os.wait4``, KiB
    on Linux, forked from a small measuring process: see :data:`_MEASURE`). Raises
    ``SystemExit`` with the log's tail when the command fails.
    """
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    rss_file = log_file.with_suffix(".maxrss")
    start = time.perf_counter()
    with open(log_file, "w") as out:
        code = subprocess.run([sys.executable, "-c", _MEASURE, str(rss_file), *cmd], stdout=out,
                              stderr=subprocess.STDOUT, env=env).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        tail = log_file.read_text()[-3000:]
        raise SystemExit(f"{' '.join(cmd)} failed (exit {code}); end of {log_file}:\n{tail}")
    return seconds, int(rss_file.read_text()) / 1024.0


def simulate(dataset: Path, n_particles: int, *, small: bool) -> int:
    """Simulate the tutorial preset with about ``n_particles`` particles into ``dataset``
    (reused when its ``simulation.json`` is there); the number of particles simulated."""
    import json

    from processing.simulate import TUTORIAL, simulate_dataset, with_particle_count

    done = dataset / "simulation.json"
    if not done.exists():
        params = TUTORIAL
        if small:
            params = params.replace(n_tomograms=1, image_size=(640, 640), tomogram_size=(640, 640, 600))
        params = with_particle_count(params, n_particles)
        begin = time.perf_counter()
        simulate_dataset(params, dataset)
        print(f"simulated {n_particles} particles in {time.perf_counter() - begin:.1f} s: {dataset}", flush=True)
    return int(json.loads(done.read_text())["n_particles"])


def with_halves(dataset: Path, out: Path) -> Path:
    """particles.star of ``dataset`` with ``rlnRandomSubset`` (seed 1) written to ``out``."""
    from processing.io import ParticleSet

    particles = ParticleSet.read(dataset / "particles.star")
    particles.assign_random_subsets(1)
    particles.write(out)
    return out


def refine_argv(opt: Path, ref: Path, out: Path, *, tag: str, diameter: float, iterations: int = 1) -> list[str]:
    """3D auto-refine (at most ``iterations`` iterations) as the tutorial's preset for ``tag``
    (``"bin6"`` or ``"bin2"``: sessions/presets.py ``tutorial-<tag>-refine3d``) builds it, on 2
    threads, with the mask diameter of this form of the benchmark, and with one change:
    "Ref. map is on absolute greyscale? No" (``--firstiter_cc``).

    The preset is the tutorial's: C6, low-pass 60/20 Å, tilt prior 10°, 7.5° global then local
    searches from 1.8°, pool 30, and Yes for the greyscale of Reconstruct particle's map. On
    this preset's data that Yes scrambles the bin-2 poses in iteration 1, in RELION as in
    tomodash (2026-12-07, 200 particles: median pose change 35.8° and 36.0°; the same map
    divided by 64 to 256 gives 6°): Reconstruct particle's maps are brighter than the
    refinement's own, and these simulated particles are clean enough for that to decide the
    poses. The cross-correlation iteration does not depend on the map's scale.
    """
    from sessions.presets import find_preset

    params = find_preset(f"tutorial-{tag}-refine3d").params(None)
    params.in_optimisation, params.fn_ref = str(opt), str(ref)
    params.particle_diameter, params.nr_threads = diameter, 2
    params.ref_correct_greyscale = False
    return [*params.command_args(out, is_continue=False), "--random_seed", "1", "--auto_iter_max", str(iterations)]


def refined_particles(refine_dir: Path) -> Path | None:
    """The particles of the refinement in ``refine_dir``: its final ``run_data.star``, else
    its last iteration's; None when it wrote neither."""
    final = refine_dir / "run_data.star"
    if final.exists():
        return final
    iterations = sorted(refine_dir.glob("run_it[0-9][0-9][0-9]_data.star"))
    return iterations[-1] if iterations else None


def run_chain(dataset: Path, work: Path, n: int, geometry: Geometry, *, iterations: int = 1,
              steps: tuple[str, ...] = STEPS) -> list[StepResult]:
    """``steps`` (default all six) on one dataset; their results in :data:`STEPS` order. A step
    left out must have left its outputs in ``work`` (an earlier run with the same ``work``).
    With ``iterations`` > 1 the bin-2 extraction takes the bin-6 refinement's poses."""
    tomodash = str(BIN / "tomodash")
    tomograms = dataset / "tomograms.star"
    halves = with_halves(dataset, work / "particles_halves.star")
    results: list[StepResult] = []

    def step(name: str, args: list[str], output: Path, needed: Path) -> None:
        if name not in steps:
            later = STEPS[STEPS.index(name) + 1:]
            if any(s in steps for s in later) and not needed.exists():
                raise SystemExit(f"step {name} is not in --steps, and the later steps need {needed}: run it first "
                                 f"with the same --workdir")
            return
        shutil.rmtree(output, ignore_errors=True)
        output.mkdir(parents=True)
        log = work / f"{name}.log"
        seconds, rss = run_step([tomodash, *args], log)
        timings, converged = refine_iterations(log.read_text()) if name.startswith("refine") else ((), False)
        results.append(StepResult(name, n, seconds, rss, timings, converged))
        print(f"  {name:<17} {seconds:8.1f} s  {rss:8.0f} MB", flush=True)

    for tag, (binning, box, crop), diameter in (
        ("bin6", geometry.bin6, geometry.diameter6), ("bin2", geometry.bin2, geometry.diameter2),
    ):
        shape = ["--bin", str(binning), "--b", str(box), "--crop", str(crop), "--j", "2"]
        ex, rec, ref = work / f"Extract_{tag}", work / f"Reconstruct_{tag}", work / f"Refine_{tag}"
        source = halves
        if tag == "bin2" and iterations > 1:
            # the tutorial re-extracts at bin 2 from the bin-6 refinement
            source = refined_particles(work / "Refine_bin6")
            if source is None:
                raise SystemExit(f"no refined particles in {work / 'Refine_bin6'} for the bin-2 chain")
        step(f"extract_{tag}", ["extract", "--p", str(source), "--t", str(tomograms), "--o", f"{ex}/", "--stack2d",
                                "--float16", "--max_dose", "50", *shape], ex, ex / "optimisation_set.star")
        step(f"reconstruct_{tag}", ["reconstruct", "--p", str(ex / "particles.star"), "--t", str(tomograms),
                                    "--o", f"{rec}/", "--sym", "C6", *shape], rec, rec / "half1.mrc")
        # the tutorial refines bin 6 from the merged map and bin 2 from the bin-2 half1.mrc
        reference = rec / ("merged.mrc" if tag == "bin6" else "half1.mrc")
        step(f"refine_{tag}", ["refine", *refine_argv(ex / "optimisation_set.star", reference, ref, tag=tag,
                                                       diameter=diameter, iterations=iterations)],
             ref, ref)
    return results


def format_report(results: list[StepResult], *, cores: int) -> str:
    """The table, the growth ratios against the smallest count, the iterations of whole
    refinements and the tutorial projection."""
    lines = [f"{'step':<17} {'particles':>9} {'wall s':>9} {'s/particle':>11} {'peak RSS MB':>12}"]
    for r in results:
        lines.append(f"{r.step:<17} {r.particles:>9} {r.seconds:>9.2f} {r.seconds / r.particles:>11.5f} "
                     f"{r.peak_rss_mb:>12.0f}")
    counts = sorted({r.particles for r in results})
    by = {(r.step, r.particles): r for r in results}
    if len(counts) > 1:
        lines.append("")
        lines.append(f"growth against {counts[0]} particles (time ratio / particle ratio: 1.0 = linear; "
                     "RSS ratio: 1.0 = flat)")
        for name in STEPS:
            if any((name, n) not in by for n in counts):
                continue
            base = by[(name, counts[0])]
            parts = []
            for n in counts[1:]:
                r = by[(name, n)]
                ratio = n / counts[0]
                parts.append(f"x{ratio:.1f} particles: time x{r.seconds / base.seconds:.2f} "
                             f"({r.seconds / base.seconds / ratio:.2f} of linear), RSS x{r.peak_rss_mb / base.peak_rss_mb:.2f}")
            lines.append(f"  {name:<17} " + "; ".join(parts))
    largest = counts[-1]
    measured = [r for r in results if len(r.iterations) > 1]
    for r in measured:
        lines.append("")
        lines += refinement_report(r)
    lines.append("")
    lines.append(f"projection for the tutorial ({TUTORIAL_PARTICLES:,} particles) on this machine ({cores} cores), "
                 f"from the {largest}-particle figures:")
    for name, assumed in ASSUMED_ITERATIONS.items():
        tag = name[-4:]
        parts = []
        whole = by.get((name, largest))
        if whole is not None and len(whole.iterations) > 1:
            hours = projected_refinement_seconds(whole, TUTORIAL_PARTICLES) / 3600.0
            state = "converged" if whole.converged else "not converged: a lower bound"
            parts.append(f"refinement ~{hours:.1f} h from its {len(whole.iterations)} measured iterations ({state})")
        elif whole is not None:
            per = whole.seconds / largest
            parts.append(f"one iteration {per * TUTORIAL_PARTICLES / 3600.0:.2f} h, refinement ~"
                         f"{per * TUTORIAL_PARTICLES * assumed / 3600.0:.1f} h (iteration 1 x {assumed} iterations "
                         "assumed: a lower bound, later iterations cost more; see --refine-iterations)")
        chain = [by.get((f"{s}_{tag}", largest)) for s in ("extract", "reconstruct")]
        if all(chain):
            steps = sum(r.seconds / largest for r in chain)
            parts.append(f"extract + reconstruct {steps * TUTORIAL_PARTICLES / 3600.0:.2f} h")
        if parts:
            lines.append(f"  {tag}: " + "; ".join(parts))
    return "\n".join(lines)


def projected_refinement_seconds(result: StepResult, particles: int) -> float:
    """A whole refinement's seconds for ``particles``: each iteration's E-step scaled by the
    particle ratio (it is linear in them), the rest of the measured wall time (M-step, I/O,
    accuracy estimate, start-up: fixed per iteration) as measured."""
    expectation = sum(t.expectation_s for t in result.iterations)
    return expectation * particles / result.particles + (result.seconds - expectation)


def refinement_report(result: StepResult) -> list[str]:
    """A whole refinement's iterations: search, E-step (s and ms/particle), the rest, and each
    iteration's E-step against iteration 1's."""
    first = result.iterations[0].expectation_s
    lines = [f"{result.step}, {result.particles} particles, {len(result.iterations)} iterations "
             f"({'converged' if result.converged else 'stopped at --refine-iterations'}), wall {result.seconds:.1f} s:",
             f"  {'iteration':>9}  {'E-step s':>9}  {'ms/particle':>11}  {'E / E(it 1)':>11}  {'M-step s':>8}  search"]
    for t in result.iterations:
        lines.append(f"  {t.iteration:>9}  {t.expectation_s:>9.1f}  {1000 * t.expectation_s / result.particles:>11.2f}  "
                     f"{t.expectation_s / first:>11.2f}  {t.maximisation_s:>8.1f}  {t.search}")
    expectation = sum(t.expectation_s for t in result.iterations)
    lines.append(f"  all iterations: E-step {expectation:.1f} s = {expectation / first:.1f} x iteration 1's; "
                 f"the rest (M-step, I/O, start-up) {result.seconds - expectation:.1f} s")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--particles", type=int, nargs="+", default=None,
                        help="particle counts (default 1000 3000 10000; --small: 30 90)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keeps the simulated datasets between runs (default: a temporary directory, removed)")
    parser.add_argument("--refine-iterations", type=int, default=1,
                        help="at most this many iterations per refinement (default 1; e.g. 50: to convergence)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS),
                        help="run these steps only (the others' outputs must be in --workdir)")
    parser.add_argument("--small", action="store_true",
                        help="CI form: one tomogram of a 640² field, boxes 48/32 and 64/48, 30 and 90 particles")
    args = parser.parse_args(argv)
    counts = args.particles or ([30, 90] if args.small else [1000, 3000, 10000])
    geometry = SMALL if args.small else FULL
    work = args.workdir or Path(tempfile.mkdtemp(prefix="scale_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        results: list[StepResult] = []
        for n in sorted(counts):
            form = "small" if args.small else "full"
            dataset = work / f"tutorial_{form}_{n}"
            simulated = simulate(dataset, n, small=args.small)
            run_dir = work / f"run_{form}_{n}"
            run_dir.mkdir(exist_ok=True)
            print(f"{simulated} particles ({dataset}):", flush=True)
            results += run_chain(dataset, run_dir, simulated, geometry, iterations=args.refine_iterations,
                                 steps=tuple(args.steps))
        print()
        print(format_report(results, cores=os.cpu_count() or 1))
        if args.small:
            print("\n(small form: not a projection of anything; full run: .venv/bin/python benchmarks/scale_bench.py "
                  "--workdir /tmp/scale_bench --particles 1000 3000 10000)")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
