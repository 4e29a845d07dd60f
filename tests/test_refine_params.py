"""Refine3DParameters (tomo 3D auto-refine form) and the relion_refine flag parser."""
from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest

from processing.errors import InputError
from processing.io.jobstar import JobStar
from processing.jobs.refine3d_params import Refine3DParameters
from processing.jobs import refine3d as cli
from processing.refine.flags import parse_refine_args
from processing.refine.options import SAMPLING_CHOICES, RefineOptions

# The command RELION 5's GUI built for the tutorial's job (project spec 8.5, [observed]).
OBSERVED = (
    '--o Refine3D/job004/run --auto_refine --split_random_halves --ios '
    'Reconstruct/job003/optimisation_set.star --ref Reconstruct/job003/merged.mrc --firstiter_cc '
    '--trust_ref_size --ini_high 60 --dont_combine_weights_via_disc --pool 3 --pad 2  --ctf '
    '--particle_diameter 230 --flatten_solvent --zero_mask --oversampling 1 --healpix_order 2 '
    '--auto_local_healpix_order 4 --offset_range 5 --offset_step 2 --sym C6 --low_resol_join_halves 40 '
    '--norm --scale  --j 8 --gpu ""'
)

# variable -> (tab, label, default) of RELION's form (project spec 8.2, 8.5, 8.1).
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
    "particle_diameter": ("Optimisation", "Mask diameter (A):", 200),
    "do_zero_mask": ("Optimisation", "Mask individual particles with zeros?", True),
    "do_solvent_fsc": ("Optimisation", "Use solvent-flattened FSCs?", False),
    "sampling": ("Auto-sampling", "Initial angular sampling:", "7.5 degrees"),
    "offset_range": ("Auto-sampling", "Initial offset range (pix):", 5),
    "offset_step": ("Auto-sampling", "Initial offset step (pix):", 1),
    "auto_local_sampling": ("Auto-sampling", "Local searches from auto-sampling:", "1.8 degrees"),
    "auto_faster": ("Auto-sampling", "Use finer angular sampling faster?", False),
    "sigma_tilt": ("Auto-sampling", "Prior width on tilt angle (deg):", -1),
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


def tutorial(**changes) -> Refine3DParameters:
    values = dict(
        in_optimisation="Reconstruct/job003/optimisation_set.star", fn_ref="Reconstruct/job003/merged.mrc",
        sym_name="C6", particle_diameter=230, nr_threads=8, nr_mpi=3, use_gpu=True, scratch_dir="",
    )
    values.update(changes)
    return Refine3DParameters(**values)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name in ("optimisation_set.star", "merged.mrc", "mask.mrc", "run_it003_optimiser.star"):
        (tmp_path / name).write_text("x")
        out[name] = str(tmp_path / name)
    return out


# ---- the form ------------------------------------------------------------------------------


def test_every_field_in_its_tab_with_relion_variable_label_default_and_help():
    cls = Refine3DParameters
    assert cls.tabs == ("I/O", "Reference", "CTF", "Optimisation", "Auto-sampling", "Compute", "Running")
    assert cls.job_type_label == "relion.refine3d.tomo" and cls.process_dir == "Refine3D" and cls.is_tomo
    by_var = {cls.param[name].metadata["var"]: name for name in cls.fields()}
    assert set(by_var) == set(EXPECTED)
    for var, (tab, label, default) in EXPECTED.items():
        p = cls.param[by_var[var]]
        assert p.metadata["tab"] == tab, var
        assert p.label == label, var
        assert p.doc and len(p.doc) > 30, f"{var} needs help text"
        if default is not None:
            assert p.default == default, var
    grouped = cls.fields_by_tab()
    assert all(grouped[tab] for tab in cls.tabs)
    assert "Helix" not in cls.tabs
    assert not {"do_blush", "relax_sym", "do_helix"} & set(by_var)
    assert "Blush" in cls.__doc__ and "Helix" in cls.__doc__


