"""The dashboard in headless Chromium (Playwright): real server, real session, real jobs.

The tests of this module walk one session from start to end, in order, as a user would: the
server starts with no session; the session is made from the sessions page's "New session" form
(the simulator's tiny ``test`` dataset imported as job 1) -> Extract and Reconstruct launched
from the form -> a 3D auto-refine launched from the form, watched live (FSC curves per
iteration, progress bar), its particles (viewing directions, histograms, positions in 3D) and
orthoslices (linked sections) -> abort -> compare -> Reconstruct from the refined halves (three
maps, 3D view) -> a refinement launched from the form and run to convergence, whose result is
the same on the monitor, in the pipeline and on the compare page. Then a server with logins:
a viewer cannot launch (the server refuses even a forced click), share links work read-only and
stop when they expire. Screenshots of every page go to tests/ui/screenshots/.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dashboard import auth
from sessions import Preset, Session, save_preset

from .conftest import SCREENSHOTS, DashboardServer

pytestmark = pytest.mark.timeout(420)

JS_TAGGED = """(tag) => { for (const doc of Bokeh.documents) for (const m of doc.all_models)
    if (m.tags && m.tags.includes(tag)) return m.value; return null; }"""
JS_FSC_CURVES = """(name) => { for (const doc of Bokeh.documents) { const s = doc.get_model_by_name(name);
    if (s) return s.data.xs.length; } return -1; }"""
JS_PAINTED = """(prefix) => { const out = {};
  function walk(v) { if (!v) return;
    if (v.model && v.model.name && v.model.name.startsWith(prefix) && v.canvas_view) {
      const c = v.canvas_view.el.querySelector('canvas') ||
                (v.canvas_view.el.shadowRoot && v.canvas_view.el.shadowRoot.querySelector('canvas'));
      let n = 0;
      if (c) { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
               for (let i = 0; i < d.length; i += 4) if (d[i] < 250) n++; }
      out[v.model.name] = n; }
    for (const k of (v.child_views ? [...v.child_views] : [])) walk(k); }
  for (const root of Object.values(Bokeh.index)) walk(root);
  return out; }"""
JS_VTK_BOX = """() => { const out = [];
  function walk(v) { if (!v) return;
    if (v.model && v.model.type && v.model.type.includes('VTKVolume')) { const r = v.el.getBoundingClientRect();
       out.push([r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]); }
    for (const k of (v.child_views ? [...v.child_views] : [])) walk(k); }
  for (const root of Object.values(Bokeh.index)) walk(root); return out; }"""
JS_FRAME = """(name) => { let out = null;
  function walk(v) { if (!v || out) return;
    if (v.model && v.model.name === name && v.frame && v.canvas_view) {
      const r = v.canvas_view.el.getBoundingClientRect(), b = v.frame.bbox;
      out = [r.left + b.left, r.top + b.top, b.width, b.height]; }
    for (const k of (v.child_views ? [...v.child_views] : [])) walk(k); }
  for (const root of Object.values(Bokeh.index)) walk(root); return out; }"""
JS_MODEL = """(name) => { for (const doc of Bokeh.documents) { const m = doc.get_model_by_name(name);
    if (m) return m.location; } return null; }"""
JS_IMAGE_SUM = """(name) => { for (const doc of Bokeh.documents) { const s = doc.get_model_by_name(name);
    if (s && s.data.image && s.data.image.length) { let t = 0; for (const v of s.data.image[0]) t += v; return t; } }
    return null; }"""
JS_IMAGE = """(name) => { for (const doc of Bokeh.documents) { const s = doc.get_model_by_name(name);
    if (s && s.data.image && s.data.image.length) return s.data.dw[0]; } return 0; }"""


def wait_bokeh(page) -> None:
    page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=30_000)
    try:  # rendered (an animated progress bar may keep a document from ever reporting idle)
        page.wait_for_function("() => Bokeh.documents[0].is_idle", timeout=5_000)
    except Exception:
        pass
    time.sleep(0.8)


def assert_painted(page, prefix: str, count: int, timeout: float = 20) -> None:
    """Wait until ``count`` figures whose names start with ``prefix`` are drawn, each with more
    than 100 non-white pixels on its canvas."""
    deadline = time.monotonic() + timeout
    painted = {}
    while time.monotonic() < deadline:
        painted = page.evaluate(JS_PAINTED, prefix)
        if len(painted) == count and min(painted.values()) > 100:
            return
        time.sleep(0.5)
    raise AssertionError(f"figures {prefix}*: {painted}")


def shot(page, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def field(page, label: str):
    return page.locator(".bk-input-group", has_text=label).first


TINY_PRESETS = {
    "extract": {"binning": "1", "box_size": "48", "crop_size": "32", "do_stack2d": "Yes", "do_float16": "Yes",
                "nr_threads": "2"},
    "reconstruct": {"binning": "1", "box_size": "48", "crop_size": "32", "sym_name": "C6", "nr_threads": "2"},
    "refine3d": {"sym_name": "C6", "particle_diameter": "150", "ini_high": "40", "ref_correct_greyscale": "Yes",
                 "nr_threads": "2", "other_args": "--auto_iter_max 3"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A dashboard serving no session yet: the walk makes its session in the browser."""
    s = DashboardServer([], log=tmp_path_factory.mktemp("log") / "server.log")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def demo(server, browser, tmp_path_factory):
    """The walk's session, made from the sessions page's "New session" form (its creation is
    checked by the first test); the tiny-box presets a lab would keep for this dataset are
    saved in it."""
    root = tmp_path_factory.mktemp("ui") / "demo"
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.goto(server.url)
    wait_bokeh(page)
    field(page, "New session directory").locator("input").fill(str(root))
    field(page, "New session directory").locator("input").press("Enter")
    field(page, "Simulator preset").locator("select").select_option("test")
    field(page, "Title (optional)").locator("input").fill("UI test session")
    field(page, "Title (optional)").locator("input").press("Enter")
    page.get_by_role("button", name="Create session").click()
    page.get_by_text("Created:").wait_for(timeout=90_000)
    shot(page, SCREENSHOTS, "session_created")
    context.close()
    session = Session(root)
    for job_type, options in TINY_PRESETS.items():
        save_preset(Preset(f"tiny-{job_type}", job_type, options, description="UI test: tiny test dataset"),
                    session=session)
    return session


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, permissions=["notifications"])
    # Headless Chromium shows no desktop notifications; record what the page asks it to show
    # (and pass the call on to the browser's own Notification).
    context.add_init_script("""(() => { const Real = window.Notification; window.tomodashNotified = [];
        function Recording(title, options) { window.tomodashNotified.push((options || {}).body || title);
                                             try { return new Real(title, options); } catch (e) { return {}; } }
        Recording.permission = 'granted'; Recording.requestPermission = () => Promise.resolve('granted');
        window.Notification = Recording; })();""")
    pg = context.new_page()
    yield pg
    context.close()


