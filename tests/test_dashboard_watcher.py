"""The shared session watcher and the file readers (dashboard.watcher, dashboard.readers)."""
from __future__ import annotations

import os
import time

import numpy as np

from dashboard import readers
from dashboard.watcher import SessionWatcher, forget_watchers, watcher_for
from sessions import Session


def test_one_watcher_per_directory(tmp_path):
    forget_watchers()
    Session.create(tmp_path / "s")
    a = watcher_for(tmp_path / "s")
    b = watcher_for(str(tmp_path / "s") + "/")
    assert a is b


def test_versions_move_only_when_files_change_and_files_are_parsed_once(tmp_path):
    from processing.jobs.extract_params import ExtractParameters
    from sessions import create_demo_session

    session = create_demo_session(tmp_path / "s", preset="test")
    w = SessionWatcher(session.root, interval=0.0)
    v_jobs = w.jobs_version
    info = session.create_job("extract", ExtractParameters(in_optimisation="Import/job001/optimisation_set.star",
                                                           binning=1, box_size=48, crop_size=32))
    w.poll(force=True)
    assert w.jobs_version == v_jobs + 1
    assert w.job(info.name).status == "Scheduled"
    w.want(info.name)
    v = w.job_version(info.name)
    w.poll(force=True)
    assert w.job_version(info.name) == v                      # nothing changed
    (info.path / "progress.json").write_text('{"iteration": 1, "phase": "expectation"}')
    w.poll(force=True)
    assert w.job_version(info.name) == v + 1
    assert "progress.json" in w.listing(info.name)
    reads = w.cache.reads
    for _ in range(20):                                       # twenty viewers, one parse
        assert w.progress(w.job(info.name))["iteration"] == 1
    assert w.cache.reads == reads + 1
    time.sleep(0.01)
    (info.path / "progress.json").write_text('{"iteration": 2, "phase": "expectation"}')
    os.utime(info.path / "progress.json", ns=(time.time_ns() + 10**9,) * 2)
    assert w.progress(w.job(info.name))["iteration"] == 2


def test_tail_and_slices(tmp_path):
    log = tmp_path / "run.out"
    log.write_text("".join(f"line {i}\n" for i in range(500)) + "50%\r100%\n")
    tail = readers.tail_text(log, 3)
    assert tail.splitlines() == ["line 498", "line 499", "100%"]
    vol = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    s = readers.orthoslices(vol)
    assert s["XY"].shape == (5, 6) and s["XZ"].shape == (4, 6) and s["YZ"].shape == (4, 5)
    assert np.array_equal(s["XY"], vol[2])
    assert np.array_equal(readers.orthoslices(vol, x=0)["YZ"], vol[:, :, 0])


def test_fsc_resolution_crossing():
    curve = readers.FscCurve(np.array([0.0, 0.01, 0.02, 0.03]), np.array([1.0, 0.9, 0.3, 0.0]))
    # 0.5 is crossed between 0.01 (0.9) and 0.02 (0.3): at 0.01 + 0.4/0.6*0.01
    assert abs(curve.resolution_at(0.5) - 1 / (0.01 + 0.4 / 0.6 * 0.01)) < 1e-9


def test_job_model_follows_the_files_and_checks_roles(tmp_path):
    """The monitor's view-model without a browser: progress and logs from the job's files,
    Abort/Continue offered by status and role, a viewer's abort refused with a message."""
    from dashboard import auth
    from dashboard.viewmodels import JobModel
    from processing.jobs.extract_params import ExtractParameters
    from sessions import create_demo_session

    session = create_demo_session(tmp_path / "s", preset="test")
    info = session.create_job("extract", ExtractParameters(in_optimisation="Import/job001/optimisation_set.star",
                                                           binning=1, box_size=48, crop_size=32))

    class Context:   # what a page's context offers the model
        def __init__(self, identity):
            self.watcher = SessionWatcher(session.root, interval=0.0)
            self.identity = identity
            self.session, self.session_key = session, "s"

        def require(self, action):
            auth.require(self.identity, auth.OPERATOR, action)

    operator = JobModel(Context(auth.LOCAL_OPERATOR), info.name)
    assert operator.kind == "extract" and operator.status == "Scheduled" and operator.headline is None
    assert not operator.can_abort and not operator.can_continue
    session.set_status(info.name, "Running")
    (info.path / "progress.json").write_text('{"phase": "extract", "particles_done": 7, "particles_total": 35}')
    operator._watcher.poll(force=True)
    operator.tick()
    assert operator.progress == 20 and operator.progress_text == "extract 7/35 particles"
    assert operator.can_abort and not operator.can_continue
    operator.ask_abort()                                       # the first press only asks
    assert operator.confirming_abort and operator.message == ("", "")
    operator.cancel_abort()
    assert not operator.confirming_abort
    operator.ask_abort()
    (info.path / "run.out").write_text("extracting\n")
    session.set_status(info.name, "Failed")
    operator._watcher.poll(force=True)
    operator.tick()
    assert operator.log_out.strip() == "extracting"
    assert operator.status == "Failed" and operator.progress_colour == "danger"
    assert not operator.confirming_abort                       # nothing left to abort
    assert operator.can_continue and not operator.can_abort
    viewer = JobModel(Context(auth.Identity("guest", auth.VIEWER)), info.name)
    assert viewer.read_only and not viewer.can_continue
    viewer.abort()
    assert viewer.message[0] == "error" and "abort" in viewer.message[1]


def test_sessions_model_lists_and_creates_sessions(tmp_path):
    """The sessions page's view-model: a row per served session; creation refused for a viewer,
    done in a worker thread for an operator, and the new session served and listed."""
    from dashboard import auth
    from dashboard.context import configure
    from dashboard.viewmodels import SessionsModel

    forget_watchers()
    Session.create(tmp_path / "first", title="First")
    configure([tmp_path / "first"])

    class Context:
        def __init__(self, identity):
            self.identity = identity

        def require(self, action):
            auth.require(self.identity, auth.OPERATOR, action)

    viewer = SessionsModel(Context(auth.Identity("guest", auth.VIEWER)))
    assert [(r["title"], r["jobs"]) for r in viewer.rows] == [("First", 0)]
    viewer.create(tmp_path / "second", demo_preset="test")
    assert viewer.message[0] == "error" and not (tmp_path / "second").exists()
    operator = SessionsModel(Context(auth.LOCAL_OPERATOR))
    operator.create(tmp_path / "second", demo_preset="test", title="Second")
    assert operator.creating
    deadline = time.monotonic() + 120
    while operator.creating and time.monotonic() < deadline:
        time.sleep(0.2)
        operator.tick()
    assert operator.message == ("ok", "Created:") and operator.created_key == "second"
    assert [(r["title"], r["jobs"]) for r in operator.rows] == [("First", 0), ("Second", 1)]
