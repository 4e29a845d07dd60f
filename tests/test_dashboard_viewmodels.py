"""The builder, pipeline, compare and presets pages' view-models without a browser: what they
hold follows the session's files, and their actions are checked server side (roles, values).
The browser tests (tests/ui) check that the pages show these models."""
from __future__ import annotations

import pytest

from dashboard import auth
from dashboard.context import page_url
from dashboard.watcher import SessionWatcher
from processing.jobs.extract_params import ExtractParameters
from sessions import Preset, create_demo_session, save_preset

OPT = "Import/job001/optimisation_set.star"


class Context:
    """What a page's context offers a model (dashboard.context.PageContext without a request)."""

    def __init__(self, session, identity=auth.LOCAL_OPERATOR):
        self.session, self.session_key = session, "s"
        self.watcher = SessionWatcher(session.root, interval=0.0)
        self.identity = identity

    def require(self, action: str) -> None:
        auth.require(self.identity, auth.OPERATOR, action)

    def url(self, route: str, **args) -> str:
        return page_url(route, session=self.session_key, **args)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    return create_demo_session(tmp_path_factory.mktemp("vm") / "s", preset="test")


def test_builder_model_prefills_checks_and_follows_the_job_type(session):
    from dashboard.viewmodels import BuilderModel

    model = BuilderModel(Context(session), "extract")
    # The one required input is prefilled from the import job's output; nothing else is wrong.
    assert model.params.in_optimisation == OPT
    assert model.ready and model.problems == []
    assert any("Å" in fact for fact in model.facts)                 # box size in Å from the pixel size
    model.job_type = "refine3d"
    assert type(model.params).__name__ == "Refine3DParameters"
    assert model.params.in_optimisation == OPT
    # No reference yet: the problem is named by tab and label, and Run is refused server side.
    assert not model.ready
    assert any(p.startswith("I/O: Reference map") for p in model.problems)
    assert model.run() is None
    assert model.message[0] == "error" and "Reference map" in model.message[1]
    assert session.read_pipeline().processes[-1].name == "Import/job001/"      # nothing created


def test_builder_model_presets_and_launch_roles(session, tmp_path):
    from dashboard.viewmodels import BuilderModel

    save_preset(Preset("small-box", "extract", {"box_size": "40", "crop_size": "32", "binning": "1"},
                       description="test"), session=session)
    viewer = BuilderModel(Context(session, auth.Identity("guest", auth.VIEWER)), "extract")
    assert not viewer.ready                                           # valid values, but a viewer
    viewer.run()
    assert viewer.message[0] == "error" and "operators only" in viewer.message[1]
    viewer.preset_name = "mine"
    viewer.save_preset()
    assert viewer.message[0] == "error" and not (session.root / "presets" / "mine.star").exists()

    model = BuilderModel(Context(session), "extract")
    assert "small-box" in model.preset_choices.values()
    model.preset = "small-box"
    model.load_preset()
    assert model.message == ("ok", "Loaded preset small-box.")
    assert (model.params.box_size, model.params.crop_size) == (40, 32)
    model.preset = "no-such"
    model.load_preset()
    assert model.message == ("error", "no preset no-such")
    model.preset_name = "bad name!"
    model.save_preset()
    assert model.message[0] == "error" and "preset name" in model.message[1]
    model.preset_name = "bin1-40"
    model.save_preset()
    assert model.message[0] == "ok" and "bin1-40" in model.preset_choices.values()


def test_pipeline_model_follows_the_jobs(session):
    from dashboard.viewmodels import PipelineModel

    ctx = Context(session)
    model = PipelineModel(ctx)
    names = list(model.nodes["name"])
    assert names[0] == "Import/job001/" and len(model.jobs) == len(names)
    info = session.create_job("extract", ExtractParameters(in_optimisation=OPT, binning=1, box_size=48,
                                                           crop_size=32), alias="pipe")
    ctx.watcher.poll(force=True)
    model.tick()
    assert model.nodes["name"][-1] == info.name and model.nodes["x"][-1] == 1      # one column right
    assert model.jobs[0]["name"] == info.name and model.jobs[0]["alias"] == "pipe"
    assert model.jobs[0]["status"] == "Scheduled"
    assert any(OPT in files for files in model.edges["files"])
    session.set_status(info.name, "Failed")
    ctx.watcher.poll(force=True)
    model.tick()
    assert model.nodes["status"][-1] == "Failed" and model.jobs[0]["status"] == "Failed"