JS_FIELD_HAS = """([label, v]) => { for (const m of Bokeh.documents[0].all_models)
    if (m.title && m.title.trim() === label.trim() &&
        (m.value === v || (typeof m.value === 'number' && Math.abs(m.value - Number(v)) < 1e-9))) return true;
    return false; }"""


def launch_from_form(page, server, job_type: str, alias: str, screenshots: Path, *,
                     fields: tuple[tuple[str, str, str], ...] = (), preset: bool = True) -> str:
    """Open the job builder, load the tiny preset (``preset``), set each ``(tab, field label,
    value)`` of ``fields`` (typed, or chosen in a drop-down), name the job and press Run!;
    returns the monitor's address."""
    page.goto(f"{server.url}/new?session=demo&type={job_type}")
    wait_bokeh(page)
    if preset:
        field(page, "Preset").locator("select").select_option(label=f"tiny-{job_type} (session)")
        page.get_by_role("button", name="Load preset").click()
        page.get_by_text(f"Loaded preset tiny-{job_type}").wait_for(timeout=15_000)
    for tab, label, value in fields:
        page.locator(".bk-tab", has_text=re.compile(rf"^{re.escape(tab)}$")).first.click()
        group = field(page, label)
        group.wait_for(timeout=10_000)                 # the tab's fields are drawn when it opens
        if group.locator("select").count():
            group.locator("select").select_option(value)
        else:
            box = group.locator("input")
            box.fill(value)
            box.press("Enter")
        page.wait_for_function(JS_FIELD_HAS, arg=[label, value], timeout=10_000)
    field(page, "Alias").locator("input").fill(alias)
    field(page, "Alias").locator("input").press("Enter")
    try:
        page.get_by_text("Ready to run").wait_for(timeout=15_000)
    finally:
        shot(page, screenshots, f"builder_{job_type}_{alias}")
    page.get_by_role("button", name="Run!").click()
    page.wait_for_url("**/job?**", timeout=30_000)
    wait_bokeh(page)
    page.locator(".badge").first.wait_for(timeout=20_000)
    return page.url


