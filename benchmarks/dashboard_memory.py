"""Server memory with 20 viewers watching a running job.

    .venv/bin/python benchmarks/dashboard_memory.py --minutes 10 --viewers 20

1. Makes a session from the simulator's ``test`` dataset and runs a real Extract, Reconstruct
   and a 3-iteration 3D auto-refine (the template, ~30 s).
2. Starts ``tomodash serve`` on it (a child process: its RSS is what is measured).
3. Launches a job that replays the refine's per-iteration files as a new run, one iteration
   every ``--seconds-per-iteration`` s (so the 20 viewers' plots keep growing). The job runs
   until sampling ends (then it is aborted); each sample checks that it is still running, and
   the benchmark fails rather than report figures taken after it stopped.
4. Opens ``--viewers`` pages of that job's monitor in headless Chromium, and samples the
   server's RSS (``/proc/PID/status`` VmRSS) and the latency of an HTTP request to the server
   every 10 s.

Prints the samples and the growth of the RSS from the first sample after all viewers connected
(plus a minute of warm-up, or a tenth of the run if shorter) to the end; target: < 50 MB over
10 minutes.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def make_session(root: Path):
    from processing.jobs.extract_params import ExtractParameters
    from processing.jobs.reconstruct_params import ReconstructParameters
    from processing.jobs.refine3d_params import Refine3DParameters
    from sessions import create_demo_session, runner

    session = create_demo_session(root, preset="test")

    def run(job_type, params):
        info = runner.run_job(session, job_type, params)
        while runner.reconcile(session, info.name) == "Running":
            time.sleep(0.3)
        return info

    ex = run("extract", ExtractParameters(in_optimisation="Import/job001/optimisation_set.star", binning=1,
                                          box_size=48, crop_size=32, do_stack2d=True, do_float16=True, nr_threads=2))
    rc = run("reconstruct", ReconstructParameters(in_optimisation=f"{ex.name}optimisation_set.star", binning=1,
                                                  box_size=48, crop_size=32, sym_name="C6", nr_threads=2))
    rf = run("refine3d", Refine3DParameters(in_optimisation=f"{rc.name}optimisation_set.star",
                                            fn_ref=f"{rc.name}merged.mrc", sym_name="C6", particle_diameter=150,
                                            ini_high=40, ref_correct_greyscale=True, nr_threads=2,
                                            other_args="--auto_iter_max 3"))
    return session, rf


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--seconds-per-iteration", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from dashboard_replay_job import ReplayParameters
    from sessions import runner
    from sessions.jobtypes import JobType, register_job_type

    tmp = Path(tempfile.mkdtemp(prefix="tomodash-bench-"))
    t0 = time.time()
    session, template = make_session(tmp / "session")
    print(f"template refine ready in {time.time() - t0:.0f} s: {template.name}", flush=True)

    from ui.conftest import free_port

    port = free_port()
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "dashboard.cli", "serve", str(session.root), "--port", str(port)],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://localhost:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(base, timeout=5)
            break
        except Exception:
            time.sleep(0.3)

    register_job_type(JobType("replay", ReplayParameters, "dashboard_replay_job", uses_mpi=False), replace=True)
    os.environ["PYTHONPATH"] = str(HERE) + os.pathsep + os.environ.get("PYTHONPATH", "")
    # The replay must outlive the sampling, however long the viewers take to connect (minutes on a
    # busy machine): it is sized far beyond the run and aborted in `finally` once sampling ends.
    iterations = 1_000_000
    job = runner.run_job(session, "replay", ReplayParameters(template=str(template.path), iterations=iterations,
                                                             seconds=args.seconds_per_iteration))
    url = f"{base}/job?session={session.root.name}&job={job.name}"
    samples = []
    ended_early = ""
    try:
        # A monitor opened before the job's first iteration file shows a generic job (no FSC
        # plots): the viewers connect once the replay has written one.
        first = session.job(job.name).path / "run_it000_half1_model.star"
        deadline = time.time() + 120
        while not first.exists():
            status = runner.reconcile(session, job.name)
            if time.time() > deadline or status != "Running":
                ended_early = f"the replayed job wrote no iteration in 120 s ({status})"
                raise RuntimeError(ended_early)
            time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            pages = []
            for _ in range(args.viewers):
                page = context.new_page()
                page.goto(url)
                pages.append(page)
            for page in pages:
                page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=120_000)
            print(f"{len(pages)} viewers connected; sampling for {args.minutes:g} min", flush=True)
            start = time.time()
            end = start + args.minutes * 60
            while True:
                t = time.time()
                h0 = time.perf_counter()
                urllib.request.urlopen(f"{base}/", timeout=30).read()   # a page: answered by the busy server
                latency = (time.perf_counter() - h0) * 1000
                curves = pages[-1].evaluate("() => { const s = Bokeh.documents[0].get_model_by_name('fsc_source');"
                                            " return s ? s.data.xs.length : -1 }")
                status = runner.reconcile(session, job.name)
                if status != "Running":
                    # Without a live job the viewers watch a finished page: the figures would not be
                    # the ones this benchmark is for.
                    ended_early = f"the replayed job ended ({status}) at t={t - start:.0f} s, before sampling did"
                    print(f"error: {ended_early}", flush=True)
                    break
                samples.append((t - start, rss_mb(server.pid), latency, curves))
                print(f"t={t - start:6.0f} s  server RSS {samples[-1][1]:7.1f} MB  HTTP {latency:6.1f} ms  "
                      f"FSC curves on a viewer: {curves}  job {status}", flush=True)
                if t >= end:
                    break
                time.sleep(max(0.0, min(args.interval, end - time.time())))
            browser.close()
    finally:
        try:
            runner.abort(session, job.name, wait=True, grace=5, term_grace=2)
        except Exception:
            pass
        server.terminate()
        server.wait(10)
        log.close()
    if ended_early or not samples:
        print(f"no valid result: {ended_early or 'no samples'}")
        return 1
    warm = min(60.0, args.minutes * 6)
    after = [s for s in samples if s[0] >= warm] or samples
    first, last = after[0], samples[-1]
    growth = last[1] - first[1]
    per10 = growth / max((last[0] - first[0]) / 600.0, 1e-9)
    print(f"\nserver RSS: {first[1]:.1f} MB at t={first[0]:.0f} s -> {last[1]:.1f} MB at t={last[0]:.0f} s: "
          f"growth {growth:+.1f} MB ({per10:+.1f} MB per 10 min, linear extrapolation); "
          f"max {max(s[1] for s in samples):.1f} MB; HTTP latency median "
          f"{sorted(s[2] for s in samples)[len(samples) // 2]:.1f} ms, max {max(s[2] for s in samples):.1f} ms; "
          f"{args.viewers} viewers, {samples[-1][3]} FSC curves at the end")
    print(f"target: < 50 MB growth over 10 minutes -> {'OK' if per10 < 50 else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
