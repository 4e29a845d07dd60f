"""The 3D classification monitor in headless Chromium, on a prepared classification output
(tests/class3d_fake.py: K=3, 3 iterations, box 24; no engine run): the occupancy and
resolution figures are drawn with one line per class, the class maps side by side, and ticking
a class and pressing the button makes a Subset selection job (through the runner, out of
process) whose particles.star holds exactly that class's particles."""
from __future__ import annotations

import re

import numpy as np
import pytest

from processing.io.star import read_star
from processing.jobs.class3d_params import Class3DParameters
from sessions import Session

from class3d_fake import write_fake_class3d
from conftest import wait_for_job

from .conftest import SCREENSHOTS, DashboardServer
from .test_dashboard_browser import JS_FSC_CURVES, assert_painted, shot, wait_bokeh

pytestmark = pytest.mark.timeout(120)


def test_classification_monitor_plots_maps_and_selects_a_class(browser, tmp_path):
    session = Session.create(tmp_path / "c3")
    for name in ("Select/job001/optimisation_set.star", "Refine3D/job002/run_class001.mrc"):
        (session.root / name).parent.mkdir(parents=True, exist_ok=True)
        (session.root / name).write_text("x")
    info = session.create_job("class3d", Class3DParameters(
        in_optimisation=str(session.root / "Select/job001/optimisation_set.star"),
        fn_ref=str(session.root / "Refine3D/job002/run_class001.mrc"), nr_classes=3, nr_iter=3), alias="classes")
    fake = write_fake_class3d(session.root, info.name)
    session.set_status(info.name, "Succeeded", touch_markers=True)

    server = DashboardServer([session.root], log=tmp_path / "server.log")
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{server.url}/job?session=c3&job={info.name}")
        wait_bokeh(page)
        assert_painted(page, "class_", 2)                     # occupancy and resolution vs iteration
        for name in ("class_occupancy_source", "class_resolution_source"):
            assert page.evaluate(JS_FSC_CURVES, name) == 3    # one line per class
        assert_painted(page, "slice_class", 9)                # XY, XZ, YZ of each of the 3 class maps
        page.get_by_text("3 classes; largest: class").first.wait_for(timeout=10_000)
        # tick class 2 of the shown (last) iteration and make the selection job
        page.locator("label", has_text="class 2 (").first.click()
        page.get_by_role("button", name="Create Subset selection of these classes").click()
        launched = page.get_by_text(re.compile(r"Launched Select/job\d+"))
        launched.wait_for(timeout=15_000)
        job = re.search(r"Select/job\d+", launched.inner_text()).group(0) + "/"
        shot(page, SCREENSHOTS, "monitor_class3d")
        assert wait_for_job(session, job, timeout=30) == "Succeeded"
        kept = read_star(session.root / job / "particles.star")["particles"]
        last = fake.iterations[-1]
        expected = [n for n, c in zip(fake.particle_names, fake.classes[last]) if c == 2]
        assert list(kept["rlnTomoParticleName"]) == expected and set(kept["rlnClassNumber"]) == {2}
        assert session.job(job).type_label == "relion.select.interactive"
        assert np.isclose(len(expected) / len(fake.particle_names), fake.distribution[last][1])
    finally:
        context.close()
        server.stop()
