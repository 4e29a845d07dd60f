"""The Post-processing monitor without a browser: its figures' sources hold exactly the columns
of RELION's own postprocess.star (tests/data/postprocess, tests/data/fsc), and the job's
headline is RELION's final resolution with the B-factor as a fact."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from bokeh.models import Span

from dashboard import auth
from dashboard.context import page_url
from dashboard.pages.postprocess_view import PostprocessView
from dashboard.postprocess_result import postprocess_fsc_curves, postprocess_headline, read_postprocess_star
from dashboard.watcher import SessionWatcher
from processing.io.star import read_star
from processing.jobs.postprocess_params import PostprocessParameters
from sessions import Session

ROOT = Path(__file__).resolve().parent.parent
PP_DIR = ROOT / "tests/data/postprocess"
HALF1 = "run_half1_class001_unfil.mrc"


class Context:
    """What a page's context offers a model (dashboard.context.PageContext without a request)."""

    def __init__(self, session, identity=auth.LOCAL_OPERATOR):
        self.session, self.session_key = session, "s"
        self.watcher = SessionWatcher(session.root, interval=0.0)
        self.identity = identity
        self.args = {}

    def require(self, action: str) -> None:
        auth.require(self.identity, auth.OPERATOR, action)

    def url(self, route: str, **args) -> str:
        return page_url(route, session=self.session_key, **args)


def _view(tmp_path: Path, star: Path) -> PostprocessView:
    shutil.copy(star, tmp_path / "postprocess.star")
    return PostprocessView(read_postprocess_star, tmp_path)


def test_fsc_sources_are_the_four_star_columns(tmp_path):
    view = _view(tmp_path, PP_DIR / "mtf/postprocess.star")
    fsc = read_star(PP_DIR / "mtf/postprocess.star")["fsc"]
    data = view.fsc_source.data
    assert data["label"] == ["phase-randomised masked", "unmasked", "masked", "corrected"]
    columns = ["rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps", "rlnFourierShellCorrelationUnmaskedMaps",
               "rlnFourierShellCorrelationMaskedMaps", "rlnFourierShellCorrelationCorrected"]
    for ys, xs, column in zip(data["ys"], data["xs"], columns):
        # Shell 0 (1/999 Å⁻¹ in the file) is left out of a plot on a frequency axis.
        assert ys == fsc[column].to_list()[1:]
        assert xs == fsc["rlnResolution"].to_list()[1:]
    # The corrected curve carries the final resolution and is drawn strongest.
    assert data["resolution"][-1] == pytest.approx(2.823529) and data["width"][-1] == 3.0
    assert any(isinstance(r, Span) and r.location == 0.143 for r in view.fsc_fig.center)


def test_guinier_sources_are_the_star_columns_and_the_fit(tmp_path):
    view = _view(tmp_path, PP_DIR / "mtf/postprocess.star")
    star = read_star(PP_DIR / "mtf/postprocess.star")
    guinier, general = star["guinier"], star["general"]
    data = view.guinier_source.data
    assert data["label"] == ["original", "MTF-corrected", "weighted", "sharpened"]
    for ys, xs, column in zip(data["ys"], data["xs"], ["rlnLogAmplitudesOriginal", "rlnLogAmplitudesMTFCorrected",
                                                       "rlnLogAmplitudesWeighted", "rlnLogAmplitudesSharpened"]):
        keep = guinier[column] > -99  # RELION's value for a shell without amplitude
        assert ys == guinier[column][keep].to_list()
        assert xs == guinier["rlnResolutionSquared"][keep].to_list()
    assert len(data["ys"][2]) < len(data["ys"][0])  # the FSC weighting ends the weighted curve
    fit = view.fit_source.data
    assert fit["x"][0] == 0 and fit["y"][0] == pytest.approx(general["rlnFittedInterceptGuinierPlot"])
    slope = (fit["y"][1] - fit["y"][0]) / (fit["x"][1] - fit["x"][0])
    assert slope == pytest.approx(general["rlnFittedSlopeGuinierPlot"])


def test_adhoc_run_has_no_fitted_line_and_headline_says_given(tmp_path):
    view = _view(tmp_path, PP_DIR / "adhoc/postprocess.star")
    assert view.fit_source.data == {"x": [], "y": []}
    assert view.guinier_source.data["label"] == ["original", "weighted", "sharpened"]
    headline = postprocess_headline(view.star)
    assert headline.title == "2.82 Å" and "B-factor -50.0 Å² (given)" in headline.facts