def test_compare_model_lists_differing_parameters(session):
    from dashboard.viewmodels import CompareModel
    from processing.jobs.refine3d_params import Refine3DParameters

    jobs = []
    for diameter in (180.0, 220.0):
        params = Refine3DParameters(in_optimisation=OPT, fn_ref="Dataset/truth_map.mrc", particle_diameter=diameter)
        jobs.append(session.create_job("refine3d", params).name)
    ctx = Context(session)
    model = CompareModel(ctx, [j.rstrip("/") for j in jobs])
    assert model.chosen == jobs
    assert [r.job for r in model.runs] == jobs and len({r.colour for r in model.runs}) == 2
    assert model.differing == [("Mask diameter (A)", ["180", "220"])]
    model.chosen = jobs[:1]
    assert [r.job for r in model.runs] == jobs[:1] and model.differing == []


def test_presets_model_groups_by_job_type(session):
    from dashboard.viewmodels import PresetsModel

    save_preset(Preset("listed", "reconstruct", {"binning": "2"}, description="test"), session=session)
    groups = {job_type: [p.name for p in presets] for job_type, _, presets in PresetsModel(Context(session)).groups}
    assert "listed" in groups["reconstruct"]


def test_builder_facts_wait_for_a_refused_value(session):
    """A value the form refuses (out of bounds) leaves the previous one in the parameters: the
    derived facts disappear until it is fixed instead of describing the old value."""
    from dashboard.forms import JobForm
    from dashboard.viewmodels import BuilderModel

    model = BuilderModel(Context(session), "extract")
    form = JobForm(type(model.params), session, params=model.params, validator=model.validate)
    form.on_change(lambda: model.checked(form.problems, refused=form.value_errors))
    form.set_value("box_size", 64)
    assert any("64" in fact for fact in model.facts)
    form.widgets["box_size"].value = -8                     # refused by the parameter's bounds
    assert model.params.box_size == 64 and model.facts == [] and not model.ready
    assert any("Box size" in p for p in model.problems)
    form.set_value("box_size", 96)
    assert any("96" in fact for fact in model.facts) and model.ready


def test_pipeline_layout_untangles_a_large_pipeline():
    """Thirty jobs created interleaved (three datasets, each Import -> Extract -> Reconstruct ->
    3D auto-refine -> ... and back): laid out in creation order their links cross; the layered
    layout with barycentre ordering draws them without a crossing, one column per depth."""
    from dashboard.viewmodels.pipeline import process_links, edge_crossings, graph_layout
    from sessions.pipeline import Pipeline, Process

    pipe = Pipeline()
    chains: list[list[str]] = [[], [], []]
    number = 0
    for step in range(10):
        for chain in (2, 0, 1) if step % 2 else (0, 1, 2):
            number += 1
            name = f"Job{step}/job{number:03d}/"
            pipe.processes.append(Process(name, "relion.test", "Succeeded"))
            output = f"{name}out.star"
            pipe.add_output_edge(name, output)
            if chains[chain]:
                pipe.add_input_edge(f"{chains[chain][-1]}out.star", name)
            chains[chain].append(name)
    links = process_links(pipe)
    creation = {}
    for name in (p.name for p in pipe.processes):
        column = int(name[3])
        creation[name] = (column, sum(1 for other in creation.values() if other[0] == column))
    assert edge_crossings(creation, links) > 0
    layout = graph_layout(pipe)
    assert edge_crossings(layout, links) == 0
    assert sorted({column for column, _ in layout.values()}) == list(range(10))
    assert all(layout[chain[k]][1] == layout[chain[0]][1] for chain in chains for k in range(10))