def wait_status(page, status: str, timeout: float = 120) -> None:
    page.locator(".badge", has_text=status.lower()).first.wait_for(timeout=timeout * 1000)


def test_sessions_and_pipeline_pages(server, page, screenshots, demo):
    """The session made from the form: listed with its particles, titled as typed, its data
    imported as job 1."""
    made = Session(demo.root)
    assert made.settings["title"] == "UI test session"
    assert [(j.name, j.status) for j in made.jobs()] == [("Import/job001/", "Succeeded")]
    page.goto(server.url)
    wait_bokeh(page)
    link = page.locator("a.session-link", has_text="UI test session")
    link.wait_for()
    page.get_by_text("35 particles").first.wait_for()
    shot(page, screenshots, "sessions")
    link.click()
    page.wait_for_url("**/pipeline?**")
    wait_bokeh(page)
    assert page.locator("a.job-link", has_text="Import/job001").count() == 1
    shot(page, screenshots, "pipeline_start")


def test_a_directory_that_cannot_become_a_session_is_reported(server, page, screenshots, tmp_path):
    """The "New session" form reports a directory that cannot become a session on the page."""
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the session should go")
    page.goto(server.url)
    wait_bokeh(page)
    field(page, "New session directory").locator("input").fill(str(blocker))
    field(page, "New session directory").locator("input").press("Enter")
    page.get_by_role("button", name="Create session").click()
    page.get_by_text("Could not create the session").wait_for(timeout=30_000)
    shot(page, screenshots, "session_refused")


def test_launch_extract_and_reconstruct_from_the_form(server, page, screenshots, demo):
    launch_from_form(page, server, "extract", "tiny", screenshots)
    wait_status(page, "Succeeded", 120)
    url = launch_from_form(page, server, "reconstruct", "ref", screenshots)
    assert "Reconstruct" in url
    wait_status(page, "Succeeded", 120)
    page.wait_for_function(JS_IMAGE, arg="slice_merged_XY_source", timeout=20_000)
    time.sleep(2.0)
    shot(page, screenshots, "monitor_reconstruct")
    assert [j.status for j in Session(demo.root).jobs()] == ["Succeeded"] * 3
    assert (demo.root / "Reconstruct" / "ref").is_symlink()


