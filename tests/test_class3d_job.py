"""3D classification (relion.class3d, tomo): the form against RELION 5's, the relion_refine
command it builds (RELION's token order), bad values named by field, job.star and pipeline
nodes as RELION and the CCP-EM pipeliner read them, continuation; and Subset selection of
classes from it (relion.select.interactive) on a format-correct classification output
(tests/class3d_fake.py)."""
from __future__ import annotations

import importlib
import shlex
from pathlib import Path

import numpy as np
import pytest

from processing.errors import InputError
from processing.io.jobstar import JobStar
from processing.io.particles import ParticleSet
from processing.io.star import read_star
from processing.jobs.class3d_params import CLASS3D_LABELS, Class3DParameters, output_nodes
from processing.jobs.select_params import SelectParameters
from processing.refine.options import SAMPLING_CHOICES
from processing.select import read_summary
from sessions import JobValidationError, Session, runner
from sessions.jobtypes import get_job_type, job_type_for_label

from class3d_fake import write_fake_class3d
from conftest import ccpem_pipeliner_view

# variable -> (tab, label, default) of RELION 5's tomo Class3D form (src/pipeline_jobs.cpp
# initialiseClass3DJob with is_tomo; order of src/gui_jobwindow.cpp initialiseClass3DWindow).
EXPECTED = {
    "in_optimisation": ("I/O", "Input optimisation set: ", ""),
    "use_direct_entries": ("I/O", "OR: use direct entries?", False),
    "in_particles": ("I/O", "Input particle set: ", ""),
    "in_tomograms": ("I/O", "Input tomogram set: ", ""),
    "in_trajectories": ("I/O", "Input trajectory set: ", ""),
    "fn_ref": ("I/O", "Reference map:", ""),
    "fn_mask": ("I/O", "Reference mask (optional):", ""),
    "fn_cont": ("I/O", "Continue from here: ", ""),
    "ref_correct_greyscale": ("Reference", "Ref. map is on absolute greyscale?", False),
    "trust_ref_size": ("Reference", "Resize reference if needed?", True),
    "ini_high": ("Reference", "Initial low-pass filter (A):", 60),
    "sym_name": ("Reference", "Symmetry:", "C1"),
    "do_ctf_correction": ("CTF", "Do CTF-correction?", True),
    "ctf_intact_first_peak": ("CTF", "Ignore CTFs until first peak?", False),
    "nr_classes": ("Optimisation", "Number of classes:", 1),
    "tau_fudge": ("Optimisation", "Regularisation parameter T:", 1),      # tomo: 1 (SPA: 4)
    "nr_iter": ("Optimisation", "Number of iterations:", 25),
    "do_fast_subsets": ("Optimisation", "Use fast subsets (for large data sets)?", False),
    "particle_diameter": ("Optimisation", "Mask diameter (A):", 200),
    "do_zero_mask": ("Optimisation", "Mask individual particles with zeros?", True),
    "highres_limit": ("Optimisation", "Limit resolution E-step to (A): ", -1),
    "dont_skip_align": ("Sampling", "Perform image alignment?", True),
    "sampling": ("Sampling", "Angular sampling interval:", "7.5 degrees"),
    "offset_range": ("Sampling", "Offset search range (pix):", 5),
    "offset_step": ("Sampling", "Offset search step (pix):", 1),
    "do_local_ang_searches": ("Sampling", "Perform local angular searches?", False),
    "sigma_angles": ("Sampling", "Local angular search range:", 5),
    "sigma_tilt": ("Sampling", "Prior width on tilt angle (deg):", -1),
    "do_parallel_discio": ("Compute", "Use parallel disc I/O?", True),
    "nr_pool": ("Compute", "Number of pooled particles:", 3),
    "do_pad1": ("Compute", "Skip padding?", False),
    "do_preread_images": ("Compute", "Pre-read all particles into RAM?", False),
    "scratch_dir": ("Compute", "Copy particles to scratch directory:", None),  # env-dependent
    "do_combine_thru_disc": ("Compute", "Combine iterations through disc?", False),
    "use_gpu": ("Compute", "Use GPU acceleration?", False),
    "gpu_ids": ("Compute", "Which GPUs to use:", ""),
    "nr_mpi": ("Running", "Number of MPI procs:", 1),
    "nr_threads": ("Running", "Number of threads:", 1),
    "do_queue": ("Running", "Submit to queue?", False),
    "queuename": ("Running", "Queue name: ", "openmpi"),
    "qsub": ("Running", "Queue submit command:", "sbatch"),
    "qsubscript": ("Running", "Standard submission script:", ""),
    "min_dedicated": ("Running", "Minimum dedicated cores per node:", 1),
    "other_args": ("Running", "Additional arguments:", ""),
}

