"""Job parameter classes: validation messages, job.star round trip, RELION flag mapping."""
from __future__ import annotations

import shlex

import pytest

from processing.errors import InputError
from processing.io import JobStar
from processing.jobs.extract_params import ExtractParameters
from processing.jobs.reconstruct_params import ReconstructParameters
from processing.jobs.relion_params import build_flag_parser, params_from_flags, parse_other_args, relion_command


@pytest.fixture
def opt_set(tmp_path):
    path = tmp_path / "optimisation_set.star"
    path.write_text("data_optimisation_set\n_rlnTomoParticlesFile p.star\n_rlnTomoTomogramsFile t.star\n")
    return str(path)


def _message(cls, **values) -> str:
    with pytest.raises(InputError) as info:
        cls.from_values(values).check()
    return str(info.value)


@pytest.mark.parametrize("cls", [ExtractParameters, ReconstructParameters])
def test_validation_messages(cls, opt_set):
    assert "Cropped box size" in _message(cls, in_optimisation=opt_set, box_size=64, crop_size=96)
    assert "cannot be larger than the box size (64)" in _message(cls, in_optimisation=opt_set, box_size=64,
                                                                 crop_size=96)
    assert "Box size (binned pix): must be even" in _message(cls, in_optimisation=opt_set, box_size=65)
    msg = _message(cls, in_optimisation="/no/such/optimisation_set.star")
    assert "file does not exist: /no/such/optimisation_set.star" in msg
    msg = _message(cls, use_direct_entries=True, in_particles="/no/p.star", in_tomograms=opt_set)
    assert "Input particle set:" in msg and "/no/p.star" in msg
    msg = _message(cls, in_optimisation=opt_set, nr_mpi=0)
    assert "Number of MPI procs: must be at least 1 (got 0)" in msg
    cls.from_values({"in_optimisation": opt_set}).check()


def test_unknown_symmetry_is_reported(opt_set):
    msg = _message(ReconstructParameters, in_optimisation=opt_set, sym_name="X7")
    assert "Symmetry:" in msg and "X7" in msg
    ReconstructParameters.from_values({"in_optimisation": opt_set, "sym_name": "d7"}).check()


@pytest.mark.parametrize("cls", [ExtractParameters, ReconstructParameters])
def test_job_star_round_trip(cls, tmp_path):
    params = cls.from_values({"in_optimisation": "Refine3D/job004/run_optimisation_set.star", "binning": 3.0,
                              "box_size": 96, "crop_size": 64, "nr_threads": 4, "nr_mpi": 2,
                              "other_args": "--no_ctf"})
    JobStar(cls.job_type_label, is_continue=True, options=params.to_job_options()).write(tmp_path / "job.star")
    job = JobStar.read(tmp_path / "job.star")
    assert job.type_label == cls.job_type_label and job.is_continue
    back = cls.from_job_options(job.options)
    assert back.to_job_options() == params.to_job_options()
    assert job.options["binning"] == "3" and job.options["other_args"] == "--no_ctf"


def test_job_star_nr_mpi_zero_is_an_input_error():
    with pytest.raises(InputError, match="Number of MPI procs: must be at least 1"):
        ExtractParameters.from_job_options({"nr_mpi": "0"})


OBSERVED = ("--i Refine3D/job004/run_optimisation_set.star --theme classic --o Extract/job005/ --b 128 "
            "--crop 96 --bin 2 --max_dose 50 --min_frames 1 --float16  --stack2d  --j 6 --no_ic "
            "--pipeline_control Extract/job005/")


def test_relion_subtomo_command_parses_unchanged():
    args = build_flag_parser(ExtractParameters).parse_args(shlex.split(OBSERVED))
    params, cont = params_from_flags(ExtractParameters, args, nr_mpi=3)
    assert not cont and args.o == "Extract/job005/"
    assert (params.in_optimisation, params.box_size, params.crop_size, params.binning) == \
        ("Refine3D/job004/run_optimisation_set.star", 128, 96, 2.0)
    assert (params.max_dose, params.min_frames, params.do_float16, params.do_stack2d) == (50.0, 1, True, True)
    assert (params.nr_threads, params.nr_mpi, params.other_args) == (6, 3, "--no_ic")
    assert parse_other_args(ExtractParameters, params.other_args).no_ic
    command = relion_command(params, "Extract/job005")
    assert command == ("tomodash extract --i Refine3D/job004/run_optimisation_set.star --o Extract/job005/ "
                       "--bin 2 --b 128 --crop 96 --max_dose 50 --min_frames 1 --stack2d --float16 --j 6 --no_ic")
    # the command line round-trips
    again, _ = params_from_flags(ExtractParameters, build_flag_parser(ExtractParameters).parse_args(
        shlex.split(command)[2:]), nr_mpi=3)
    assert again.to_job_options() == params.to_job_options()


def test_relion_reconstruct_command_parses_unchanged():
    line = ("--i Extract/job002/optimisation_set.star --theme classic --o Reconstruct/job003/ --b 128 "
            "--crop 96 --bin 6 --j 4 --j_out 4 --j_in 1 --only_do_unfinished --sym C6 --SNR -1 --taper 5")
    args = build_flag_parser(ReconstructParameters).parse_args(shlex.split(line))
    params, cont = params_from_flags(ReconstructParameters, args)
    assert cont and params.sym_name == "C6" and params.snr == 0.0 and params.binning == 6.0
    assert params.other_args == "--taper 5 --j_out 4 --j_in 1"
    assert parse_other_args(ReconstructParameters, params.other_args).taper == 5.0


def test_direct_entries_and_overrides(opt_set):
    parser = build_flag_parser(ExtractParameters)
    params, _ = params_from_flags(ExtractParameters, parser.parse_args(
        ["--p", "a.star", "--t", "b.star", "--o", "X/", "--b", "64"]))
    assert params.use_direct_entries and (params.in_particles, params.in_tomograms) == ("a.star", "b.star")
    params, _ = params_from_flags(ExtractParameters, parser.parse_args(
        ["--i", opt_set, "--p", "other.star", "--o", "X/", "--b", "64"]))
    assert params.use_direct_entries and not params.in_optimisation
    assert (params.in_particles, params.in_tomograms) == ("other.star", "t.star")


def test_unknown_other_args_are_input_errors():
    with pytest.raises(InputError, match="does not know --bogus"):
        parse_other_args(ExtractParameters, "--bogus 3")
