"""Forms generated from the job parameter classes (dashboard.forms)."""
from __future__ import annotations

import sys
from pathlib import Path

import panel as pn
import param
import pytest

from dashboard.forms import JobForm
from dashboard.readers import input_candidates, pattern_globs
from sessions import get_job_type, job_types

sys.path.insert(0, str(Path(__file__).parent / "fake_jobs"))

ALL_TYPES = sorted(name for name, jt in job_types().items() if jt.available)


@pytest.mark.parametrize("job_type", ALL_TYPES)
def test_every_job_class_renders_every_parameter_in_its_tab_with_help(job_type):
    cls = get_job_type(job_type).params_class
    form = JobForm(cls)
    tab_names = [name for name, _ in zip(form.tabs._names, form.tabs.objects)]
    assert tab_names == list(cls.tabs), "tabs in the class's order"
    for tab_index, (tab, fields) in enumerate(cls.fields_by_tab().items()):
        panel = form.tabs.objects[tab_index]
        shown = [w for w in panel.select(pn.widgets.Widget) if any(t.startswith("field:") for t in w.tags)]
        assert [w.tags[0][len("field:"):] for w in shown] == fields, f"{tab}: fields in declaration order"
        for widget in shown:
            p = cls.param[widget.tags[0][len("field:"):]]
            assert widget.label == p.label.strip()
            assert widget.description == p.doc and p.doc, f"{p.name} has its help"


def test_a_parameter_added_to_a_class_appears_without_dashboard_change():
    class Extended(get_job_type("reconstruct").params_class):
        brand_new = param.Number(3.5, bounds=(0, 10), label="Brand new knob (A):", doc="A knob added later.",
                                 metadata={"tab": "Running", "var": "brand_new"})

    form = JobForm(Extended)
    widget = form.widgets["brand_new"]
    assert widget.label == "Brand new knob (A):" and widget.description == "A knob added later."
    running = form.tabs.objects[list(Extended.tabs).index("Running")]
    assert widget in list(running.select(pn.widgets.Widget))
    form.set_value("brand_new", 7.0)
    assert form.params.brand_new == 7.0


@pytest.mark.parametrize("job_type", ALL_TYPES)
def test_changed_widgets_change_the_parameters(job_type):
    cls = get_job_type(job_type).params_class
    form = JobForm(cls)
    for name in cls.fields():
        p = cls.param[name]
        widget = form.widgets[name]
        if isinstance(p, param.Boolean):
            widget.value = "No" if getattr(form.params, name) else "Yes"
            assert getattr(form.params, name) == (widget.value == "Yes")
        elif isinstance(p, param.Selector):
            choice = list(p.objects)[-1]
            widget.value = choice
            assert getattr(form.params, name) == choice
        elif isinstance(p, param.Integer):
            lo = p.bounds[0] if p.bounds and p.bounds[0] is not None else 0
            widget.value = lo + 2
            assert getattr(form.params, name) == lo + 2
        elif isinstance(p, param.Number):
            lo = p.bounds[0] if p.bounds and p.bounds[0] is not None else 0
            widget.value = float(lo) + 1.5
            assert getattr(form.params, name) == pytest.approx(float(lo) + 1.5)
        else:
            widget.value = "some/path.star"
            assert getattr(form.params, name) == "some/path.star"
    # the job.star options follow
    assert form.params.to_job_options()


def test_invalid_input_shows_a_message_next_to_the_field():
    cls = get_job_type("refine3d").params_class
    form = JobForm(cls)
    form.set_value("nr_mpi", 0)                  # below param's bound: refused, message shown
    assert form.params.nr_mpi == 1
    assert form.messages["nr_mpi"].visible
    assert "at least 1" in form.messages["nr_mpi"].object
    form.set_value("nr_mpi", 4)                  # problems(): must be odd
    assert "odd" in form.messages["nr_mpi"].object
    form.set_value("nr_mpi", 3)
    assert not form.messages["nr_mpi"].visible
    form.set_value("sym_name", "X7")             # cross-field rule of the class
    assert form.messages["sym_name"].visible
    assert not form.valid
    assert any("Symmetry" in s for s in form.problem_summary())


def test_input_fields_offer_earlier_outputs_of_the_right_kind(tmp_path):
    from processing.jobs.extract_params import ExtractParameters
    from sessions import create_demo_session

    session = create_demo_session(tmp_path / "s", preset="test")
    params = ExtractParameters(in_optimisation="Import/job001/optimisation_set.star", binning=1, box_size=48,
                               crop_size=32)
    session.create_job("extract", params)
    cls = get_job_type("refine3d").params_class
    opt = input_candidates(session, cls.param["in_optimisation"].metadata)
    assert opt[:2] == ["Import/job001/optimisation_set.star",      # finished jobs first
                       "Extract/job002/optimisation_set.star"]     # then the scheduled one
    session.set_status("Extract/job002/", "Succeeded")
    opt = input_candidates(session, cls.param["in_optimisation"].metadata)
    # a finished job that never wrote its registered output (a run stopped early) comes last
    assert opt[:2] == ["Import/job001/optimisation_set.star", "Extract/job002/optimisation_set.star"]
    (session.root / "Extract/job002/optimisation_set.star").write_text(
        (session.root / "Import/job001/optimisation_set.star").read_text())
    opt = input_candidates(session, cls.param["in_optimisation"].metadata)
    assert opt[0] == "Extract/job002/optimisation_set.star"       # newest finished job first
    form = JobForm(cls, session)
    assert form.widgets["in_optimisation"].value == "Extract/job002/optimisation_set.star"  # required: prefilled
    assert form.widgets["fn_mask"].value == ""                                               # optional: not
    # paths are validated relative to the session
    form.set_value("in_optimisation", "Import/job001/optimisation_set.star")
    assert "in_optimisation" not in {p.field for p in form.problems}
    form.set_value("fn_ref", "Nowhere/map.mrc")
    assert "does not exist" in form.messages["fn_ref"].object


def test_pattern_globs():
    assert pattern_globs("Image Files (*.{spi,vol,mrc})") == ["*.spi", "*.vol", "*.mrc"]
    assert pattern_globs("*optimisation_set.star") == ["*optimisation_set.star"]