def test_refine_from_the_form_live_plots_and_orthoslices(server, page, screenshots, demo):
    # The tiny preset's 7.5-degree search runs its three iterations in about 4 s, which a loaded
    # machine can finish before the monitor's first look. At 3.7 degrees each iteration takes
    # 2.5-4 s, several of the page's 1-s ticks, so the page sees the run part-way.
    launch_from_form(page, server, "refine3d", "first", screenshots,
                     fields=[("Auto-sampling", "Initial angular sampling:", "3.7 degrees")])
    curves_seen, progress_seen, lines_seen = [], [], []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        curves_seen.append(page.evaluate(JS_FSC_CURVES, "fsc_source"))
        progress_seen.append(page.evaluate(JS_TAGGED, "job-progress"))
        lines_seen.append(page.locator(".tomo-progress-line").first.inner_text())
        if page.locator(".badge", has_text="succeeded").count():
            break
        if len(curves_seen) == 8:
            shot(page, screenshots, "monitor_refine_running")
        time.sleep(0.4)
    wait_status(page, "Succeeded", 30)
    time.sleep(1.5)
    final = page.evaluate(JS_FSC_CURVES, "fsc_source")
    counts = sorted(set(c for c in curves_seen + [final] if c >= 0))
    # iterations 1..3 (iteration 0 has no FSC yet): the plot gained its curves one by one, live
    assert final == 3, curves_seen
    assert len([c for c in counts if 0 < c < 3]) >= 1, f"no intermediate state seen: {counts}"
    advancing = [v for v in progress_seen if v is not None and 0 < v < 100]
    # the bar showed a phase part-done and then a later state, or (phases of this tiny job can
    # finish between two looks) the progress line above it named two or more iterations in turn
    bar_moved = bool(advancing) and any(
        v is not None and v != advancing[0] for v in progress_seen[progress_seen.index(advancing[0]):])
    iterations_named = set(re.findall(r"iteration (\d+)", " ".join(lines_seen)))
    assert bar_moved or len(iterations_named) >= 2, f"progress did not advance: {progress_seen} {lines_seen}"
    # the series plots have one point per iteration
    assert page.evaluate("() => Bokeh.documents[0].get_model_by_name('series_source').data.iteration.length") == 4
    # the result first: --auto_iter_max 3 ended the run before convergence, so the headline is
    # iteration 3's resolution from its model file, with the warning
    from processing.io.refine_star import ModelStarContents

    last = ModelStarContents.read(demo.root / "Refine3D" / "job004" / "run_it003_half1_model.star")
    page.locator("#headline-value").wait_for(timeout=10_000)
    assert page.locator("#headline-value").inner_text() == f"{last.current_resolution:.2f} Å"
    assert "Not converged" in page.locator("#headline-warning").inner_text()
    assert page.get_by_role("button", name="Continue").count() == 0       # it succeeded: nothing to resume
    # the particles of the newest iteration: every particle in each histogram and in the map of
    # viewing directions, whose canvases are painted
    import starfile

    n = len(starfile.read(demo.root / "Refine3D" / "job004" / "run_it003_data.star")["particles"])
    counts = "(name) => Bokeh.documents[0].get_model_by_name(name).data.count.reduce((a, b) => a + b, 0)"
    page.wait_for_function("() => { const s = Bokeh.documents[0].get_model_by_name('pmax_hist_source'); "
                           "return s && s.data.count.length > 0; }", timeout=15_000)
    assert page.evaluate(counts, "pmax_hist_source") == n
    assert page.evaluate(counts, "nsig_hist_source") == n
    assert page.evaluate("() => Bokeh.documents[0].get_model_by_name('angles_source').data.image[0]"
                         ".reduce((a, b) => a + b, 0)") == n
    painted = page.evaluate(JS_PAINTED, "angles")
    assert painted.get("angles", 0) > 100, painted
    # each tomogram's particles in 3D: turning the view (in the browser, no round trip)
    # re-projects them with the rotation the server drew them with first
    from dashboard.plots import project_points

    points = "() => { const d = Bokeh.documents[0].get_model_by_name('tomogram_source').data; " \
             "return {x: [...d.x], y: [...d.y], z: [...d.z], px: [...d.px], py: [...d.py]}; }"
    first = page.evaluate(points)
    assert len(first["x"]) > 0 and page.evaluate(JS_PAINTED, "tomogram").get("tomogram", 0) > 100
    turn = page.locator(".bk-input-group", has_text="Turn (azimuth").locator(".noUi-handle").first
    turn.focus()
    for _ in range(8):
        turn.press("ArrowRight")
    azimuth = page.evaluate(JS_TAGGED, "particles-azimuth")
    elevation = page.evaluate(JS_TAGGED, "particles-elevation")
    assert azimuth == 30 + 8 * 5
    page.wait_for_function(f"() => Bokeh.documents[0].get_model_by_name('tomogram_source').data.px[0] !== {first['px'][0]}")
    turned = page.evaluate(points)
    px, py, _ = project_points(turned["x"], turned["y"], turned["z"], azimuth=azimuth, elevation=elevation)
    np.testing.assert_allclose(turned["px"], px, atol=1e-6)      # same formula in JS and Python (float64 both)
    np.testing.assert_allclose(turned["py"], py, atol=1e-6)
    # orthoslices of both halves, newest iteration, then another iteration and a moved slider
    page.wait_for_function(JS_IMAGE, arg="slice_half2_YZ_source", timeout=20_000)
    assert page.evaluate(JS_IMAGE, "slice_half1_XY_source") == 32
    field(page, "Iteration").locator("select").select_option(label="iteration 1")
    page.get_by_text("run_it001_half1_class001.mrc").wait_for(timeout=10_000)
    slider = page.locator(".bk-input-group", has_text="XY section").locator(".noUi-handle").first
    slider.focus()
    for _ in range(4):
        slider.press("ArrowRight")
    page.get_by_text("XY section: z:").first.wait_for()
    time.sleep(1.0)
    # the slices are linked: a click on half1's XY section, a quarter in from its top left,
    # moves the XZ and YZ planes of both halves there; every section shows where the others cut it
    z = page.evaluate(JS_TAGGED, "slider:z")
    assert z == 20
    left, top, width, height = page.evaluate(JS_FRAME, "slice_half1_XY")
    page.mouse.click(left + 0.25 * width, top + 0.25 * height)
    page.wait_for_function(f"() => ({JS_TAGGED})('slider:x') !== 16 && ({JS_TAGGED})('slider:y') !== 16",
                           timeout=10_000)
    x, y = page.evaluate(JS_TAGGED, "slider:x"), page.evaluate(JS_TAGGED, "slider:y")
    assert abs(x - 8) <= 1 and abs(y - 24) <= 1, (x, y)         # 32 px box: a quarter in, rows counted upwards
    assert page.evaluate(JS_TAGGED, "slider:z") == z
    expected = {f"line_{label}_{line}": value + 0.5 for label in ("half1", "half2")
                for line, value in (("XY_column", x), ("XY_row", y), ("XZ_row", z), ("YZ_column", y))}
    lines = {}
    deadline = time.monotonic() + 10                 # the lines arrive in a message after the sliders'
    while time.monotonic() < deadline and lines != expected:
        lines = {name: page.evaluate(JS_MODEL, name) for name in expected}
        time.sleep(0.2)
    assert lines == expected
    import mrcfile

    with mrcfile.open(demo.root / "Refine3D" / "job004" / "run_it001_half2_class001.mrc") as mrc:
        half2 = np.asarray(mrc.data, dtype=np.float64)
    page.wait_for_function(f"() => Math.abs(({JS_IMAGE_SUM})('slice_half2_YZ_source') - {half2[:, :, x].sum()}) < 1e-2",
                           timeout=10_000)                                   # float32 image summed in JS
    assert abs(page.evaluate(JS_IMAGE_SUM, "slice_half2_XZ_source") - half2[:, y, :].sum()) < 1e-2
    shot(page, screenshots, "monitor_refine")
    page.set_viewport_size({"width": 420, "height": 900})
    time.sleep(1.0)
    shot(page, screenshots, "monitor_refine_phone")


