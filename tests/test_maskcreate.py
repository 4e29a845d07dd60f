"""Mask creation (``relion.maskcreate``): the engine against RELION 5's ``relion_mask_create``
(tests/data/maskcreate, see its ORIGIN.md), the steps against their definitions, the job from the
command line and from a session (listed by the CCP-EM pipeliner), and bad input."""
from __future__ import annotations

import shlex
import shutil
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from processing.errors import InputError
from processing.io.jobstar import JobStar
from processing.io.mrc import read_mrc
from processing.jobs.maskcreate_params import MaskCreateParameters
from processing.maskcreate import MaskSettings, auto_mask, create_mask, extend_binary, make_mask, relion_lowpass, soft_edge
from sessions import JobValidationError, Session, runner
from conftest import ccpem_pipeliner_view

DATA = Path(__file__).parent / "data" / "maskcreate"
BLOBS = DATA / "blobs.mrc"

#: RELION's commands of ORIGIN.md, as settings; the pixel size is 3.5 Å (flag or header).
CASES = {
    "mask_lp_ext_soft": MaskSettings(threshold=0.1, extend=2, width=4, lowpass=15, pixel_size=3.5),
    "mask_shrink": MaskSettings(threshold=0.08, extend=-2, width=3),
    "mask_invert": MaskSettings(threshold=0.05, extend=1.5, width=2.5, lowpass=20, invert=True),
    "mask_helix": MaskSettings(threshold=0.1, extend=0, width=3, lowpass=12, pixel_size=3.5, helix_z_fraction=0.3),
    # the low-pass edge (shells 16..18) runs past Nyquist (16) unclipped, as in RELION
    "mask_lp_nyquist": MaskSettings(threshold=0.15, extend=1.5, width=2, lowpass=6.5),
}


def relion_mask(name: str) -> np.ndarray:
    return read_mrc(DATA / f"{name}.mrc").data.astype(np.float64)


# ---- the engine against relion_mask_create --------------------------------------------------------

@pytest.mark.parametrize("name", list(CASES))
def test_mask_equals_relion(name):
    settings = CASES[name]
    volume = read_mrc(BLOBS).data
    ours = make_mask(volume, settings, pixel_size=3.5).astype(np.float32).astype(np.float64)
    theirs = relion_mask(name)
    # The binary core is decided by ">= threshold" on the low-passed map, which RELION computes
    # in double precision as we do (FFTW vs pocketfft: ~1e-16 relative). Only a voxel within
    # float rounding of the threshold could fall either way; there is none here (the nearest is
    # 1.7e-6 away), so the core must be identical.
    work = volume.astype(np.float64)
    if settings.lowpass > 0:
        work = relion_lowpass(work, resolution=settings.lowpass, pixel_size=3.5)
    assert np.abs(work - settings.threshold).min() > 1e-9
    core_ours = ours > 0.999 if not settings.invert else ours < 0.001
    core_theirs = theirs > 0.999 if not settings.invert else theirs < 0.001
    np.testing.assert_array_equal(core_ours, core_theirs)
    assert core_theirs.sum() > 500  # a real mask, not a trivial one
    # Soft edge: both evaluate 0.5 + 0.5*cos(pi*sqrt(d2)/w) in double from the same integer d2 and
    # store float32; libm and numpy cosines may differ in the last double bit, which can move the
    # float32 value by one step (<= 6e-8 below 0.5, 1.2e-7 up to 1): tolerance 1.2e-7.
    soft = (theirs > 0.001) & (theirs < 0.999)
    assert soft.sum() > 500
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1.2e-7)


def test_auto_mask_alone_is_relions_automask():
    # no low-pass, no helix, no invert: relion_mask_create is autoMask alone
    ours = auto_mask(read_mrc(BLOBS).data, threshold=0.08, extend=-2, width=3).astype(np.float32)
    np.testing.assert_allclose(ours, relion_mask("mask_shrink"), rtol=0, atol=1.2e-7)  # tolerance: see above


def test_create_mask_writes_relions_file(tmp_path):
    out = tmp_path / "mask.mrc"
    logged: list[str] = []
    result = create_mask(BLOBS, out, CASES["mask_invert"], log=logged.append)
    with mrcfile.open(out) as mrc:  # float32, pixel size from the input header (no --angpix)
        assert mrc.header.mode == 2 and mrc.voxel_size.x == pytest.approx(3.5)
        np.testing.assert_array_equal(mrc.data, read_mrc(DATA / "mask_invert.mrc").data)
    theirs = relion_mask("mask_invert")
    assert result.inside == int((theirs > 0.999).sum()) and result.edge == int(((theirs > 0.001) & (theirs < 0.999)).sum())
    assert result.volume_fraction == pytest.approx(theirs.mean(), rel=1e-6)
    assert any("header" in line for line in logged)
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it