def test_bounds_and_sampling_menus():
    cls = Refine3DParameters
    assert list(cls.param.sampling.objects) == list(SAMPLING_CHOICES)
    assert list(cls.param.auto_local_sampling.objects) == list(SAMPLING_CHOICES)
    assert cls.param.ini_high.softbounds == (0, 200) and cls.param.ini_high.step == 5
    assert cls.param.particle_diameter.softbounds == (0, 1000) and cls.param.particle_diameter.step == 10
    assert cls.param.offset_range.softbounds == (0, 30)
    assert cls.param.offset_step.softbounds == (0.1, 5) and cls.param.offset_step.step == 0.1
    assert cls.param.sigma_tilt.softbounds == (-1, 30)
    assert cls.param.nr_pool.softbounds == (1, 16)
    with pytest.raises(ValueError):
        Refine3DParameters(sampling="5 degrees")
    with pytest.raises(ValueError):
        Refine3DParameters(offset_range=-1)


def test_job_star_round_trip(tmp_path):
    params = tutorial(sampling="3.7 degrees", auto_local_sampling="0.9 degrees", offset_step=1.5,
                      sigma_tilt=10, ref_correct_greyscale=True, do_pad1=True, gpu_ids="0:1",
                      other_args="--tau2_fudge 2")
    job = JobStar(Refine3DParameters.job_type_label, is_tomo=True, options=params.to_job_options())
    job.write(tmp_path / "job.star")
    back = JobStar.read(tmp_path / "job.star")
    assert back.type_label == "relion.refine3d.tomo" and back.is_tomo
    assert back.options["sampling"] == "3.7 degrees" and back.options["ref_correct_greyscale"] == "Yes"
    again = Refine3DParameters.from_job_options(back.options)
    for name in Refine3DParameters.fields():
        assert getattr(again, name) == getattr(params, name), name


# ---- command line and options ---------------------------------------------------------------


def test_command_args_reproduce_the_observed_relion_command():
    params = tutorial()
    assert params.command_args("Refine3D/job004/") == shlex.split(OBSERVED)
    assert params.command_args("Refine3D/job004") == shlex.split(OBSERVED)
    assert params.program() == "relion_refine_mpi"
    assert tutorial(nr_mpi=1).program() == "relion_refine"
    assert params.command_line("Refine3D/job004").startswith("relion_refine_mpi --o Refine3D/job004/run ")


def test_to_options_equals_parsing_the_observed_command():
    options = tutorial().to_options("Refine3D/job004")
    parsed = parse_refine_args(shlex.split(OBSERVED) + ["--pipeline_control", "Refine3D/job004/"])
    assert options.with_changes(command_line=()) == parsed.with_changes(command_line=())
    assert options.command_line == tuple(shlex.split(OBSERVED))
    assert options.output_root == "Refine3D/job004/run"
    assert options.optimisation_set == "Reconstruct/job003/optimisation_set.star"
    assert options.reference == "Reconstruct/job003/merged.mrc"
    assert options.firstiter_cc and options.trust_ref_size and options.ini_high == 60
    assert options.symmetry == "C6" and options.ctf and not options.ctf_intact_first_peak
    assert options.particle_diameter == 230 and options.zero_mask and options.flatten_solvent
    assert options.oversampling == 1 and options.healpix_order == 2 and options.auto_local_healpix_order == 4
    assert options.offset_range == 5 and options.offset_step == 2
    assert options.sigma_tilt == -1 and not options.auto_ignore_angles and not options.auto_resol_angles
    assert options.low_resol_join_halves == 40 and options.norm and options.scale
    assert options.auto_refine and options.split_random_halves
    assert options.pool == 3 and options.pad == 2 and options.threads == 8 and options.gpu == ""
    assert not options.combine_weights_via_disc and options.parallel_disc_io
    assert not options.preread_images and options.scratch_dir is None