def job_of(url: str) -> str:
    """The job a monitor's address shows (``Refine3D/job005/``)."""
    return re.search(r"job=([^&]+)", url).group(1).replace("%2F", "/")


def test_abort_a_running_job(server, page, screenshots, demo):
    name = job_of(launch_from_form(page, server, "refine3d", "long", screenshots,
                                     fields=[("Running", "Additional arguments:", "--auto_iter_max 30")]))
    wait_status(page, "Running", 30)
    page.get_by_role("button", name="Abort", exact=True).click()             # asks first
    page.get_by_text("Abort this job?").wait_for(timeout=10_000)
    page.get_by_role("button", name="Keep running").click()
    page.get_by_role("button", name="Abort", exact=True).wait_for(timeout=10_000)
    assert Session(demo.root).job(name).status == "Running"
    page.get_by_role("button", name="Abort", exact=True).click()
    page.get_by_role("button", name="Yes, abort").click()
    wait_status(page, "Aborted", 90)
    # everyone watching the session is told, in the page and on the desktop
    text = f"{name.rstrip('/')} was aborted"
    page.locator(".tomo-alert.aborted", has_text=text).first.wait_for(timeout=20_000)
    assert text in page.evaluate("() => window.tomodashNotified")
    shot(page, screenshots, "monitor_aborted")
    assert Session(demo.root).job(name).status == "Aborted"
    page.locator(".tomo-job .dot.Aborted").first.wait_for(timeout=10_000)   # the sidebar follows


def test_compare_and_presets_pages(server, page, screenshots, demo):
    page.goto(f"{server.url}/compare?session=demo&jobs=Refine3D/job004,Refine3D/job005")
    wait_bokeh(page)
    table = page.locator("#diff-table")
    table.wait_for(timeout=15_000)
    assert "Additional arguments" in table.inner_text()
    page.wait_for_function(JS_FSC_CURVES.replace("return -1", "return -1") + "", arg="compare_fsc_source")
    time.sleep(1)
    shot(page, screenshots, "compare")
    page.goto(f"{server.url}/pipeline?session=demo")
    wait_bokeh(page)
    shot(page, screenshots, "pipeline")
    page.goto(f"{server.url}/presets?session=demo")
    wait_bokeh(page)
    assert page.get_by_text("tiny-refine3d").count() >= 1
    shot(page, screenshots, "presets")