# ---- the steps against their definitions ---------------------------------------------------------

def _brute_d2(targets: np.ndarray) -> np.ndarray:
    """Squared distance from every voxel to the nearest target, over all pairs."""
    grid = np.stack(np.indices(targets.shape), -1).reshape(-1, 3)
    pts = grid[targets.ravel()]
    d2 = ((grid[:, None, :] - pts[None, :, :]) ** 2).sum(-1).min(1)
    return d2.reshape(targets.shape)


@pytest.mark.parametrize("pixels", [2.0, 1.5, -1.5, -2.5])
def test_extend_follows_the_distance_rule(pixels):
    rng = np.random.default_rng(3)
    mask = rng.random((11, 12, 13)) > 0.85
    mask[3:8, 4:9, 2:10] = True  # a block that survives shrinking
    limit = pixels * pixels
    if pixels > 0:
        expected = mask | (_brute_d2(mask) < limit)
    else:  # outside the box does not count as outside
        expected = mask & ~(_brute_d2(~mask) < limit)
    got = extend_binary(mask, pixels=pixels)
    np.testing.assert_array_equal(got, expected)
    assert got.sum() != mask.sum()
    # RELION's rule is strict (d2 < r**2): one pixel moves nothing, as relion_mask_create does.
    np.testing.assert_array_equal(extend_binary(mask, pixels=np.sign(pixels)), mask)


def test_soft_edge_is_the_raised_cosine_of_the_distance():
    mask = np.zeros((15, 15, 15), dtype=bool)
    mask[7, 7, 7] = True
    mask[7, 7, 8] = True
    out = soft_edge(mask, width=4.5)
    d = np.sqrt(_brute_d2(mask))
    expected = np.where(mask, 1.0, np.where(d < 4.5, 0.5 + 0.5 * np.cos(np.pi * d / 4.5), 0.0))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-15)
    assert out[7, 7, 3] == pytest.approx(0.5 + 0.5 * np.cos(np.pi * 4 / 4.5))  # 4 px from (7,7,7)


# ---- the command line ----------------------------------------------------------------------------

def _cli(args: list[str]) -> int:
    from dashboard.cli import main

    return main(["maskcreate", *args])


def test_cli_writes_relions_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copy(BLOBS, "blobs.mrc")
    assert _cli(["--i", "blobs.mrc", "--o", "MaskCreate/job001/mask.mrc", "--lowpass", "15", "--angpix", "3.5",
                 "--ini_threshold", "0.1", "--extend_inimask", "2", "--width_soft_edge", "4", "--j", "1"]) == 0
    job = Path("MaskCreate/job001")
    assert sorted(p.name for p in job.iterdir()) == ["RELION_JOB_EXIT_SUCCESS", "job.star", "mask.mrc", "note.txt"]
    np.testing.assert_allclose(read_mrc(job / "mask.mrc").data, relion_mask("mask_lp_ext_soft"), rtol=0, atol=1.2e-7)
    star = JobStar.read(job / "job.star")
    assert star.type_label == "relion.maskcreate" and not star.is_continue and not star.is_tomo
    assert {k: star.options[k] for k in ("fn_in", "lowpass_filter", "angpix", "inimask_threshold", "extend_inimask",
                                         "width_mask_edge", "do_helix")} == {
        "fn_in": "blobs.mrc", "lowpass_filter": "15", "angpix": "3.5", "inimask_threshold": "0.1",
        "extend_inimask": "2", "width_mask_edge": "4", "do_helix": "No"}
    note = (job / "note.txt").read_text()
    assert "tomodash maskcreate --i blobs.mrc --o MaskCreate/job001/mask.mrc --lowpass 15 --angpix 3.5 " \
           "--ini_threshold 0.1 --extend_inimask 2 --width_soft_edge 4 --j 1" in note


def test_cli_absent_flags_take_the_programs_defaults(tmp_path, monkeypatch):
    # relion_mask_create without --lowpass/--extend_inimask/--width_soft_edge: no filter, a
    # binary mask (the GUI's defaults 15 Å / 3 / 3 are the form's, not the program's).
    monkeypatch.chdir(tmp_path)
    shutil.copy(BLOBS, "blobs.mrc")
    assert _cli(["--i", "blobs.mrc", "--o", "out/", "--ini_threshold", "0.2", "--invert",
                 "--helix", "--z_percentage", "0.5", "--width_soft_edge", "2"]) == 0
    options = JobStar.read(Path("out/job.star")).options
    assert options["lowpass_filter"] == "-1" and options["extend_inimask"] == "0"
    assert options["other_args"] == "--invert" and options["do_helix"] == "Yes"
    assert options["helical_z_percentage"] == "50"
    expected = make_mask(read_mrc(BLOBS).data, MaskSettings(threshold=0.2, width=2, invert=True, helix_z_fraction=0.5),
                         pixel_size=3.5)
    np.testing.assert_array_equal(read_mrc(Path("out/mask.mrc")).data, expected.astype(np.float32))
    assert "--helix --z_percentage 0.5 --j 1 --invert" in Path("out/note.txt").read_text()