OPT = "Select/job008/optimisation_set.star"
REF = "Refine3D/job007/run_class001.mrc"


def demo_like(**changes) -> Class3DParameters:
    values = dict(in_optimisation=OPT, fn_ref=REF, nr_classes=2, nr_iter=5, sym_name="C6", particle_diameter=250,
                  nr_threads=2, scratch_dir="")
    values.update(changes)
    return Class3DParameters(**values)


@pytest.fixture
def project(tmp_path, monkeypatch) -> Session:
    """A session (the working directory) with the input files the forms name."""
    session = Session.create(tmp_path / "s")
    for name in (OPT, REF, "MaskCreate/job010/mask.mrc"):
        (session.root / name).parent.mkdir(parents=True, exist_ok=True)
        (session.root / name).write_text("x")
    monkeypatch.chdir(session.root)
    return session


# ---- the form ------------------------------------------------------------------------------------

def test_every_field_in_its_tab_in_relions_order_with_variable_label_default_and_help():
    cls = Class3DParameters
    assert cls.tabs == ("I/O", "Reference", "CTF", "Optimisation", "Sampling", "Compute", "Running")
    assert (cls.job_type_label, cls.process_dir, cls.is_tomo) == ("relion.class3d", "Class3D", True)
    by_var = {cls.param[name].metadata["var"]: name for name in cls.fields()}
    assert set(by_var) == set(EXPECTED)
    for var, (tab, label, default) in EXPECTED.items():
        p = cls.param[by_var[var]]
        assert (p.metadata["tab"], p.label) == (tab, label), var
        assert p.doc and len(p.doc) > 30, f"{var} needs help text"
        if default is not None:
            assert p.default == default, var
    # within each tab, RELION's order
    grouped = cls.fields_by_tab()
    expected_order = {}
    for var, (tab, _, _) in EXPECTED.items():
        expected_order.setdefault(tab, []).append(by_var[var])
    assert grouped == expected_order
    assert list(cls.param.sampling.objects) == list(SAMPLING_CHOICES)
    assert cls.param.nr_classes.softbounds == (1, 50) and cls.param.tau_fudge.softbounds == (0.1, 10)
    assert cls.param.highres_limit.softbounds == (-1, 20) and cls.param.sigma_angles.softbounds == (0, 15)
    assert not {"do_blush", "relax_sym", "allow_coarser", "do_helix"} & set(by_var)
    assert "Blush" in cls.__doc__ and "Helix" in cls.__doc__
    assert get_job_type("class3d").params_class is cls and job_type_for_label("relion.class3d").name == "class3d"


# ---- the command -----------------------------------------------------------------------------------