def test_three_maps_of_a_reconstruction_are_drawn(server, page, screenshots, demo):
    """Reconstruct particle from the refined half sets writes half1, half2 and merged: all nine
    orthoslices are painted (they stayed blank beside a full-width FSC figure) and the headline
    is the job's own half-map resolution."""
    name = job_of(launch_from_form(page, server, "reconstruct", "halves", screenshots, fields=[
        ("I/O", "Input optimisation set:", "Refine3D/job004/run_it003_optimisation_set.star")]))
    assert Session(demo.root).read_params(name).in_optimisation == "Refine3D/job004/run_it003_optimisation_set.star"
    wait_status(page, "Succeeded", 90)
    page.locator("#headline-value").wait_for(timeout=15_000)
    assert_painted(page, "slice_", 9)
    log = (demo.root / name / "run.out").read_text()
    reported = log.split("Half-map resolution (FSC 0.143, unmasked):")[1].split("A")[0].strip()
    assert page.locator("#headline-value").inner_text() == f"{float(reported):.2f} Å"
    # the merged map in 3D: vtk.js (served by this server) draws the volume on its dark ground
    import io

    import numpy as np
    from PIL import Image

    page.wait_for_function(f"() => ({JS_VTK_BOX})().length > 0", timeout=20_000)
    x, y, w, h = page.evaluate(JS_VTK_BOX)[0]
    page.evaluate(f"() => window.scrollTo(0, {y - 100})")
    time.sleep(2.0)
    pixels = np.asarray(Image.open(io.BytesIO(page.screenshot(clip={"x": x, "y": 100, "width": w, "height": h})))
                        .convert("RGB")).astype(int)
    drawn = int((np.abs(pixels - np.array([0x10, 0x2A, 0x43])).sum(axis=2) > 40).sum())
    assert drawn > 500, f"the 3D view drew {drawn} pixels"
    page.evaluate("() => window.scrollTo(0, 0)")
    shot(page, screenshots, "monitor_reconstruct_halves")


def test_a_converged_refinement_shows_its_result_everywhere(server, page, screenshots, demo):
    """The same refinement run to convergence: the monitor's headline, the pipeline table's
    result and the compare page's badge all say the converged model's resolution
    (run_model.star), with the pixel-size warning exactly when its FSC never falls below 0.143."""
    from processing.io.refine_star import ModelStarContents

    name = job_of(launch_from_form(page, server, "refine3d", "converged", screenshots,
                                     fields=[("Running", "Additional arguments:", "")]))
    wait_status(page, "Succeeded", 300)
    params = Session(demo.root).read_params(name)
    assert params.other_args == "" and params.sym_name == "C6"      # the form's values, run to convergence
    model = ModelStarContents.read(demo.root / name / "run_model.star")
    value = f"{model.current_resolution:.2f} Å"
    page.locator("#headline-value").wait_for(timeout=20_000)
    assert page.locator("#headline-value").inner_text() == value
    last = model.ori_size // 2 - 1
    limited = all(f >= 0.143 for f in model.gold_standard_fsc[1:last + 1])
    assert page.locator("#headline-warning").count() == (1 if limited else 0)
    assert "map: " + name + "run_class001.mrc" in page.locator("#job-headline").inner_text()
    shot(page, screenshots, "monitor_refine_converged")
    page.goto(f"{server.url}/pipeline?session=demo")
    wait_bokeh(page)
    row = page.locator("table.tomo-table tr", has_text=name.rstrip("/"))
    row.wait_for(timeout=15_000)
    assert value in row.inner_text()
    page.goto(f"{server.url}/compare?session=demo&jobs=Refine3D/job004,{name.rstrip('/')}")
    wait_bokeh(page)
    page.locator(".result-badge", has_text=value).first.wait_for(timeout=15_000)
    shot(page, screenshots, "compare_converged")


