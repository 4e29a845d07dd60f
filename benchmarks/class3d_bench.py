"""3D classification against 3D auto-refine on the same particles: time per iteration.

The demo particles at bin 3 (refine_bench.py's preparation and settings), three iterations each
in this process (1 process x 2 threads): iteration 1 is the cross-correlation iteration (one
reference), iteration 2 the first that marginalises (for K > 1 the seed iteration: one random
class per particle), iteration 3 marginalises over all K classes. Classification keeps HEALPix
order 2; the auto-refine's sampling and image size are printed beside its times, since it may
refine them after iteration 2.
Baseline: 3D auto-refine (each particle against its half set's one reference). Then 3D
classification with K = 1, 2 and 3 (each particle against every class; in the seed iteration
of K > 1, against one random class).

Printed: per run and iteration, the E-step seconds, the image size and sampling, and the ratio
to the auto-refine's same iteration (the machines are noisy; only ratios from one run count).

With ``--separation`` it instead classifies the demo particles with 30 % planted decoys (picks
on empty membrane) at bin 3 into K = 2 classes (8 iterations, one process x 2 threads) and
prints, per iteration, how many decoys and good particles each class holds; with
``--refine-selected`` also 3D auto-refine of the good class and of all particles (the same
settings, to convergence) and both final resolutions and gold-standard FSCs near Nyquist.

Usage: python benchmarks/class3d_bench.py [--workdir DIR] [--classes 1 2 3]
       python benchmarks/class3d_bench.py --separation [--refine-selected] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from refine_bench import extract_and_reconstruct, prepare  # noqa: E402


def common_argv(opt: Path, ref: Path, out: Path) -> list[str]:
    return ["--o", f"{out}/run", "--ios", str(opt), "--ref", str(ref), "--trust_ref_size", "--ini_high", "60",
            "--dont_combine_weights_via_disc", "--pool", "30", "--pad", "2", "--ctf", "--particle_diameter", "250",
            "--flatten_solvent", "--zero_mask", "--oversampling", "1", "--healpix_order", "2", "--offset_range", "4",
            "--offset_step", "2", "--sym", "C6", "--norm", "--scale", "--sigma_tilt", "10", "--random_seed", "1",
            "--firstiter_cc", "--j", "2"]


def timed_run(argv: list[str], out: Path) -> list[dict]:
    from processing.refine.driver import RefineRun
    from processing.refine.flags import parse_refine_args

    out.mkdir(parents=True, exist_ok=True)
    run = RefineRun(parse_refine_args(argv), log=lambda *a: None)
    state, first = run.start()
    rows = []
    for iteration in (1, 2, 3):
        begin = time.perf_counter()
        run.iterate(state, iteration, cc=iteration == 1, final=False)
        c, s = state.counters, state.sampling
        rows.append({"iteration": iteration, "estep": run.timings["expectation"], "total": time.perf_counter() - begin,
                     "size": c.current_size, "coarse": c.coarse_size, "healpix": s.healpix_order})
    return rows


def separation(work: Path, *, refine_selected: bool) -> None:
    """Planted decoys against the classes of a K = 2 classification of the demo particles."""
    import dataclasses

    import starfile

    from processing.io import OptimisationSet
    from processing.refine.driver import RefineRun
    from processing.refine.flags import parse_refine_args
    from processing.simulate import planted_decoys, simulate_dataset
    from processing.simulate.presets import DEMO

    data = work / "demo_decoys"
    if not (data / "particles.star").exists():
        simulate_dataset(dataclasses.replace(DEMO, decoy_fraction=0.3), data)
    opt, ref = extract_and_reconstruct(data / "particles.star", data / "tomograms.star", work / "dex", work / "drec")
    out = work / f"separation_{int(time.time())}"
    out.mkdir()
    iterations = 8
    begin = time.perf_counter()
    RefineRun(parse_refine_args([*common_argv(opt, ref, out), "--K", "2", "--iter", str(iterations),
                                 "--tau2_fudge", "4"]), log=lambda *a: None).run()
    seconds = time.perf_counter() - begin
    decoys = planted_decoys(data)
    print(f"{len(decoys)} planted decoys among {len(starfile.read(data / 'particles.star')['particles'])} picks; "
          f"K = 2, {iterations} iterations in {seconds:.0f} s ({seconds / iterations:.1f} s per iteration)")
    print("iteration   class 1: decoys / good   class 2: decoys / good")
    last = None
    for it in range(1, iterations + 1):
        table = starfile.read(out / f"run_it{it:03d}_data.star")["particles"]
        bad = table["rlnTomoParticleName"].isin(decoys)
        counts = [(int(((table["rlnClassNumber"] == k) & bad).sum()), int(((table["rlnClassNumber"] == k) & ~bad).sum()))
                  for k in (1, 2)]
        print(f"{it:9d}   {counts[0][0]:7d} / {counts[0][1]:4d}        {counts[1][0]:7d} / {counts[1][1]:4d}")
        last = table
    if not refine_selected:
        return
    good_class = int(last.groupby("rlnClassNumber")["rlnTomoParticleName"].apply(
        lambda names: (~names.isin(decoys)).mean()).idxmax())
    names = set(last.loc[last["rlnClassNumber"] == good_class, "rlnTomoParticleName"])
    blocks = starfile.read(work / "dex" / "particles.star", always_dict=True)
    blocks["particles"] = blocks["particles"][blocks["particles"]["rlnTomoParticleName"].isin(names)]
    starfile.write(blocks, work / "dex" / "particles_selected.star")
    base = OptimisationSet.read(opt)
    OptimisationSet(particles=str(work / "dex" / "particles_selected.star"),
                    tomograms=base.tomograms).write(work / "dex" / "optimisation_set_selected.star")
    for name, ios in (("all particles", opt), (f"class {good_class}", work / "dex" / "optimisation_set_selected.star")):
        root = work / f"refine_{name.replace(' ', '_')}_{int(time.time())}"
        root.mkdir()
        argv = [*common_argv(ios, ref, root), "--auto_refine", "--split_random_halves", "--low_resol_join_halves",
                "40", "--auto_local_healpix_order", "4", "--auto_ignore_angles", "--auto_resol_angles"]
        RefineRun(parse_refine_args(argv), log=lambda *a: None).run()
        model = starfile.read(root / "run_model.star")
        fsc = model["model_class_1"]["rlnGoldStandardFsc"].to_numpy()
        print(f"3D auto-refine of {name}: {float(model['model_general']['rlnCurrentResolution']):.2f} Å; "
              f"FSC over the last 5 shells before Nyquist {' '.join(f'{v:.3f}' for v in fsc[-6:-1])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--classes", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--separation", action="store_true")
    parser.add_argument("--refine-selected", action="store_true")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="class3d_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.separation:
        separation(work, refine_selected=args.refine_selected)
        return
    opt, ref = prepare(work)
    stamp = int(time.time())
    runs = {"3D auto-refine": timed_run([*common_argv(opt, ref, work / f"refine_{stamp}"), "--auto_refine",
                                         "--split_random_halves", "--low_resol_join_halves", "40",
                                         "--auto_local_healpix_order", "4", "--auto_iter_max", "3"],
                                        work / f"refine_{stamp}")}
    for k in args.classes:
        out = work / f"class{k}_{stamp}"
        runs[f"3D classification K={k}"] = timed_run(
            [*common_argv(opt, ref, out), "--K", str(k), "--iter", "3", "--tau2_fudge", "4"], out)
    baseline = runs["3D auto-refine"]
    one_class = runs.get("3D classification K=1")
    print("run                          iteration  E-step [s]  x auto-refine  x K=1  image (coarse)  HEALPix")
    for name, rows in runs.items():
        for i, (row, base) in enumerate(zip(rows, baseline)):
            per_k = f"{row['estep'] / one_class[i]['estep']:5.2f}" if one_class and "K=" in name else "    -"
            print(f"{name:28s} {row['iteration']:9d}  {row['estep']:10.1f}  {row['estep'] / base['estep']:13.2f}  "
                  f"{per_k}  {row['size']:5d} ({row['coarse']:3d})  {row['healpix']:7d}")


if __name__ == "__main__":
    main()