def test_command_is_relions_in_its_order():
    # getCommandsClass3DJob's order: input (+ tilt prior), reference, compute, CTF, optimisation,
    # mask, sampling, symmetry, running.
    params = demo_like(sigma_tilt=10, fn_mask="MaskCreate/job010/mask.mrc", highres_limit=12, nr_threads=4,
                       use_gpu=True, gpu_ids="0", other_args="--random_seed 3")
    assert params.program() == "relion_refine"
    assert shlex.join(params.command_args("Class3D/job009/")) == (
        "--o Class3D/job009/run --ios Select/job008/optimisation_set.star --sigma_tilt 10 "
        "--ref Refine3D/job007/run_class001.mrc --firstiter_cc --trust_ref_size --ini_high 60 "
        "--dont_combine_weights_via_disc --pool 3 --pad 2 --ctf --iter 5 --tau2_fudge 1 --particle_diameter 250 "
        "--K 2 --flatten_solvent --zero_mask --strict_highres_exp 12 --solvent_mask MaskCreate/job010/mask.mrc "
        "--oversampling 1 --healpix_order 2 --offset_range 5 --offset_step 2 --sym C6 --norm --scale "
        "--j 4 --gpu 0 --random_seed 3")
    local = demo_like(do_local_ang_searches=True, sigma_angles=5, sampling="3.7 degrees", offset_step=0.5,
                      do_fast_subsets=True, nr_iter=25, tau_fudge=4, ref_correct_greyscale=True, nr_mpi=3)
    args = local.command_args("Class3D/job009")
    assert local.program() == "relion_refine_mpi"
    assert "--firstiter_cc" not in args and args[args.index("--tau2_fudge") + 1] == "4"
    assert args[args.index("--iter") + 1:args.index("--iter") + 2] == ["25"]
    assert "--fast_subsets --K 2" in shlex.join(args)
    # the range is +/- 3 sigma: RELION writes range / 3 with six significant digits
    assert "--healpix_order 3 --sigma_ang 1.66667 --offset_range 5 --offset_step 1" in shlex.join(args)
    skip = demo_like(dont_skip_align=False, do_local_ang_searches=True)
    args = skip.command_args("Class3D/job009")
    assert "--skip_align" in args and not {"--healpix_order", "--sigma_ang", "--offset_range"} & set(args)
    direct = demo_like(in_optimisation="", use_direct_entries=True, in_particles="p.star", in_tomograms="t.star")
    assert direct.command_args("Class3D/job009")[2:6] == ["--i", "p.star", "--tomograms", "t.star"]


def test_the_form_gives_the_command_of_relions_own_classification():
    """The relion_refine command of tests/data/class3d_relion (its optimiser.star's second line):
    the form with those values builds the same flags and values (RELION's GUI puts --sigma_tilt
    right after the input; the recorded command has it at the end)."""
    recorded = (Path(__file__).parent / "data" / "class3d_relion" / "run_it006_optimiser.star").read_text().splitlines()[1]
    params = Class3DParameters(in_optimisation="ex/optimisation_set.star", fn_ref="rec/merged.mrc", nr_pool=4,
                               tau_fudge=4, nr_iter=6, nr_classes=2, particle_diameter=200, offset_range=4,
                               sym_name="C6", sigma_tilt=10, scratch_dir="", other_args="--random_seed 1")

    def pairs(tokens: list[str]) -> set[tuple[str, str]]:
        out, flag = set(), None
        for token in tokens + ["--"]:
            if token.startswith("--"):
                if flag is not None:
                    out.add((flag, ""))
                flag = token
            else:
                out.add((flag, token))
                flag = None
        return out - {("--", "")}

    args = params.command_args("class/")
    assert pairs(args) == pairs(recorded.lstrip("# ").split())
    assert args[:2] == ["--o", "class/run"]


def test_continuation_passes_what_relion_passes_on_continue():
    params = demo_like(fn_cont="Class3D/job009/run_it005_optimiser.star", nr_iter=8, fn_mask="m.mrc")
    assert shlex.join(params.command_args("Class3D/job009")) == (
        "--continue Class3D/job009/run_it005_optimiser.star --o Class3D/job009/run "
        "--dont_combine_weights_via_disc --pool 3 --pad 2 --iter 8 --tau2_fudge 1 --particle_diameter 250 "
        "--solvent_mask m.mrc --oversampling 1 --healpix_order 2 --offset_range 5 --offset_step 2 --j 2")
    spec = get_job_type("class3d")
    assert spec.continue_args is not None


