"""Every entry point refuses the bad-input corpus (tests/data/bad/make_corpus.py) cleanly.

For each case and each entry point that must refuse it: exit status 2, an error naming the
file (and table/column/row where there is one), and nothing left behind: no ``--o``
directory (direct command lines), no session directory (``session new --import``), no job
directory nor pipeline entry (``tomodash run``). The entry points run in this process
(``dashboard.cli.main``), which is what ``tomodash`` runs, so the corpus stays quick.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from dashboard.cli import main

_spec = importlib.util.spec_from_file_location("bad_corpus", Path(__file__).parent / "data" / "bad" / "make_corpus.py")
corpus = importlib.util.module_from_spec(_spec)
sys.modules["bad_corpus"] = corpus
_spec.loader.exec_module(corpus)

EXTRACT_FLAGS = ["--b", "32", "--crop", "24", "--bin", "4", "--stack2d", "--j", "1"]
RECONSTRUCT_FLAGS = ["--b", "32", "--crop", "24", "--bin", "4", "--sym", "C6", "--j", "1"]
#: relion_refine's flags as the GUI writes them (TEST data scaled): the run must stop before
#: its first iteration for every case, so the settings only need to be valid.
REFINE_FLAGS = ["--auto_refine", "--split_random_halves", "--i", "Extract/particles.star", "--tomograms",
                "tomograms.star", "--ref", "ref.mrc", "--ini_high", "60", "--dont_combine_weights_via_disc",
                "--pool", "4", "--pad", "1", "--ctf", "--particle_diameter", "200", "--flatten_solvent",
                "--zero_mask", "--oversampling", "1", "--healpix_order", "1", "--offset_range", "2",
                "--offset_step", "2", "--sym", "C1", "--norm", "--scale", "--random_seed", "1", "--j", "1"]


def cases_for(entry_point: str) -> list:
    return [pytest.param(c, id=c.name) for c in corpus.CASES if entry_point in c.entry_points]


@pytest.fixture(scope="module")
def valid(tmp_path_factory) -> tuple[Path, Path]:
    """The valid dataset and the valid refine inputs (extraction + reference) it derives."""
    root = tmp_path_factory.mktemp("bad_valid")
    dataset = corpus.make_valid_dataset(root / "dataset")
    refine = corpus.make_valid_refine(dataset, root / "refine")
    return dataset, refine


@pytest.fixture(scope="module")
def bad(valid, tmp_path_factory) -> dict[str, Path]:
    """The corpus, generated from the valid inputs (one directory per case)."""
    return corpus.make_corpus(valid[0], valid[1], tmp_path_factory.mktemp("bad_corpus"))


def call(args: list[str], cwd: Path, capsys) -> tuple[int, str]:
    """``tomodash ARGS`` in ``cwd``: (exit status, stderr + stdout)."""
    before = os.getcwd()
    os.chdir(cwd)
    try:
        code = main(args)
    except SystemExit as exc:  # a job's lifecycle ends a failed run with SystemExit
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        os.chdir(before)
    out = capsys.readouterr()
    return code, out.err + out.out


def assert_refused(code: int, text: str, case) -> None:
    assert code == 2, f"{case.name}: exit {code}\n{text}"
    for needle in case.expect:
        assert needle.lower() in text.lower(), f"{case.name}: {needle!r} not in the message:\n{text}"
    assert "Traceback" not in text, text


# ---- the valid inputs pass ------------------------------------------------------------------------

def test_valid_inputs_pass_every_check(valid, tmp_path) -> None:
    """The corpus' base is valid: the checks that refuse the cases accept it."""
    from processing.jobs.extract import check_inputs
    from processing.refine.flags import parse_refine_args
    from processing.refine.inputs import check_inputs as check_refine
    from sessions.importer import check_dataset

    dataset, refine = valid
    check_inputs(str(dataset / "particles.star"), str(dataset / "tomograms.star"), None)
    check_dataset(dataset / "tomograms.star", dataset / "particles.star", symmetry="C6")
    before = os.getcwd()
    os.chdir(refine)
    try:
        check_refine(parse_refine_args(["--o", str(tmp_path / "run"), *REFINE_FLAGS]))
    finally:
        os.chdir(before)


# ---- one test per entry point -----------------------------------------------------------------------