def _write_map(path: Path, shape: tuple[int, int, int]) -> None:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.random.default_rng(1).random(shape, dtype=np.float32))
        mrc.voxel_size = 2.0


@pytest.mark.parametrize("case, args, message", [
    ("missing map", ["--i", "nothere.mrc"], "nothere.mrc"),
    ("threshold above the maximum", ["--i", "blobs.mrc", "--ini_threshold", "5"], "the mask would be empty"),
    ("shrunk to nothing", ["--i", "blobs.mrc", "--ini_threshold", "1.2", "--extend_inimask", "-3"],
     "removes every voxel"),
    ("non-cubic map", ["--i", "flat.mrc", "--ini_threshold", "0.5"], "needs a cubic map"),
    ("2D image", ["--i", "image.mrc", "--ini_threshold", "0.5"], "a 3D map is needed"),
])
def test_cli_bad_input_leaves_nothing(tmp_path, monkeypatch, capsys, case, args, message):
    monkeypatch.chdir(tmp_path)
    shutil.copy(BLOBS, "blobs.mrc")
    _write_map(tmp_path / "flat.mrc", (30, 32, 32))
    with mrcfile.new(tmp_path / "image.mrc") as mrc:
        mrc.set_data(np.ones((32, 32), dtype=np.float32))
    assert _cli([*args, "--o", "MaskCreate/job001/"]) == 2
    err = capsys.readouterr().err
    assert message in err and "ERROR" in err and "Traceback" not in err
    assert not Path("MaskCreate").exists()


def test_cli_refuses_another_output_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert _cli(["--i", str(BLOBS), "--o", "MaskCreate/job001/solvent.mrc"]) == 2
    assert "mask.mrc" in capsys.readouterr().err and not Path("MaskCreate").exists()


# ---- the parameters ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_parameters_survive_their_command_line(seed):
    # The note's command, parsed by `tomodash maskcreate`, gives the same job.star back.
    import argparse

    from processing.jobs.maskcreate import add_parser, params_from_mask_flags

    rng = np.random.default_rng(seed)
    params = MaskCreateParameters(
        fn_in=f"Reconstruct/job{seed:03d}/merged.mrc",
        lowpass_filter=float(rng.choice([-1.0, round(float(rng.uniform(5, 60)), 2)])),
        angpix=float(rng.choice([-1.0, round(float(rng.uniform(0.5, 9)), 3)])),
        inimask_threshold=round(float(rng.uniform(-0.5, 2)), 4), extend_inimask=float(rng.integers(-5, 10)),
        width_mask_edge=round(float(rng.uniform(0.5, 12)), 1), do_helix=bool(rng.random() < 0.5),
        helical_z_percentage=float(rng.integers(10, 91)), nr_threads=int(rng.integers(1, 9)),
        other_args="--invert" if rng.random() < 0.5 else "")
    command = params.own_command("MaskCreate/job007/")
    subparsers = argparse.ArgumentParser().add_subparsers()
    args = add_parser(subparsers).parse_args(shlex.split(command)[2:])
    back, is_continue, job_dir = params_from_mask_flags(args)
    assert job_dir == "MaskCreate/job007/" and not is_continue
    expected = params.to_job_options()
    if not params.do_helix:  # the command has no --z_percentage then (RELION's GUI neither)
        expected["helical_z_percentage"] = "30"
    assert back.to_job_options() == expected, command


def test_job_star_names_are_relions():
    # The CCP-EM pipeliner ships RELION's default job.star of this type: same variables (RELION's
    # GUI has no MPI field for mask creation).
    import pipeliner

    default = Path(pipeliner.__file__).parent / "jobs/relion/relion_jobstars/default_relion_maskcreate_job.star"
    relion = JobStar.read(default)
    ours = MaskCreateParameters().to_job_options()
    assert relion.type_label == MaskCreateParameters.job_type_label
    assert set(ours) == set(relion.options)
    params = MaskCreateParameters.from_job_options(relion.options)
    assert params.inimask_threshold == 0.005 and params.width_mask_edge == 6 and params.angpix == -1