def test_command_parses_as_a_classification_in_tomodash_refine():
    options = demo_like(do_local_ang_searches=True, highres_limit=10, dont_skip_align=True).to_options("Class3D/job009")
    assert options.classification and not options.split_random_halves
    assert (options.n_classes, options.n_iterations, options.tau2_fudge) == (2, 5, 1.0)
    assert options.sigma_ang == pytest.approx(5 / 3, rel=1e-5) and options.strict_highres_exp == 10
    assert options.symmetry == "C6" and options.output_root == "Class3D/job009/run"
    assert demo_like(dont_skip_align=False).to_options("Class3D/job009").skip_align


# ---- bad values ------------------------------------------------------------------------------------

def test_bad_values_are_named_by_field(project):
    assert demo_like(fn_mask="MaskCreate/job010/mask.mrc").problems() == []

    def fields(**changes) -> dict[str, str]:
        return {p.field: p.message for p in demo_like(**changes).problems()}

    assert fields(fn_ref="") == {"fn_ref": "is required"}
    assert fields(fn_ref="nope.mrc") == {"fn_ref": "file does not exist: nope.mrc"}
    assert fields(in_optimisation="") == {"in_optimisation": "is required (or choose direct entries)"}
    assert "sym_name" in fields(sym_name="X7")
    assert fields(do_fast_subsets=True, nr_iter=10) == {
        "do_fast_subsets": "needs at least 20 iterations (Number of iterations is 10)"}
    assert "use_gpu" in fields(use_gpu=True, dont_skip_align=False)
    assert fields(do_local_ang_searches=True, sigma_angles=0) == {
        "sigma_angles": "must be positive for local angular searches"}
    assert fields(tau_fudge=0) == {"tau_fudge": "must be positive (got 0)"}
    assert "gpu_ids" in fields(use_gpu=True, gpu_ids="a:b")
    assert fields(nr_mpi=2) == {}                      # no half sets: any number of processes
    cont = {p.field: p.message for p in demo_like(in_optimisation="", fn_cont="run_data.star")
            .problems(is_continue=True)}
    assert cont == {"fn_cont": "must be a run_itNNN_optimiser.star file (its name must contain _it and _optimiser)"}
    with pytest.raises(InputError, match="Number of classes: must be at least 1") as info:
        Class3DParameters.from_values({"nr_classes": 0})
    assert info.value.column == "nr_classes"
    with pytest.raises(InputError, match="Reference map: is required") as info:
        demo_like(fn_ref="").check()
    assert info.value.column == "fn_ref"


# ---- job.star, pipeline, CCP-EM, continuation ----------------------------------------------------

def test_job_star_round_trip_and_pipeline_nodes_as_relion_registers_them(project):
    session = project
    params = demo_like(nr_classes=3, nr_iter=4, do_local_ang_searches=True, sigma_angles=7.5, sigma_tilt=10,
                       highres_limit=9, tau_fudge=2.5, sampling="3.7 degrees", dont_skip_align=True)
    info = session.create_job("class3d", params, alias="classes")
    star = JobStar.read(info.path / "job.star")
    assert (star.type_label, star.is_tomo, star.is_continue) == ("relion.class3d", True, False)
    assert star.options["nr_classes"] == "3" and star.options["tau_fudge"] == "2.5"
    assert star.options["sampling"] == "3.7 degrees" and star.options["do_local_ang_searches"] == "Yes"
    again = Class3DParameters.from_job_options(star.options)
    for name in Class3DParameters.fields():
        assert getattr(again, name) == getattr(params, name), name
    pipe = session.read_pipeline()
    outputs = {n: pipe.node(n).type_label for n in pipe.outputs_of(info.name)}
    assert outputs == {f"{info.name}run_it004_data.star": "ParticleGroupMetadata.star.relion.refine3d",
                       f"{info.name}run_it004_optimiser.star": "OptimiserData.star.relion.class3d",
                       **{f"{info.name}run_it004_class{k:03d}.mrc": "DensityMap.mrc.relion.class3d" for k in (1, 2, 3)},
                       f"{info.name}run_it004_optimisation_set.star": "TomoOptimisationSet.star.relion.class3d"}
    assert [o.type_label for o in output_nodes(params)] == [CLASS3D_LABELS[k] for k in ("data", "optimiser")] + \
        [CLASS3D_LABELS["map"]] * 3 + [CLASS3D_LABELS["optimisation_set"]]
    assert set(pipe.inputs_of(info.name)) == {OPT, REF}
    assert (session.root / "Class3D" / "classes").is_symlink()

    # continuation resumes from the last optimiser, as RELION's Continue does
    spec = get_job_type("class3d")
    assert spec.continue_args(info.path, info.name) == {}
    for it in (1, 2):
        (info.path / f"run_it{it:03d}_optimiser.star").write_text("x")
    assert spec.continue_args(info.path, info.name) == {"fn_cont": f"{info.name}run_it002_optimiser.star"}


