"""A job for the dashboard benchmark: replays a finished 3D auto-refine's per-iteration files
(model/sampling STAR files and half maps, RELION format) as a new run, one iteration every few
seconds, with progress.json and run.out as the real engine writes them. Run as
``python -m dashboard_replay_job --job-dir DIR`` with benchmarks/ on PYTHONPATH."""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import ClassVar

import param

from processing.io.atomic import atomic_write
from processing.io.jobstar import JobStar
from processing.jobs.base import JobParameters
from processing.jobs.lifecycle import check_abort, job_lifecycle


class ReplayParameters(JobParameters):
    """Replay the iterations of a finished refine run."""

    job_type_label: ClassVar[str] = "relion.external"
    process_dir: ClassVar[str] = "External"
    tabs: ClassVar[tuple[str, ...]] = ("Params", "Running")

    template = param.String("", label="Finished refine job:", doc="Directory of a finished 3D auto-refine.",
                            metadata={"tab": "Params", "var": "template"})
    iterations = param.Integer(100, bounds=(1, None), label="Iterations:", doc="How many iterations to write.",
                               metadata={"tab": "Params", "var": "iterations"})
    seconds = param.Number(5.0, bounds=(0.1, None), label="Seconds per iteration:", doc="Pace.",
                           metadata={"tab": "Params", "var": "seconds"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--job-dir", required=True)
    job_dir = Path(parser.parse_args(argv).job_dir)
    params = ReplayParameters.from_job_options(JobStar.read(job_dir / "job.star").options)
    template = Path(params.template)
    its = sorted({int(p.name[6:9]) for p in template.glob("run_it[0-9][0-9][0-9]_half1_model.star")})
    started = time.time()
    with job_lifecycle(job_dir):
        for it in range(params.iterations):
            source = its[min(it, len(its) - 1)] if it < len(its) else its[1 + (it - 1) % (len(its) - 1)]
            total, steps = 50, 10
            for step in range(1, steps + 1):
                time.sleep(params.seconds / steps)
                check_abort(job_dir)
                with atomic_write(job_dir / "progress.json") as fh:
                    json.dump({"iteration": it, "phase": "expectation", "particles_done": step * total // steps,
                               "particles_total": total, "estimated_seconds_left_in_phase":
                                   params.seconds * (steps - step) / steps, "started": started,
                               "updated": time.time()}, fh)
            for kind in ("half1_model.star", "half2_model.star", "sampling.star", "half1_class001.mrc",
                         "half2_class001.mrc"):
                src = template / f"run_it{source:03d}_{kind}"
                if src.exists():
                    tmp = job_dir / f".run_it{it:03d}_{kind}.tmp"
                    shutil.copyfile(src, tmp)
                    tmp.rename(job_dir / f"run_it{it:03d}_{kind}")
            print(f"Iteration {it}: replayed from {src.parent.name} iteration {source}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