def test_unmasked_file_has_one_curve_and_says_so():
    pp = read_postprocess_star(ROOT / "tests/data/fsc/unmasked/postprocess.star")
    curves = postprocess_fsc_curves(pp)
    assert [c[0] for c in curves] == ["unmasked"] and curves[0][2] == pytest.approx(8.727273)
    headline = postprocess_headline(pp)
    assert headline.title == "8.73 Å" and headline.facts[0].startswith("unmasked FSC 0.143")


def test_relions_unmasked_fallback_is_named_in_the_headline():
    """RELION's own fallback run (a mask cutting the corrected curve short: its warning in
    tests/data/postprocess/fallback/stdout.txt) is recognised from the file alone, and the
    headline says which curve gave the resolution and why; the masked auto run is not."""
    from processing.postprocess import unmasked_fallback

    assert "unmasked FSC extends beyond" in (PP_DIR / "fallback/stdout.txt").read_text()
    fallback = read_postprocess_star(PP_DIR / "fallback/postprocess.star")
    assert unmasked_fallback(fallback.fsc)
    headline = postprocess_headline(fallback)
    assert headline.facts[0] == "unmasked FSC 0.143 (RELION's fallback)"
    assert "mask is probably too tight" in headline.warning
    auto = read_postprocess_star(PP_DIR / "auto/postprocess.star")
    assert not unmasked_fallback(auto.fsc)
    assert postprocess_headline(auto).facts[0] == "solvent-corrected FSC 0.143" and not postprocess_headline(auto).warning
    assert not unmasked_fallback(read_postprocess_star(ROOT / "tests/data/fsc/unmasked/postprocess.star").fsc)


def test_monitor_of_a_postprocess_job_shows_headline_and_figures(tmp_path):
    from dashboard.pages.monitor import JobMonitor
    from dashboard.viewmodels import JobModel

    session = Session.create(tmp_path / "s")
    maps = session.root / "Refine3D/job001"
    maps.mkdir(parents=True)
    for name in (HALF1, HALF1.replace("half1", "half2")):
        shutil.copy(PP_DIR / name, maps / name)
    info = session.create_job("postprocess", PostprocessParameters(fn_in=f"Refine3D/job001/{HALF1}", angpix=1.0))
    shutil.copy(PP_DIR / "auto/postprocess.star", info.path / "postprocess.star")
    session.set_status(info.name, "Succeeded", touch_markers=True)
    ctx = Context(session)
    ctx.watcher.poll(force=True)
    model = JobModel(ctx, info.name)
    assert model.kind == "postprocess"
    assert model.headline.title == "2.82 Å" and model.headline.value == pytest.approx(2.823529)
    assert "B-factor -83.5 Å² (auto, r² 0.977)" in model.headline.facts
    monitor = JobMonitor(ctx, info.name)
    fsc = read_star(PP_DIR / "auto/postprocess.star")["fsc"]
    assert monitor.postprocess.fsc_source.data["ys"][-1] == fsc["rlnFourierShellCorrelationCorrected"].to_list()[1:]
    assert np.isclose(monitor.postprocess.fit_source.data["y"][0], -4.54879)


def test_form_offers_a_refinements_half_map_for_fn_in(tmp_path):
    """fn_in's input type is RELION's generic DensityMap.mrc.halfmap; a 3D auto-refine registers
    its half map as DensityMap.mrc.relion.halfmap.refine3d, which the form offers (and fills in)."""
    from dashboard.readers import input_candidates
    from dashboard.viewmodels.builder import prefill_required_inputs
    from sessions.pipeline import Process

    session = Session.create(tmp_path / "s")
    pipe = session.read_pipeline()
    pipe.processes.append(Process("Refine3D/job001/", "relion.refine3d.tomo", "Succeeded", None))
    for name, label in (("run_half1_class001_unfil.mrc", "DensityMap.mrc.relion.halfmap.refine3d"),
                        ("run_class001.mrc", "DensityMap.mrc.relion.refine3d")):
        pipe.add_node(f"Refine3D/job001/{name}", label)
        pipe.add_output_edge("Refine3D/job001/", f"Refine3D/job001/{name}")
    pipe.job_counter = 2
    pipe.write(session.pipeline_path)
    meta = PostprocessParameters.param["fn_in"].metadata
    assert input_candidates(session, meta) == ["Refine3D/job001/run_half1_class001_unfil.mrc"]
    params = PostprocessParameters()
    prefill_required_inputs(params, session)
    assert params.fn_in == "Refine3D/job001/run_half1_class001_unfil.mrc"