# ---- Subset selection of classes -------------------------------------------------------------------

@pytest.fixture
def classified(project):
    """A session whose Class3D job (K=3, 3 iterations, box 24) has finished."""
    session = project
    info = session.create_job("class3d", demo_like(nr_classes=3, nr_iter=3))
    fake = write_fake_class3d(session.root, info.name)
    session.set_status(info.name, "Succeeded", touch_markers=True)
    return session, info, fake


def test_class_selection_keeps_exactly_those_classes_particles_with_every_column(classified, capsys):
    from processing.jobs import select as select_job

    session, info, fake = classified
    params = SelectParameters(fn_model=f"{info.name}run_it002_optimiser.star", select_classes="3, 1")
    assert params.problems() == [] and params.process_type_label() == "relion.select.interactive"
    job = session.create_job("select", params)
    assert select_job.main(["--job-dir", job.name]) == 0
    out = job.path
    kept = read_star(out / "particles.star")
    source = read_star(info.path / "run_it002_data.star")
    chosen = np.isin(fake.classes[2], [1, 3])
    assert list(kept["particles"]["rlnTomoParticleName"]) == [n for n, c in zip(fake.particle_names, chosen) if c]
    assert set(kept["particles"]["rlnClassNumber"]) == {1, 3}
    # RELION's columns and tables travel unchanged
    assert list(kept) == list(source) == ["general", "optics", "particles"]
    assert list(kept["particles"].columns) == list(source["particles"].columns)
    assert kept["particles"].reset_index(drop=True).equals(source["particles"][chosen].reset_index(drop=True))
    assert ParticleSet.read(out / "particles.star").particles.shape[0] == chosen.sum()
    opt = read_star(out / "optimisation_set.star")["optimisation_set"]
    assert opt["rlnTomoParticlesFile"] == f"{job.name}particles.star"
    assert opt["rlnTomoTomogramsFile"] == "Import/job001/tomograms.star"      # carried from the iteration's set
    summary = read_summary(out)
    assert summary == {"input": len(chosen), "kept": int(chosen.sum()), "other_classes": int((~chosen).sum()),
                       "classes": [1, 3], "recentered": False, "task": "classes"}
    assert "tomodash select --opt" in (out / "note.txt").read_text()
    # from the iteration's data.star or optimisation set too (rlnClassNumber)
    by_data = SelectParameters(fn_data=f"{info.name}run_it003_data.star", select_classes="2")
    assert by_data.problems() == [] and by_data.process_type_label() == "relion.select.interactive"
    pipe = session.read_pipeline()
    assert pipe.node(f"{info.name}run_it002_optimiser.star").type_label.startswith("OptimiserData.star")
    assert info.name in {pipe.producer_of(n) for n in pipe.inputs_of(job.name)}


