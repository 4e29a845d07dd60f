"""The 3D classification monitor without a browser: its readers on a format-correct
classification output (tests/class3d_fake.py), the occupancy and resolution plots' data, the
class maps per iteration, and Subset selection by class from the monitor (a Select job made
through the runner, as the job builder makes any job). The browser test
(tests/ui/test_class3d_browser.py) checks the page shows them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dashboard import auth
from dashboard.class3d_results import (class3d_forecast, class3d_headline, classification_iterations,
                                       format_resolution, is_classification_listing, read_class_iteration)
from dashboard.plots import class_data
from processing.errors import InputError
from processing.io.jobstar import JobStar
from processing.io.particles import ParticleSet
from processing.jobs.class3d_params import Class3DParameters
from processing.select import select_classes
from sessions import Session

from class3d_fake import write_fake_class3d
from test_dashboard_viewmodels import Context


@pytest.fixture(scope="module")
def classified(tmp_path_factory):
    session = Session.create(tmp_path_factory.mktemp("c3") / "s")
    for name in ("Select/job001/optimisation_set.star", "Refine3D/job002/run_class001.mrc"):
        (session.root / name).parent.mkdir(parents=True, exist_ok=True)
        (session.root / name).write_text("x")
    info = session.create_job("class3d", Class3DParameters(
        in_optimisation=str(session.root / "Select/job001/optimisation_set.star"),
        fn_ref=str(session.root / "Refine3D/job002/run_class001.mrc"), nr_classes=3, nr_iter=3))
    fake = write_fake_class3d(session.root, info.name)
    session.set_status(info.name, "Succeeded", touch_markers=True)
    return session, info, fake


def test_readers_give_each_class_occupancy_and_resolution(classified):
    _, info, fake = classified
    listing = sorted(p.name for p in info.path.iterdir())
    assert classification_iterations(listing) == [0, 1, 2, 3]
    assert is_classification_listing(listing) and not is_classification_listing(listing + ["run_it001_half1_model.star"])
    for it in fake.iterations:
        found = read_class_iteration(info.path, it)
        assert found.iteration == it and found.classes == [1, 2, 3]
        assert np.allclose(found.distribution, fake.distribution[it], atol=1e-6)
        assert np.allclose(found.class_resolution, fake.resolution[it])
        assert found.maps == tuple(f"run_it{it:03d}_class{k:03d}.mrc" for k in (1, 2, 3))
        assert (found.pixel_size, found.ori_size) == (fake.pixel_size, fake.box)
    history = [read_class_iteration(info.path, it) for it in fake.iterations]
    data = class_data(history)
    assert data["occupancy"]["label"] == ["class 1", "class 2", "class 3"]
    assert data["occupancy"]["xs"][0] == [0, 1, 2, 3]
    assert np.allclose(data["occupancy"]["ys"][2], [100 * fake.distribution[it][2] for it in fake.iterations])
    assert np.allclose(data["resolution"]["ys"][1], [fake.resolution[it][1] for it in fake.iterations])
    headline = class3d_headline(history, job_dir=info.name, elapsed=65)
    largest = int(np.argmax(fake.distribution[3])) + 1
    assert headline.title.startswith(f"3 classes; largest: class {largest} ")
    assert headline.facts[0] == "3 iterations · 1 min 05 s" and len(headline.facts) == 5
    assert class3d_forecast(history[:2], [30.0, 30.0], 25) == "iteration 1 of 25 done · ~12 min left"
    assert class3d_forecast([], [], 25) == ""


def test_reader_names_what_is_wrong(tmp_path):
    (tmp_path / "run_it001_model.star").write_text("data_model_general\n_rlnNrClasses 2\n_rlnPixelSize 4\n")
    with pytest.raises(InputError) as missing:
        read_class_iteration(tmp_path, 1)
    assert missing.value.table == "model_classes"
    (tmp_path / "run_it001_model.star").write_text(
        "data_model_general\n_rlnNrClasses 2\n_rlnPixelSize 4\n_rlnOriginalImageSize 24\n"
        "_rlnCurrentResolution 30\n\ndata_model_classes\nloop_\n_rlnReferenceImage #1\n"
        "_rlnClassDistribution #2\n_rlnEstimatedResolution #3\nrun_it001_class001.mrc 1.0 30\n")
    with pytest.raises(InputError, match="rlnNrClasses is 2 but data_model_classes has 1 rows"):
        read_class_iteration(tmp_path, 1)


def test_monitor_plots_maps_and_selection_by_class(classified, monkeypatch):
    from dashboard.pages.monitor import JobMonitor
    from sessions import runner

    session, info, fake = classified
    launched = []
    monkeypatch.setattr(runner, "launch", lambda s, name, **kw: launched.append(name))  # the browser test runs it
    ctx = Context(session)
    ctx.watcher.poll(force=True)
    monitor = JobMonitor(ctx, info.name)
    assert monitor.model.kind == "class3d" and len(monitor.model.classes) == 4
    assert monitor.model.headline is not None and monitor.model.headline.title.startswith("3 classes")
    parts = monitor.class3d
    assert len(parts.sources["occupancy"].data["xs"]) == 3 and len(parts.sources["resolution"].data["ys"]) == 3
    viewer = parts.viewer
    assert viewer.labels == ["class 1", "class 2", "class 3"]
    assert list(viewer.choice.options) == [f"iteration {n}" for n in fake.iterations]
    assert viewer.choice.value == "iteration 3" and set(viewer.volumes) == {"class 1", "class 2", "class 3"}
    assert viewer.shape == (fake.box,) * 3
    # the three class maps differ (sphere, cube, rod)
    sums = {label: float(vol.sum()) for label, vol in viewer.volumes.items()}
    assert len(set(sums.values())) == 3
    selection = parts.selection
    assert selection.iteration == 3 and selection.available == [1, 2, 3] and not selection.ready
    assert list(parts.ticks.options.values()) == [1, 2, 3]
    assert list(parts.ticks.options)[0] == f"class 1 ({100 * fake.distribution[3][0]:.0f}%, {fake.resolution[3][0]:.1f} Å)"
    viewer.choice.value = "iteration 2"                          # the user looks at an older iteration
    assert selection.iteration == 2
    parts.ticks.value = [2]
    assert selection.chosen == [2] and selection.ready
    made = selection.create()
    assert made is not None and launched == [made.name] and selection.launched == made.name
    star = JobStar.read(made.path / "job.star")
    assert star.type_label == "relion.select.interactive"
    assert (star.options["fn_model"], star.options["select_classes"]) == (f"{info.name}run_it002_optimiser.star", "2")
    assert selection.message[0] == "ok" and made.name.rstrip("/") in selection.message[1]
    # viewers cannot make one
    viewer_ctx = Context(session, auth.Identity("guest", auth.VIEWER))
    watching = JobMonitor(viewer_ctx, info.name).class3d
    watching.ticks.value = [1]
    assert not watching.selection.ready and watching.selection.create() is None
    assert watching.selection.message[0] == "error" and len(launched) == 1


RELION = Path(__file__).parent / "data" / "class3d_relion"


def test_readers_parse_relions_own_classification():
    """RELION 5's tomo 3D classification (tests/data/class3d_relion, K=2): every iteration's
    model (table and column names), the plots' data (iteration 0's inf resolution is a gap),
    the class maps, and the selection of a class from its data.star."""
    listing = sorted(p.name for p in RELION.iterdir())
    iterations = classification_iterations(listing)
    assert iterations == list(range(len(iterations))) and len(iterations) >= 3 and is_classification_listing(listing)
    history = [read_class_iteration(RELION, it) for it in iterations]
    for it in history:
        assert it.classes == [1, 2] and it.distribution.sum() == pytest.approx(1.0, abs=1e-4)
        assert it.maps == (f"run_it{it.iteration:03d}_class001.mrc", f"run_it{it.iteration:03d}_class002.mrc")
        assert it.pixel_size > 0 and it.ori_size > 0
    assert not np.isfinite(history[0].class_resolution).any()            # RELION: inf before iteration 1
    assert np.all((history[-1].class_resolution > 2 * history[-1].pixel_size) & np.isfinite(history[-1].class_resolution))
    data = class_data(history)
    assert len(data["occupancy"]["xs"]) == 2 and np.isnan(data["resolution"]["ys"][0][0])
    assert np.all(np.isfinite(data["resolution"]["ys"][0][1:]))
    headline = class3d_headline(history, job_dir="Class3D/job001/", elapsed=None)
    assert headline.title.startswith("2 classes; largest: class") and "–" not in headline.title
    assert format_resolution(history[0].class_resolution[0]) == "–"
    # the maps the orthoslices show
    from dashboard.readers import read_volume

    last = history[-1]
    volume, pixel_size = read_volume(RELION / last.maps[0])
    assert volume.shape == (last.ori_size,) * 3 and pixel_size == pytest.approx(last.pixel_size)
    # the particles of one class, every column kept; the hard assignments follow the occupancy
    particles = ParticleSet.read(RELION / f"run_it{last.iteration:03d}_data.star")
    kept, mask = select_classes(particles, [2])
    classes = particles.particles["rlnClassNumber"].to_numpy()
    assert mask.tolist() == (classes == 2).tolist() and list(kept.particles.columns) == list(particles.particles.columns)
    assert mask.mean() == pytest.approx(last.distribution[1], abs=0.1)
    with pytest.raises(InputError, match="the particles are in classes 0"):      # iteration 0: no classes yet
        select_classes(ParticleSet.read(RELION / "run_it000_data.star"), [1])