def test_the_tutorials_next_jobs_from_the_form(server, page, screenshots, demo):
    """After the converged refinement, the tutorial's next jobs, each launched from its form:
    remove duplicates (30 Å), a mask from the refined map (shown over the map's sections), and
    post-processing of the refined half maps with it: its four FSC curves, the Guinier plot with
    the fitted line, and the final resolution as headline and in the pipeline table."""
    import json

    import starfile

    from processing.io.mrc import read_mrc
    from processing.maskcreate import relion_lowpass

    refine = Session(demo.root).resolve_job("Refine3D/converged/")
    name = job_of(launch_from_form(page, server, "select", "no_duplicates", screenshots, preset=False, fields=[
        ("I/O", "Input optimisation set:", f"{refine}run_optimisation_set.star"),
        ("Duplicates", "OR: remove duplicates?", "Yes"),
        ("Duplicates", "Minimum inter-particle distance (A)", "30")]))
    wait_status(page, "Succeeded", 60)
    counts = json.loads((demo.root / name / "selection.json").read_text())
    page.locator("#headline-value").wait_for(timeout=15_000)
    assert page.locator("#headline-value").inner_text().startswith(f"{counts['kept']} of {counts['input']} particles kept")
    assert Session(demo.root).job(name).type_label == "relion.select.removeduplicates"

    refined = read_mrc(demo.root / refine / "run_class001.mrc")
    smooth = relion_lowpass(refined.data, resolution=30, pixel_size=refined.pixel_size)
    threshold = f"{0.3 * float(smooth.max()):.4f}"                 # a user reads it off the map
    mask_job = job_of(launch_from_form(page, server, "maskcreate", "mask", screenshots, preset=False, fields=[
        ("I/O", "Input 3D map:", f"{refine}run_class001.mrc"),
        ("Mask", "Lowpass filter map (A)", "30"),
        ("Mask", "Initial binarisation threshold:", threshold),
        ("Mask", "Extend binary map this many pixels:", "2"),
        ("Mask", "Add a soft-edge of this many pixels:", "4")]))
    wait_status(page, "Succeeded", 60)
    assert_painted(page, "mask_", 3)  # the mask over the map's sections
    shot(page, screenshots, "monitor_mask")

    post = job_of(launch_from_form(page, server, "postprocess", "sharpened", screenshots, preset=False, fields=[
        ("I/O", "One of the 2 unfiltered half-maps:", f"{refine}run_half1_class001_unfil.mrc"),
        ("I/O", "Solvent mask:", f"{mask_job}mask.mrc"),
        ("Sharpen", "Lowest resolution for auto-B fit (A):", "30")]))
    wait_status(page, "Succeeded", 60)
    general = starfile.read(demo.root / post / "postprocess.star")["general"]
    value = f"{float(general['rlnFinalResolution']):.2f} Å"
    page.locator("#headline-value").wait_for(timeout=15_000)
    assert page.locator("#headline-value").inner_text() == value
    # the figures fill after the headline; the monitor may hold more than one Bokeh document
    page.wait_for_function(f"() => ({JS_FSC_CURVES})('postprocess_fsc_source') > 0", timeout=30_000)
    assert page.evaluate(JS_FSC_CURVES, "postprocess_fsc_source") == 4      # corrected, unmasked, masked, random
    page.wait_for_function("() => { for (const doc of Bokeh.documents) { const s = doc.get_model_by_name("
                           "'guinier_fit_source'); if (s && s.data.x.length >= 2) return true; } return false; }",
                           timeout=30_000)                          # the fitted line of the automatic B-factor
    time.sleep(1.0)
    painted = page.evaluate(JS_PAINTED, "")
    assert painted.get("postprocess_fsc", 0) > 100 and painted.get("guinier", 0) > 100, painted
    shot(page, screenshots, "monitor_postprocess")
    page.goto(f"{server.url}/pipeline?session=demo")
    wait_bokeh(page)
    row = page.locator("table.tomo-table tr", has_text=post.rstrip("/"))
    row.wait_for(timeout=15_000)
    assert value in row.inner_text()
    shot(page, screenshots, "pipeline_end")


# ---- logins, roles, share links ---------------------------------------------------------------

SECRET = "ui-test-cookie-secret"