def test_form_problems():
    p = MaskCreateParameters(fn_in="", do_helix=True, width_mask_edge=0)
    fields = {f.field for f in p.problems()}
    assert fields == {"fn_in", "width_mask_edge"}
    with pytest.raises(InputError, match="helical_z_percentage"):
        MaskCreateParameters.from_job_options({"helical_z_percentage": "95"}, source="job.star")


# ---- a job of a session ----------------------------------------------------------------------------

@pytest.fixture
def session(tmp_path) -> Session:
    s = Session.create(tmp_path / "session")
    (s.root / "Maps").mkdir()
    shutil.copy(BLOBS, s.root / "Maps/blobs.mrc")
    _write_map(s.root / "Maps/flat.mrc", (30, 32, 32))
    return s


def _wait_done(session: Session, name: str, timeout: float = 120) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = runner.reconcile(session, name)
        if status != "Running":
            return status
        time.sleep(0.2)
    raise AssertionError(f"{name} still running after {timeout} s")


def test_session_job_runs_and_ccpem_lists_it(session):
    from pipeliner.project_graph import ProjectGraph  # a test dependency: fail, not skip, when absent

    assert ProjectGraph is not None

    params = MaskCreateParameters(fn_in="Maps/blobs.mrc", lowpass_filter=15, angpix=3.5, inimask_threshold=0.1,
                                  extend_inimask=2, width_mask_edge=4)
    info = runner.run_job(session, "maskcreate", params, alias="solvent")
    assert info.name == "MaskCreate/job001/"
    assert _wait_done(session, info.name) == "Succeeded", (info.path / "run.err").read_text()
    np.testing.assert_allclose(read_mrc(info.path / "mask.mrc").data, relion_mask("mask_lp_ext_soft"),
                               rtol=0, atol=1.2e-7)
    pipe = session.read_pipeline()
    assert pipe.node("MaskCreate/job001/mask.mrc").type_label == "Mask3D.mrc.relion"
    assert pipe.node("Maps/blobs.mrc").type_label == "DensityMap.mrc"
    assert (session.root / ".Nodes/Mask3D/MaskCreate/solvent/mask.mrc").exists()
    view = ccpem_pipeliner_view(session.root, {"MaskCreate/job001/job.star": ["inimask_threshold", "width_mask_edge",
                                                                              "fn_in"]})
    job = view["processes"]["MaskCreate/job001/"]
    assert (job["type"], job["status"], job["alias"], job["inputs"]) == ("relion.maskcreate", "Succeeded",
                                                                         "MaskCreate/solvent/", 1)
    assert job["outputs"] == {"MaskCreate/job001/mask.mrc": "Mask3D.mrc.relion"}
    star = view["jobs"]["MaskCreate/job001/job.star"]
    assert star["class"] == "RelionMaskCreate"
    assert [float(star["inimask_threshold"]), float(star["width_mask_edge"]), star["fn_in"]] == [0.1, 4.0, "Maps/blobs.mrc"]


@pytest.mark.parametrize("values, error, where", [
    ({"fn_in": "Maps/nothere.mrc"}, JobValidationError, "fn_in"),
    ({"fn_in": "Maps/blobs.mrc", "inimask_threshold": 5.0}, InputError, "inimask_threshold"),
    ({"fn_in": "Maps/flat.mrc"}, InputError, "flat.mrc"),
])
def test_session_refuses_bad_jobs_and_makes_nothing(session, values, error, where):
    before = (session.root / "default_pipeline.star").read_text()
    with pytest.raises(error) as caught:
        runner.run_job(session, "maskcreate", MaskCreateParameters(**values))
    assert where in str(caught.value) or where in repr(getattr(caught.value, "problems", ""))
    assert not (session.root / "MaskCreate").exists()
    assert (session.root / "default_pipeline.star").read_text() == before


def test_presets_of_the_mask_job(session):
    from sessions import apply_preset, find_preset, save_preset
    from sessions.presets import preset_from_params

    mine = MaskCreateParameters(lowpass_filter=20, inimask_threshold=0.07, extend_inimask=4, width_mask_edge=6)
    save_preset(preset_from_params("solvent-20A", "maskcreate", mine,
                                   fields=["lowpass_filter", "inimask_threshold", "extend_inimask", "width_mask_edge"]),
                session=session)
    assert (session.root / "presets/solvent-20A.star").is_file()
    preset = find_preset("solvent-20A", "maskcreate", session)
    params, problems = apply_preset(preset, session, MaskCreateParameters(fn_in="Maps/blobs.mrc"))
    assert problems == [] and params.fn_in == "Maps/blobs.mrc"
    assert (params.lowpass_filter, params.inimask_threshold, params.extend_inimask, params.width_mask_edge) == \
        (20, 0.07, 4, 6)