def test_to_options_maps_each_field_like_the_gui():
    o = tutorial(ref_correct_greyscale=True, trust_ref_size=False, ini_high=0, offset_step=1.5,
                 offset_range=7, sampling="3.7 degrees", auto_local_sampling="0.9 degrees",
                 auto_faster=True, do_pad1=True, sigma_tilt=10, do_ctf_correction=True,
                 ctf_intact_first_peak=True, do_zero_mask=False, use_gpu=False, nr_threads=4,
                 do_combine_thru_disc=True, do_parallel_discio=False, scratch_dir="/scratch",
                 nr_pool=5, other_args="--tau2_fudge 2 --random_seed 7").to_options("Refine3D/job009")
    assert not o.firstiter_cc and not o.trust_ref_size and o.ini_high == -1.0
    assert o.offset_step == 3.0 and o.offset_range == 7
    assert o.healpix_order == 3 and o.auto_local_healpix_order == 5
    assert o.auto_ignore_angles and o.auto_resol_angles
    assert o.pad == 1 and o.sigma_tilt == 10 and o.ctf and o.ctf_intact_first_peak
    assert not o.zero_mask and o.flatten_solvent and o.gpu is None and o.threads == 4
    assert o.combine_weights_via_disc and not o.parallel_disc_io
    assert o.scratch_dir == "/scratch" and not o.preread_images and o.pool == 5
    assert o.tau2_fudge == 2 and o.random_seed == 7
    o = tutorial(do_preread_images=True, scratch_dir="/scratch", do_ctf_correction=False,
                 ctf_intact_first_peak=True, gpu_ids="0,0:1,1").to_options("R/job1")
    assert o.preread_images and o.scratch_dir is None and not o.ctf and not o.ctf_intact_first_peak
    assert o.gpu == "0,0:1,1"


def test_direct_entries_mask_and_solvent_fsc():
    params = tutorial(use_direct_entries=True, in_optimisation="", in_particles="p.star",
                      in_tomograms="t.star", in_trajectories="m.star", fn_mask="mask.mrc", do_solvent_fsc=True)
    args = params.command_args("Refine3D/job004")
    assert args[:11] == ["--o", "Refine3D/job004/run", "--auto_refine", "--split_random_halves",
                         "--i", "p.star", "--tomograms", "t.star", "--trajectories", "m.star", "--ref"]
    i = args.index("--solvent_mask")
    assert args[i:i + 3] == ["--solvent_mask", "mask.mrc", "--solvent_correct_fsc"]
    o = params.to_options("Refine3D/job004")
    assert (o.particles, o.tomograms, o.trajectories, o.optimisation_set) == ("p.star", "t.star", "m.star", None)
    assert o.solvent_mask == "mask.mrc" and o.solvent_correct_fsc


def test_sigma_tilt_comes_right_after_the_inputs():
    args = tutorial(sigma_tilt=10).command_args("R/job1")
    assert args[6:10] == ["--sigma_tilt", "10", "--ref", "Reconstruct/job003/merged.mrc"]


def test_continue_command():
    params = tutorial(fn_cont="Refine3D/job004/run_it005_optimiser.star", fn_mask="mask.mrc",
                      do_solvent_fsc=True, particle_diameter=250)
    args = params.command_args("Refine3D/job004")
    assert args == [
        "--o", "Refine3D/job004/run", "--continue", "Refine3D/job004/run_it005_optimiser.star",
        "--dont_combine_weights_via_disc", "--pool", "3", "--pad", "2", "--particle_diameter", "250",
        "--solvent_mask", "mask.mrc", "--j", "8", "--gpu", "",
    ]
    o = params.to_options("Refine3D/job004")
    assert o.continue_from == "Refine3D/job004/run_it005_optimiser.star" and o.particle_diameter == 250
    # (auto-refine or classification: a continuation takes its kind from the optimiser file)
    assert o.reference is None
    # a new run ignores fn_cont when told so
    assert "--continue" not in params.command_args("Refine3D/job004", is_continue=False)


# ---- validation ---------------------------------------------------------------------------


def _fields(params, **kw):
    return {p.field: p.message for p in params.problems(**kw)}


def test_valid_form_has_no_problems(files):
    params = tutorial(in_optimisation=files["optimisation_set.star"], fn_ref=files["merged.mrc"],
                      fn_mask=files["mask.mrc"])
    assert params.problems() == []
    params.check()


@pytest.mark.parametrize("nr_mpi, ok", [(1, True), (2, False), (3, True), (4, False), (5, True)])
def test_mpi_count_odd_and_at_least_3(files, nr_mpi, ok):
    params = tutorial(in_optimisation=files["optimisation_set.star"], fn_ref=files["merged.mrc"], nr_mpi=nr_mpi)
    problems = _fields(params)
    assert ("nr_mpi" not in problems) == ok
    if not ok:
        assert "odd" in problems["nr_mpi"] and "at least 3" in problems["nr_mpi"]