@pytest.fixture(scope="module")
def auth_server(demo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("auth")
    users = folder / "users"
    auth.set_password(users, "olga", "operator-pass", "operator")
    auth.set_password(users, "victor", "viewer-pass", "viewer")
    s = DashboardServer([demo.root], "--auth", str(users), "--cookie-secret", SECRET, log=folder / "server.log")
    yield s
    s.stop()


def login(page, server, user: str, password: str, *, ok: bool = True) -> None:
    page.goto(f"{server.url}/login")
    page.fill("#username", user)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("#login")
    if ok:
        assert "/login" not in page.url


def test_login_required_and_viewer_cannot_launch(auth_server, page, screenshots, demo):
    page.goto(f"{auth_server.url}/pipeline?session=demo")
    page.wait_for_url("**/login**")
    shot(page, screenshots, "login")
    login(page, auth_server, "victor", "wrong", ok=False)
    page.get_by_text("Wrong user name or password").wait_for()
    login(page, auth_server, "victor", "viewer-pass")
    wait_bokeh(page)
    page.get_by_text("victor (viewer)").first.wait_for()
    before = len(Session(demo.root).jobs())
    page.goto(f"{auth_server.url}/new?session=demo&type=reconstruct")
    wait_bokeh(page)
    run = page.get_by_role("button", name="Run!")
    assert run.is_disabled()
    # Force the button on in the browser: the server must still refuse.
    page.evaluate("""() => { for (const m of Bokeh.documents[0].all_models)
        if (m.tags && m.tags.includes('run-button')) m.disabled = false; }""")
    run.click()
    page.locator("#builder-error").wait_for(timeout=10_000)
    assert "operators only" in page.locator("#builder-error").inner_text()
    shot(page, screenshots, "builder_viewer_refused")
    page.goto(f"{auth_server.url}/job?session=demo&job=Refine3D/job005/")
    wait_bokeh(page)
    assert page.get_by_role("button", name="Continue").count() == 0
    assert len(Session(demo.root).jobs()) == before


def test_share_link_is_read_only_and_expires(auth_server, browser, page, screenshots):
    login(page, auth_server, "olga", "operator-pass")
    page.goto(f"{auth_server.url}/job?session=demo&job=Refine3D/job004/")
    wait_bokeh(page)
    page.get_by_role("button", name="Share read-only link").click()
    page.wait_for_function("""() => { for (const m of Bokeh.documents[0].all_models)
        if (m.tags && m.tags.includes('share-url') && m.value) return true; return false; }""")
    url = page.evaluate("""() => { for (const m of Bokeh.documents[0].all_models)
        if (m.tags && m.tags.includes('share-url')) return m.value; }""")
    assert "/share?token=" in url
    guest = browser.new_context(viewport={"width": 1200, "height": 900})
    g = guest.new_page()
    g.goto(url)
    wait_bokeh(g)
    g.get_by_text("Refine3D/job004").first.wait_for()
    g.get_by_text("shared link (read-only)").first.wait_for()
    assert g.get_by_role("button", name="Abort").count() == 0 and g.get_by_role("button", name="Continue").count() == 0
    shot(g, screenshots, "share")
    g.goto(url.split("/share")[0] + "/pipeline?session=demo")      # the link opens nothing else
    g.wait_for_url("**/login**")
    # A link that expires in a few seconds: works, then stops (open page and new visits).
    short = auth.make_share_token(SECRET, "demo", "Refine3D/job004/", seconds=6)
    g.goto(f"{auth_server.url}/share?token={short}")
    wait_bokeh(g)
    g.get_by_text("Refine3D/job004").first.wait_for()
    g.get_by_text("This share link has expired").wait_for(timeout=15_000)
    guest.close()
    fresh = browser.new_context()
    f = fresh.new_page()
    f.goto(f"{auth_server.url}/share?token={short}")
    f.wait_for_url("**/login**")
    fresh.close()


def test_public_address_without_auth_refuses_to_start(demo):
    proc = subprocess.run([sys.executable, "-m", "dashboard.cli", "serve", str(demo.root), "--address", "0.0.0.0",
                           "--port", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "refusing to serve on 0.0.0.0 without authentication" in proc.stderr


def test_the_servers_logged_no_traceback(server, auth_server):
    """After every page above was opened and its tab closed: nothing failed on the server, and
    closed tabs (websockets closed while the server wrote to them) left no traceback."""
    for s in (server, auth_server):
        s._log.flush()
        text = s.log.read_text()
        assert "Traceback" not in text and "WebSocketClosedError" not in text, text[-3000:]