@pytest.mark.parametrize("case", cases_for("extract"))
def test_extract_refuses(case, bad, tmp_path, capsys) -> None:
    out = tmp_path / "Extract" / "job002"
    code, text = call(["extract", "--i", "optimisation_set.star", "--o", f"{out}/", *EXTRACT_FLAGS],
                      bad[case.name], capsys)
    assert_refused(code, text, case)
    assert not out.exists(), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("case", cases_for("reconstruct"))
def test_reconstruct_refuses(case, bad, tmp_path, capsys) -> None:
    out = tmp_path / "Reconstruct" / "job003"
    code, text = call(["reconstruct", "--p", "particles.star", "--t", "tomograms.star", "--o", f"{out}/",
                       *RECONSTRUCT_FLAGS], bad[case.name], capsys)
    assert_refused(code, text, case)
    assert not out.exists(), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("case", cases_for("refine"))
def test_refine_refuses(case, bad, tmp_path, capsys) -> None:
    out = tmp_path / "Refine3D" / "job004"
    code, text = call(["refine", "--o", f"{out}/run", *REFINE_FLAGS], bad[case.name], capsys)
    assert_refused(code, text, case)
    assert not out.exists(), sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("case", cases_for("import"))
def test_import_refuses(case, bad, tmp_path, capsys) -> None:
    session = tmp_path / "session"
    args = ["session", "new", str(session), "--import", "tomograms.star", "particles.star"]
    if case.symmetry:
        args += ["--symmetry", case.symmetry]
    code, text = call(args, bad[case.name], capsys)
    assert_refused(code, text, case)
    assert not session.exists(), sorted(p.name for p in session.iterdir())


@pytest.fixture(scope="module")
def run_session(tmp_path_factory) -> Path:
    from sessions.project import Session

    return Session.create(tmp_path_factory.mktemp("bad_run") / "session").root


@pytest.mark.parametrize("case", cases_for("run"))
def test_run_refuses(case, bad, run_session, tmp_path, capsys) -> None:
    pipeline = (run_session / "default_pipeline.star").read_text()
    entries = sorted(p.name for p in run_session.iterdir())
    code, text = call(["run", "extract", "--session", str(run_session),
                       "--set", f"in_optimisation={bad[case.name] / 'optimisation_set.star'}",
                       "--set", "box_size=32", "--set", "crop_size=24", "--set", "binning=4"], tmp_path, capsys)
    assert_refused(code, text, case)
    assert sorted(p.name for p in run_session.iterdir()) == entries
    assert (run_session / "default_pipeline.star").read_text() == pipeline


# ---- what is left behind ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tilt_corrupt", "tilt_all_nan"])
def test_existing_output_directory_left_as_it_was(name, bad, tmp_path, capsys) -> None:
    """An ``--o`` that exists keeps exactly what it held, whether the input is refused before
    the run (corrupt header) or while the images are read (NaN pixels)."""
    out = tmp_path / "Extract" / "job002"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    code, text = call(["extract", "--i", "optimisation_set.star", "--o", f"{out}/", *EXTRACT_FLAGS],
                      bad[name], capsys)
    assert code == 2, text
    if name == "tilt_corrupt":
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    else:
        # Found while reading: the job directory the user named is marked failed, not removed.
        assert (out / "keep.txt").read_text() == "mine"
        assert (out / "RELION_JOB_EXIT_FAILURE").exists()


def test_failed_import_leaves_nothing_and_retry_works(valid, tmp_path, monkeypatch, capsys) -> None:
    """A failure after the session was made (here: writing the copy) removes the session, so
    the same command succeeds once the cause is gone."""
    import sessions.importer as importer
    from processing.errors import InputError

    dataset = valid[0]
    session = tmp_path / "session"
    original = importer._copy_star

    def failing(*args, **kwargs):
        raise InputError("disk full (simulated)", file=args[1])

    monkeypatch.setattr(importer, "_copy_star", failing)
    code, text = call(["session", "new", str(session), "--import", "tomograms.star", "particles.star"],
                      dataset, capsys)
    assert code == 2 and "disk full" in text, text
    assert not session.exists()
    monkeypatch.setattr(importer, "_copy_star", original)
    code, text = call(["session", "new", str(session), "--import", "tomograms.star", "particles.star"],
                      dataset, capsys)
    assert code == 0, text
    assert "Succeeded" in text


def test_session_new_onto_a_file(tmp_path, capsys) -> None:
    target = tmp_path / "not_a_dir"
    target.write_text("x")
    code, text = call(["session", "new", str(target)], tmp_path, capsys)
    assert code == 2 and str(target) in text and "not a directory" in text, text
    assert target.read_text() == "x"