def test_validation_messages(files, tmp_path):
    base = dict(in_optimisation=files["optimisation_set.star"], fn_ref=files["merged.mrc"])
    assert _fields(tutorial(**{**base, "fn_ref": ""}))["fn_ref"] == "is required"
    assert "does not exist" in _fields(tutorial(**{**base, "fn_ref": str(tmp_path / "no.mrc")}))["fn_ref"]
    assert "not supported" in _fields(tutorial(**{**base, "fn_ref": "None"}))["fn_ref"]
    assert "does not exist" in _fields(tutorial(**base, fn_mask=str(tmp_path / "no_mask.mrc")))["fn_mask"]
    assert "sym_name" in _fields(tutorial(**{**base, "sym_name": "X7"}))
    assert _fields(tutorial(**{**base, "particle_diameter": 0}))["particle_diameter"] == "must be positive"
    assert _fields(tutorial(**base, offset_step=0))["offset_step"] == "must be positive"
    assert "reference mask" in _fields(tutorial(**base, do_solvent_fsc=True))["do_solvent_fsc"]
    assert "gpu_ids" in _fields(tutorial(**base, gpu_ids="0;1"))
    assert "gpu_ids" not in _fields(tutorial(**base, gpu_ids="0,0:1,1"))
    assert "gpu_ids" not in _fields(tutorial(**base, gpu_ids="0;1", use_gpu=False))
    assert "in_optimisation" in _fields(tutorial(**{**base, "in_optimisation": ""}))
    with pytest.raises(InputError) as err:
        tutorial(**{**base, "nr_mpi": 2}).check()
    assert err.value.column == "nr_mpi" and "Number of MPI procs:" in str(err.value)


def test_continue_validation(files, tmp_path):
    bad_name = tmp_path / "run_model.star"
    bad_name.write_text("x")
    p = tutorial(in_optimisation="", fn_ref="", fn_cont=str(bad_name))
    problems = _fields(p)
    assert "_it and _optimiser" in problems["fn_cont"]
    assert "fn_ref" not in problems and "in_optimisation" not in problems
    p = tutorial(in_optimisation="", fn_ref="", fn_cont=str(tmp_path / "run_it002_optimiser.star"))
    assert "does not exist" in _fields(p)["fn_cont"]
    p = tutorial(in_optimisation="", fn_ref="", fn_cont=files["run_it003_optimiser.star"])
    assert p.problems() == []
    assert "fn_cont" in _fields(tutorial(in_optimisation="", fn_ref="", fn_cont=""), is_continue=True)


# ---- the flag parser -------------------------------------------------------------------------


def test_parse_accepts_every_listed_flag_and_gui_additions():
    argv = shlex.split(
        "relion_refine_mpi --o R/run --auto_refine --split_random_halves --i p.star --tomograms t.star "
        "--trajectories m.star --ref r.mrc --firstiter_cc --trust_ref_size --ini_high 40 --sym c6 --ctf "
        "--ctf_intact_first_peak --particle_diameter 300 --flatten_solvent --zero_mask --solvent_mask k.mrc "
        "--solvent_correct_fsc --oversampling 1 --healpix_order 3 --psi_step 5 --auto_local_healpix_order 5 "
        "--offset_range 4 --offset_step 1 --sigma_tilt 10 --auto_ignore_angles --auto_resol_angles "
        "--low_resol_join_halves 30 --norm --scale --pad 1 --pool 4 --preread_images --scratch_dir /s "
        "--dont_combine_weights_via_disc --no_parallel_disc_io --j 6 --gpu 0:1 --random_seed 3 "
        "--tau2_fudge 2 --perturb 0.3 --offset 5 --auto_iter_max 20 --pipeline_control R/ --theme classic"
    )
    o = parse_refine_args(argv)
    expected = dict(
        output_root="R/run", particles="p.star", tomograms="t.star", trajectories="m.star", reference="r.mrc",
        firstiter_cc=True, trust_ref_size=True, ini_high=40.0, symmetry="C6", ctf=True, ctf_intact_first_peak=True,
        particle_diameter=300.0, flatten_solvent=True, zero_mask=True, solvent_mask="k.mrc",
        solvent_correct_fsc=True, oversampling=1, healpix_order=3, psi_step=5.0, auto_local_healpix_order=5,
        offset_range=4.0, offset_step=1.0, sigma_tilt=10.0, auto_ignore_angles=True, auto_resol_angles=True,
        low_resol_join_halves=30.0, norm=True, scale=True, pad=1, pool=4, preread_images=True, scratch_dir="/s",
        combine_weights_via_disc=False, parallel_disc_io=False, threads=6, gpu="0:1", random_seed=3,
        tau2_fudge=2.0, perturb=0.3, offset_prior_sigma=5.0, auto_iter_max=20, auto_refine=True,
        split_random_halves=True,
    )
    for key, value in expected.items():
        assert getattr(o, key) == value, key
    assert o.command_line == tuple(argv[1:])


