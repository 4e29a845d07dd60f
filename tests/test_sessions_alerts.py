"""Alerts (sessions.alerts): each job that ends or stalls is announced once, and a webhook set in
the session's settings receives the alert as JSON over real HTTP."""
from __future__ import annotations

import http.server
import json
import os
import threading
import time

from processing.jobs.extract_params import ExtractParameters
from sessions import create_demo_session
from sessions.alerts import AlertTracker


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"type": self.headers["Content-Type"], **json.loads(body)})
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_alerts_once_per_event_and_the_webhook_gets_them(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        session = create_demo_session(tmp_path / "s", preset="test")
        session.update_settings(webhook_url=f"http://127.0.0.1:{server.server_port}/hook", stall_minutes=1)
        jobs = [session.create_job("extract", ExtractParameters(
            in_optimisation="Import/job001/optimisation_set.star", binning=1, box_size=48, crop_size=32))
            for _ in range(2)]
        tracker = AlertTracker(session.root, lambda: session.settings)
        assert tracker.check(session.jobs()) == []                    # the first look only learns
        for job in jobs:
            session.set_status(job.name, "Running")
        assert tracker.check(session.jobs()) == []
        session.set_status(jobs[0].name, "Succeeded")
        session.set_status(jobs[1].name, "Failed")
        new = tracker.check(session.jobs())
        assert [(a.job, a.event, a.text) for a in new] == [
            (jobs[0].name, "succeeded", f"{jobs[0].name.rstrip('/')} succeeded"),
            (jobs[1].name, "failed", f"{jobs[1].name.rstrip('/')} failed")]
        assert tracker.check(session.jobs()) == []                    # said once
        # A running job whose files have not changed for the stall time: one alert, again only
        # after it has shown activity in between.
        session.set_status(jobs[1].name, "Running")
        tracker.check(session.jobs())
        old = time.time() - 120
        for path in [jobs[1].path, *jobs[1].path.iterdir()]:
            os.utime(path, (old, old))
        stalled = tracker.check(session.jobs())
        assert [(a.job, a.event) for a in stalled] == [(jobs[1].name, "stalled")]
        assert "has written nothing for 2 min" in stalled[0].text
        assert tracker.check(session.jobs()) == []
        (jobs[1].path / "progress.json").write_text("{}")
        assert tracker.check(session.jobs()) == []
        assert [a.seq for a in tracker.since(1)] == [2, 3]
        deadline = time.monotonic() + 10
        while len(_Receiver.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        got = sorted(_Receiver.received, key=lambda r: r["seq"])
        assert [(r["job"], r["event"], r["type"]) for r in got] == [
            (jobs[0].name, "succeeded", "application/json"), (jobs[1].name, "failed", "application/json"),
            (jobs[1].name, "stalled", "application/json")]
        assert got[0]["session"] == str(session.root)
    finally:
        server.shutdown()


def test_demo_says_when_the_pixel_size_limits_the_refinement():
    """RELION's converged TEST run ends with an FSC of 0.66 at Nyquist: the demo's line says the
    pixel size limits it instead of 'FSC 0.143'."""
    from pathlib import Path

    from sessions.demo import refine_summary

    line = refine_summary(Path(__file__).parent / "data" / "refine_test_relion" / "run_model.star")
    assert line.startswith("3D auto-refine converged at 26.18 Å, limited by the pixel size (Nyquist 24.00 Å")
