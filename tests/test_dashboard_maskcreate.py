"""The monitor of a Mask creation job without a browser: the kind and headline of the job, and
the orthoslice overlay whose image and tint sources hold the input map's and the mask's sections
(the mask being RELION's own, tests/data/maskcreate)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from dashboard import auth
from dashboard.context import page_url
from dashboard.mask_summary import mask_headline
from dashboard.pages.mask_overlay import MASK_COLOUR, PLANES, MaskOverlayViewer, mask_rgba
from dashboard.viewmodels.job import job_headline, job_kind
from dashboard.watcher import SessionWatcher
from processing.io.mrc import read_mrc
from processing.jobs import maskcreate
from processing.jobs.maskcreate_params import MaskCreateParameters
from sessions import Session

DATA = Path(__file__).parent / "data" / "maskcreate"


class Context:
    """What a page's context offers a model (dashboard.context.PageContext without a request)."""

    def __init__(self, session):
        self.session, self.session_key = session, "s"
        self.watcher = SessionWatcher(session.root, interval=0.0)
        self.identity = auth.LOCAL_OPERATOR

    def require(self, action: str) -> None:
        auth.require(self.identity, auth.OPERATOR, action)

    def url(self, route: str, **args) -> str:
        return page_url(route, session=self.session_key, **args)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A session whose MaskCreate/job001 ran (in this process) with the settings of RELION's
    mask_lp_ext_soft.mrc."""
    session = Session.create(tmp_path_factory.mktemp("maskdash") / "s")
    (session.root / "Maps").mkdir()
    shutil.copy(DATA / "blobs.mrc", session.root / "Maps/blobs.mrc")
    params = MaskCreateParameters(fn_in="Maps/blobs.mrc", lowpass_filter=15, angpix=3.5, inimask_threshold=0.1,
                                  extend_inimask=2, width_mask_edge=4)
    info = session.create_job("maskcreate", params)
    mp = pytest.MonkeyPatch()
    mp.chdir(session.root)
    try:
        assert maskcreate.main(["--job-dir", info.name]) == 0
    finally:
        mp.undo()
    session.set_status(info.name, "Succeeded")
    return session, info.name


def test_job_kind_and_headline(finished):
    session, name = finished
    watcher = SessionWatcher(session.root, interval=0.0)
    info = watcher.job(name)
    assert job_kind(info, watcher.listing(name)) == "mask"
    headline = job_headline(watcher, info)
    relion = read_mrc(DATA / "mask_lp_ext_soft.mrc").data.astype(np.float64)
    # the job's mask equals RELION's to float32 rounding (test_maskcreate), so the headline's
    # fraction is RELION's mask's mean to that precision
    assert headline.value == pytest.approx(relion.mean(), abs=1e-7)
    assert headline.title == f"{100 * relion.mean():.1f}% of the box"
    assert f"{int((relion > 0.999).sum()):,} voxels inside" in headline.facts[0]
    assert "soft edge 4 px (14.0 Å), extended 2 px, threshold 0.1, low-pass 15 Å" in headline.facts
    assert f"mask volume {relion.sum() * 3.5 ** 3 / 1000:,.0f} nm³" in headline.facts
    # this 32-px box is small: RELION's soft edge reaches its faces, which the headline says
    faces = max(relion[[0, -1]].max(), relion[:, [0, -1]].max(), relion[:, :, [0, -1]].max())
    assert faces > 0.001 and "edge of the box" in headline.warning


def test_headline_warnings():
    box = np.zeros((16, 16, 16))
    box[4:12, 4:12, 4:12] = 1.0
    assert mask_headline(box, 2.0, {}).warning == ""
    touching = box.copy()
    touching[0, 8, 8] = 0.3
    assert "edge of the box" in mask_headline(touching, 2.0, {}).warning
    most = np.ones((16, 16, 16))
    assert "covers 100%" in mask_headline(most, 2.0, {}).warning
    assert mask_headline(most, 2.0, {"other_args": "--invert"}).warning == ""  # a solvent mask, by design


def test_mask_rgba_tints_by_the_mask_value():
    section = np.array([[0.0, 0.5], [1.0, 2.0]])
    rgba = mask_rgba(section, opacity=0.4).view(np.uint8).reshape(2, 2, 4)
    assert (rgba[..., :3] == MASK_COLOUR).all()
    np.testing.assert_array_equal(rgba[..., 3], [[0, 51], [102, 102]])  # 255*0.4*value, clipped at 1
    with pytest.raises(ValueError, match="opacity"):
        mask_rgba(section, opacity=1.5)


def _alpha(source_data: dict) -> np.ndarray:
    image = source_data["image"][0]
    return image.view(np.uint8).reshape(image.shape + (4,))[..., 3]


def test_overlay_shows_the_maps_sections_under_the_masks(finished):
    session, name = finished
    watcher = SessionWatcher(session.root, interval=0.0)
    job_dir = session.root / name
    viewer = MaskOverlayViewer(watcher, lambda: (session.root / "Maps/blobs.mrc", job_dir / "mask.mrc"))
    viewer.refresh()
    blobs = read_mrc(DATA / "blobs.mrc").data
    mask = read_mrc(job_dir / "mask.mrc").data
    np.testing.assert_allclose(mask, read_mrc(DATA / "mask_lp_ext_soft.mrc").data, rtol=0, atol=1.2e-7)
    for z in (16, 9):  # the central sections, then another XY section chosen by its slider
        viewer.sliders["z"].value = z
        viewer.draw()
        expected = {"XY": (blobs[z], mask[z]), "XZ": (blobs[:, 16, :], mask[:, 16, :]),
                    "YZ": (blobs[:, :, 16], mask[:, :, 16])}
        for plane, _ in PLANES:
            fig, source, mask_source, mapper = viewer.figures[plane]
            map_section, mask_section = expected[plane]
            np.testing.assert_array_equal(source.data["image"][0], map_section)
            np.testing.assert_array_equal(_alpha(mask_source.data), np.rint(255 * 0.45 * mask_section))
            assert source.data["dw"] == [32] and mask_source.data["dh"] == [32]
            assert source.data["bar_label"] == ["20 Å"]  # 32 px x 3.5 Å: a quarter is 28 Å -> 20 Å
    assert (_alpha(viewer.figures["XY"][2].data) > 0).any()  # the mask is there at z = 9
    assert "blobs.mrc + mask.mrc" in viewer.status.object


def test_overlay_without_the_input_map_shows_the_mask_alone(finished, tmp_path):
    session, name = finished
    viewer = MaskOverlayViewer(SessionWatcher(session.root, interval=0.0),
                               lambda: (tmp_path / "gone.mrc", session.root / name / "mask.mrc"))
    viewer.refresh()
    mask = read_mrc(session.root / name / "mask.mrc").data
    np.testing.assert_array_equal(viewer.figures["XY"][1].data["image"][0], mask[16])
    assert "input map is gone" in viewer.status.object


def test_monitor_page_has_the_overlay_and_the_headline(finished):
    from dashboard.pages.monitor import JobMonitor

    session, name = finished
    monitor = JobMonitor(Context(session), name)
    assert monitor.model.kind == "mask" and monitor.model.headline is not None
    viewer = monitor.mask_parts.viewer
    assert viewer.volume is not None and viewer.mask is not None
    assert viewer.volume.shape == viewer.mask.shape == (32, 32, 32)


def test_builder_offers_the_mask_form(finished):
    from dashboard.viewmodels import BuilderModel
    from dashboard.viewmodels.builder import problem_summary

    session, _ = finished
    model = BuilderModel(Context(session), "maskcreate")
    assert type(model.params) is MaskCreateParameters
    assert model.params.lowpass_filter == 15 and model.params.extend_inimask == 3  # RELION's GUI defaults
    model.params.fn_in = "Maps/nothere.mrc"
    problems = problem_summary(MaskCreateParameters, model.validate(model.params))
    assert len(problems) == 1 and problems[0].startswith("I/O: Input 3D map file does not exist")
    assert problems[0].endswith("Maps/nothere.mrc")
    model.params.fn_in = "Maps/blobs.mrc"  # relative to the session, as the form gives it
    assert model.validate(model.params) == []


def test_builder_launches_a_mask_job_and_refuses_an_empty_mask(tmp_path):
    import time

    from dashboard.viewmodels import BuilderModel
    from sessions import runner

    session = Session.create(tmp_path / "s")
    (session.root / "Maps").mkdir()
    shutil.copy(DATA / "blobs.mrc", session.root / "Maps/blobs.mrc")
    model = BuilderModel(Context(session), "maskcreate")
    model.params.fn_in = "Maps/blobs.mrc"
    model.params.inimask_threshold = 3.0                  # above the low-passed map's maximum
    model.checked(model.validate(model.params))
    assert model.run() is None
    assert model.message[0] == "error" and "the mask would be empty" in model.message[1]
    assert not (session.root / "MaskCreate").exists()
    model.params.inimask_threshold = 0.1
    model.params.angpix = 3.5
    model.params.extend_inimask = 2
    model.params.width_mask_edge = 4
    model.checked(model.validate(model.params))
    info = model.run()
    assert model.message == ("ok", "Launched") and info.name == "MaskCreate/job001/"
    deadline = time.monotonic() + 120
    while runner.reconcile(session, info.name) == "Running":
        assert time.monotonic() < deadline, "the mask job did not finish"
        time.sleep(0.2)
    assert session.job(info.name).status == "Succeeded", (info.path / "run.err").read_text()
    np.testing.assert_allclose(read_mrc(info.path / "mask.mrc").data, read_mrc(DATA / "mask_lp_ext_soft.mrc").data,
                               rtol=0, atol=1.2e-7)


def test_the_mask_is_offered_to_the_refinement_form(finished):
    from dashboard.readers import input_candidates
    from processing.jobs.refine3d_params import Refine3DParameters

    session, name = finished
    assert input_candidates(session, Refine3DParameters.param["fn_mask"].metadata) == [f"{name}mask.mrc"]
    # and the map it was made from is offered as a mask job's input
    assert input_candidates(session, MaskCreateParameters.param["fn_in"].metadata) == ["Maps/blobs.mrc"]