def test_parse_defaults_and_optional_gpu():
    o = parse_refine_args(["--o", "R/run", "--auto_refine", "--split_random_halves", "--ios", "s.star",
                           "--ref", "r.mrc", "--gpu", "--j", "2"])
    assert o.gpu == "" and o.threads == 2
    defaults = RefineOptions(output_root="x")
    assert (o.norm, o.scale, o.ctf, o.pad, o.offset_step) == (False, False, False, defaults.pad, defaults.offset_step)
    assert parse_refine_args(["--o", "R/run", "--continue", "R/run_it002_optimiser.star"]).gpu is None
    # like relion_refine, the first occurrence of an option wins
    o = parse_refine_args(["--o", "R/run", "--continue", "c_it001_optimiser.star", "--j", "2", "--j", "5"])
    assert o.threads == 2


@pytest.mark.parametrize("extra, code", [
    ([], "cpu"), (["--gpu"], "gpu"), (["--gpu", "0:1"], "gpu"), (["--cpu"], "altcpu"),
    (["--K", "3", "--skip_align", "--gpu"], "cpu"),
])
def test_the_command_line_names_the_relion_code_followed(extra, code):
    """Like relion_refine: its original CPU code by default, the accelerated code with --gpu
    or --cpu, and the CPU code again when classification skips alignment (RELION drops the
    accelerators then)."""
    new_run = ["--o", "R/run", "--ios", "s.star", "--ref", "r.mrc"]
    kind = [] if "--K" in extra else ["--auto_refine", "--split_random_halves"]
    assert parse_refine_args(new_run + kind + extra).relion_code.value == code


@pytest.mark.parametrize("argv, column, words", [
    (["--o", "R/run", "--bogus"], "--bogus", "unknown option"),
    (["--o", "R/run", "--continue", "x", "--blush"], "--blush", "Blush"),
    (["--o", "R/run", "--continue", "x", "--relax_sym", "C2"], "--relax_sym", "not supported"),
    (["--o", "R/run", "--continue", "x", "--j"], "--j", "expects a value"),
    (["--o", "R/run", "--continue", "x", "--j", "two"], "--j", "integer"),
    (["--o", "R/run", "--continue", "x", "--ini_high", "--j", "3"], "--ini_high", "expects a value"),
    (["--o", "R/run", "--continue", "x", "stray"], "stray", "unexpected argument"),
    (["--auto_refine"], "--o", "required"),
    (["--o", "R/run", "--split_random_halves", "--ios", "s", "--ref", "r"], "--split_random_halves",
     "needs --auto_refine"),
    (["--o", "R/run", "--auto_refine", "--split_random_halves", "--K", "3", "--ios", "s", "--ref", "r"], "--K",
     "classification option"),
    (["--o", "R/run", "--auto_refine", "--split_random_halves", "--iter", "3", "--ios", "s", "--ref", "r"],
     "--iter", "classification option"),
    (["--o", "R/run", "--K", "0", "--ios", "s", "--ref", "r"], "--K", "at least 1"),
    (["--o", "R/run", "--K", "2", "--iter", "10", "--fast_subsets", "--ios", "s", "--ref", "r"], "--fast_subsets",
     "20 iterations"),
    (["--o", "R/run", "--K", "2", "--allow_coarser_sampling", "--ios", "s", "--ref", "r"],
     "--allow_coarser_sampling", "not supported"),
    (["--o", "R/run", "--K", "2", "--ref", "r"], "--ios", "input"),
    (["--o", "R/run", "--auto_refine", "--ios", "s", "--ref", "r"], "--split_random_halves", "required"),
    (["--o", "R/run", "--auto_refine", "--split_random_halves", "--ref", "r"], "--ios", "input"),
    (["--o", "R/run", "--auto_refine", "--split_random_halves", "--i", "p", "--ref", "r"], "--tomograms", "required"),
    (["--o", "R/run", "--auto_refine", "--split_random_halves", "--ios", "s"], "--ref", "required"),
    (["--o", "R/run", "--continue", "x", "--sym", "Q5"], "--sym", ""),
    (["--o", "R/run", "--continue", "x", "--pad", "3"], "--pad", "1 or 2"),
    (["--o", "R/run", "--continue", "x", "--offset_step", "0"], "--offset_step", "positive"),
])
def test_parse_errors_name_the_flag(argv, column, words):
    with pytest.raises(InputError) as err:
        parse_refine_args(argv)
    assert err.value.column == column
    assert words in str(err.value)


