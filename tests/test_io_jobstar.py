"""RELION job.star (processing.io.jobstar)."""
from __future__ import annotations

import pytest

from processing.errors import InputError
from processing.io import JobStar, format_option, option_is_true


def test_round_trip_and_layout(tmp_path):
    path = tmp_path / "job.star"
    job = JobStar("relion.refine3d.tomo", is_continue=False, is_tomo=True,
                  options={"sampling": "7.5 degrees", "fn_mask": "", "do_ctf_correction": "Yes",
                           "Zeta": "1", "nr_mpi": "3", "ini_high": "60", "other_args": "--pad 1"})
    job.update({"particle_diameter": 500.0, "ref_correct_greyscale": False, "offset_step": 4.75})
    job.write(path)
    text = path.read_text()
    lines = [line.rstrip() for line in text.splitlines()]
    assert lines[1] == "# version 50001" and lines[3] == "data_job"
    assert any(line.startswith("_rlnJobTypeLabel") and line.endswith("relion.refine3d.tomo") for line in lines)
    assert any(line.startswith("_rlnJobIsTomo") and line.endswith(" 1") for line in lines)
    assert "data_joboptions_values" in lines
    assert "_rlnJobOptionVariable #1" in lines and "_rlnJobOptionValue #2" in lines
    assert '"7.5 degrees"' in text and '""' in text and '"--pad 1"' in text
    # rows sorted by variable, byte order (uppercase first)
    rows = [line.split()[0] for line in lines[lines.index("_rlnJobOptionValue #2") + 1:] if line.strip()]
    assert rows == sorted(rows, key=str.encode) and rows[0] == "Zeta"

    again = JobStar.read(path)
    assert again.type_label == "relion.refine3d.tomo" and again.is_tomo and not again.is_continue
    assert again.options["sampling"] == "7.5 degrees"
    assert again.options["fn_mask"] == ""
    assert again.options["nr_mpi"] == "3"  # values stay strings
    assert again.options["particle_diameter"] == "500"
    assert again.options["offset_step"] == "4.75"
    assert again.flag("do_ctf_correction") is True and again.flag("ref_correct_greyscale") is False


def test_legacy_and_tolerant_reading(tmp_path):
    path = tmp_path / "job.star"
    path.write_text("data_job\n\n_rlnJobType 2\n_rlnJobIsContinue 1\n\n"
                    "data_joboptions_values\n\nloop_\n_rlnJobOptionVariable #1\n_rlnJobOptionValue #2\n"
                    "angpix 1.0\ndo_queue No\n")
    job = JobStar.read(path)
    assert job.type_label == "2" and job.is_continue and not job.is_tomo
    assert job.options == {"angpix": "1.0", "do_queue": "No"}


def test_bad_job_star(tmp_path):
    path = tmp_path / "job.star"
    path.write_text("data_joboptions_values\n\nloop_\n_rlnJobOptionVariable #1\n_rlnJobOptionValue #2\na b\n")
    with pytest.raises(InputError, match="job.star.*data_job"):
        JobStar.read(path)
    path.write_text("data_job\n\n_rlnJobIsTomo 1\n")
    with pytest.raises(InputError, match="job.star.*rlnJobTypeLabel"):
        JobStar.read(path)
    job = JobStar("relion.pseudosubtomo", options={"do_stack2d": "maybe"})
    with pytest.raises(InputError, match="do_stack2d.*Yes or No"):
        job.flag("do_stack2d")


def test_format_option():
    assert format_option(True) == "Yes" and format_option(False) == "No"
    assert format_option(1.0) == "1" and format_option(4.75) == "4.75" and format_option(-1) == "-1"
    assert option_is_true("Yes") and not option_is_true("No")
