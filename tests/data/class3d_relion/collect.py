"""Copy RELION's 3D-classification outputs into this fixture (see ORIGIN.md).

    python collect.py DATASET_DIR   (RELION ran in DATASET_DIR/class/run)

Writes run.out (progress bars removed), every iteration's model/optimiser/sampling/data STAR
files (data.star cut to a few columns if it is over 1 MB), the class maps (every iteration's
if the whole stays under 2 MB), files.txt (every file RELION wrote, with sizes), decoys.txt
(the planted decoys' names), and prints the per-iteration decoy separation table of ORIGIN.md.
"""
import re
import shutil
import sys
from pathlib import Path

import starfile

from processing.simulate import planted_decoys

HERE = Path(__file__).resolve().parent
KEEP_COLUMNS = ["rlnTomoParticleName", "rlnClassNumber", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
                "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst", "rlnMaxValueProbDistribution",
                "rlnLogLikeliContribution", "rlnNrOfSignificantSamples", "rlnNormCorrection", "rlnGroupNumber"]
PROGRESS = re.compile(r' *(?:[\d.]+|\?+)/ *(?:[\d.]+|\?+) (?:sec|min|hrs) \.*~~\(,_,">(?: yum!| *\[?o*\]?)?')

dataset = Path(sys.argv[1]).resolve()
run = dataset / "class"
files = sorted(p for p in run.rglob("*") if p.is_file() and p.name not in ("done.txt",))
(HERE / "files.txt").write_text("".join(f"{p.relative_to(run)}\t{p.stat().st_size}\n" for p in files))

text = PROGRESS.sub("", (run / "run.out").read_text())
(HERE / "run.out").write_text("".join(line + "\n" for line in text.splitlines() if line.strip()))

iterations = sorted({int(m.group(1)) for p in files if (m := re.match(r"run_it(\d{3})_model\.star$", p.name))})
for it in iterations:
    for kind in ("model", "optimiser", "sampling"):
        shutil.copy(run / f"run_it{it:03d}_{kind}.star", HERE / f"run_it{it:03d}_{kind}.star")
    data = run / f"run_it{it:03d}_data.star"
    if data.stat().st_size < 1_000_000:
        shutil.copy(data, HERE / data.name)
    else:
        blocks = starfile.read(data, always_dict=True)
        blocks["particles"] = blocks["particles"][[c for c in KEEP_COLUMNS if c in blocks["particles"]]]
        starfile.write(blocks, HERE / data.name)
# every iteration's class maps while the fixture stays under 2 MB, else the last iteration's
maps = sorted(run.glob("run_it*_class*.mrc"))
kept = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file())
if kept + sum(p.stat().st_size for p in maps) > 2_000_000:
    maps = sorted(run.glob(f"run_it{iterations[-1]:03d}_class*.mrc"))
for mrc in maps:
    shutil.copy(mrc, HERE / mrc.name)

decoys = planted_decoys(dataset)
(HERE / "decoys.txt").write_text("".join(f"{n}\n" for n in sorted(decoys)))

print("| iteration | decoys in class 1 / 2 | good particles in class 1 / 2 | rlnClassDistribution 1 / 2 |")
print("|---|---|---|---|")
for it in iterations:
    parts = starfile.read(HERE / f"run_it{it:03d}_data.star", always_dict=True)["particles"]
    model = starfile.read(HERE / f"run_it{it:03d}_model.star", always_dict=True)["model_classes"]
    is_decoy = parts["rlnTomoParticleName"].isin(decoys)
    k = len(model)
    cls = parts["rlnClassNumber"] if "rlnClassNumber" in parts else None
    def share(mask):
        if cls is None:
            return "-"
        if (cls == 0).all():
            return "all in class 0"
        n = int(mask.sum())
        return " / ".join(f"{(cls[mask] == c).sum() / n:.2f}" for c in range(1, k + 1)) + f" (of {n})"
    dist = " / ".join(f"{v:.4f}" for v in model["rlnClassDistribution"])
    print(f"| {it} | {share(is_decoy)} | {share(~is_decoy)} | {dist} |")