def test_refine_subcommand_passes_relion_flags_through():
    parser = argparse.ArgumentParser(prog="tomodash")
    subparsers = parser.add_subparsers(dest="command", required=True)
    cli.add_parser(subparsers)
    args = parser.parse_args(["refine", *shlex.split(OBSERVED), "--sigma_tilt", "-1"])
    seen = []
    assert args.func(args, runner=lambda options: seen.append(options) or 0) == 0
    assert seen[0].output_root == "Refine3D/job004/run" and seen[0].sigma_tilt == -1
    assert seen[0].with_changes(command_line=()) == tutorial().to_options("Refine3D/job004").with_changes(command_line=())


def test_refine_help_lists_the_flags(capsys):
    args = argparse.Namespace(relion_args=["--help"])
    assert cli.run(args, runner=lambda o: 1) == 0
    text = capsys.readouterr().out
    assert "--auto_local_healpix_order" in text and "--gpu [S]" in text


def test_continue_takes_the_options_relion_takes_from_the_command_line(tmp_path, monkeypatch):
    """On --continue the run's settings come from its files, except what the command line names
    (spec 5.14; relion_refine reads those with an "OLD" default): RELION's own iteration-5 files
    of tests/data/refine_test_relion. The GUI passes 'Use finer angular sampling faster?' again."""
    import shutil

    from processing.refine.inputs import continuation_options

    relion = Path(__file__).parent / "data" / "refine_test_relion"
    (tmp_path / "relfull").mkdir()
    for name in ("run_it005_optimiser.star", "run_it005_sampling.star", "run_it005_half1_model.star"):
        shutil.copy(relion / name, tmp_path / "relfull" / name)
    monkeypatch.chdir(tmp_path)
    cont = ["--o", "relfull/run", "--continue", "relfull/run_it005_optimiser.star"]
    kept = continuation_options(parse_refine_args(cont))
    assert (kept.tau2_fudge, kept.pad, kept.oversampling, kept.auto_ignore_angles) == (1.0, 2, 1, False)
    assert kept.flatten_solvent and kept.symmetry == "C6" and kept.particle_diameter == 200
    changed = continuation_options(parse_refine_args(cont + ["--tau2_fudge", "2", "--pad", "1", "--perturb", "0",
                                                             "--auto_ignore_angles", "--auto_resol_angles"]))
    assert (changed.tau2_fudge, changed.pad, changed.perturb) == (2.0, 1, 0.0)
    assert changed.auto_ignore_angles and changed.auto_resol_angles
    assert changed.flatten_solvent                                    # cannot be switched off
    args = tutorial(fn_cont="Refine3D/job004/run_it005_optimiser.star", auto_faster=True).command_args("Refine3D/job004")
    assert args[args.index("--pad") + 2: args.index("--pad") + 4] == ["--auto_ignore_angles", "--auto_resol_angles"]