def test_bad_class_selections_are_named(classified):
    from processing.jobs.select import check_inputs

    session, info, fake = classified
    optimiser = f"{info.name}run_it003_optimiser.star"

    def fields(**values) -> dict[str, str]:
        return {p.field: p.message for p in SelectParameters(**values).problems()}

    assert "select_classes" in fields(fn_model=optimiser, select_classes="1 x")
    assert fields(fn_model=optimiser) == {
        "do_remove_duplicates": "or Select based on metadata values must be chosen, or classes to keep "
                                "(Class options tab)"}
    assert "fn_model" in fields(fn_model=f"{info.name}run_it003_data.star", select_classes="1")
    assert "fn_model" in fields(fn_model=optimiser, select_classes="1", do_remove_duplicates=True)
    assert "select_classes" in fields(fn_model=optimiser, select_classes="1", do_select_values=True)
    with pytest.raises(InputError, match="no particle is in class 7") as empty:
        check_inputs(SelectParameters(fn_model=optimiser, select_classes="7"))
    assert empty.value.column == "rlnClassNumber"
    (session.root / "plain.star").write_text(
        "data_particles\nloop_\n_rlnTomoName #1\n_rlnTomoParticleName #2\n"
        "_rlnCenteredCoordinateXAngst #3\n_rlnCenteredCoordinateYAngst #4\n_rlnCenteredCoordinateZAngst #5\n"
        "TS_01 TS_01/1 0 0 0\n")
    with pytest.raises(InputError, match="not from a classification") as plain:
        check_inputs(SelectParameters(fn_data="plain.star", select_classes="1"))
    assert plain.value.column == "rlnClassNumber"
    # the session refuses them before anything is made
    before = session.pipeline_path.read_text()
    with pytest.raises(InputError):
        runner.run_job(session, "select", SelectParameters(fn_model=optimiser, select_classes="7"))
    with pytest.raises(JobValidationError):
        runner.run_job(session, "select", SelectParameters(fn_model=optimiser, select_classes="0"))
    assert session.pipeline_path.read_text() == before


def test_ccpem_pipeliner_reads_the_classification_and_the_class_selection(classified):
    session, info, _ = classified
    select = session.create_job("select", SelectParameters(fn_model=f"{info.name}run_it003_optimiser.star",
                                                          select_classes="2"))
    importlib.import_module("pipeliner.project_graph")  # a test dependency: fail, not skip, when absent
    view = ccpem_pipeliner_view(session.root, {f"{info.name}job.star": ["nr_classes", "tau_fudge", "sampling"],
                                               f"{select.name}job.star": ["fn_model"]})
    seen = view["processes"][info.name]
    assert (seen["type"], seen["status"], seen["inputs"]) == ("relion.class3d", "Succeeded", 2)
    assert seen["outputs"][f"{info.name}run_it003_class002.mrc"] == "DensityMap.mrc.relion.class3d"
    assert view["jobs"][f"{info.name}job.star"] == {"class": "TomoRelionClass3DJob", "nr_classes": 3,
                                                     "tau_fudge": 1.0, "sampling": "7.5 degrees"}
    assert view["processes"][select.name]["type"] == "relion.select.interactive"
    assert view["jobs"][f"{select.name}job.star"] == {"class": "RelionSelectInteractive",
                                                       "fn_model": f"{info.name}run_it003_optimiser.star"}


def test_continuing_with_more_iterations_registers_the_new_last_iteration(classified, monkeypatch):
    session, info, fake = classified
    star = JobStar.read(info.path / "job.star")
    JobStar(star.type_label, is_continue=False, is_tomo=True, options={**star.options, "nr_iter": "5"}).write(
        info.path / "job.star")
    session.set_status(info.name, "Failed", touch_markers=True)
    launched = []
    monkeypatch.setattr(runner, "launch", lambda s, name, **kw: launched.append(kw))
    runner.continue_job(session, info.name)
    star = JobStar.read(info.path / "job.star")
    assert star.is_continue and star.options["fn_cont"] == f"{info.name}run_it003_optimiser.star"
    assert launched == [{"is_continue": True}]
    pipe = session.read_pipeline()
    outputs = pipe.outputs_of(info.name)
    # the written last iteration stays; the run's new last iteration (5) is registered
    assert f"{info.name}run_it003_data.star" in outputs and f"{info.name}run_it005_class003.mrc" in outputs
    assert pipe.node(f"{info.name}run_it005_optimiser.star").type_label == "OptimiserData.star.relion.class3d"
    assert len(outputs) == len(set(outputs)) == 12
    assert "run_it005_optimisation_set.star" in (info.path / "job_pipeline.star").read_text()
