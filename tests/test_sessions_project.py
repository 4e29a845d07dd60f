"""Sessions on disk: creation, import, job numbering, nodes/edges, aliases, validation, locking,
presets and interoperability with the CCP-EM pipeliner."""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from processing.errors import InputError
from processing.io.jobstar import JobStar
from processing.jobs.extract_params import ExtractParameters
from processing.jobs.reconstruct_params import ReconstructParameters
from sessions import (
    Fingerprint, JobValidationError, Pipeline, PresetMismatchWarning, Session, apply_preset,
    create_demo_session, find_preset, find_session, import_dataset, list_presets, save_preset,
)
from sessions.lock import LockTimeout, RELION_LOCK_DIR, RELION_LOCK_FILE
from sessions.presets import BUILTIN_PRESETS, Preset
from sessions.procinfo import identity_of
from conftest import ccpem_pipeliner_view

OPT = "Import/job001/optimisation_set.star"


@pytest.fixture(scope="module")
def demo_template(tmp_path_factory) -> Path:
    """A session with the tiny simulated dataset imported (copied per test)."""
    root = tmp_path_factory.mktemp("template") / "session"
    create_demo_session(root, preset="test")
    return root


@pytest.fixture
def session(demo_template, tmp_path) -> Session:
    import shutil

    dst = tmp_path / "session"
    shutil.copytree(demo_template, dst, symlinks=True)
    return Session(dst)


def test_create_empty_session(tmp_path):
    s = Session.create(tmp_path / "new", title="x")
    assert (s.root / ".gui_projectdir").exists() and (s.root / "presets").is_dir()
    assert Pipeline.read(s.root / "default_pipeline.star").job_counter == 1
    assert s.jobs() == [] and s.settings["title"] == "x"
    with pytest.raises(InputError):
        Session.create(tmp_path / "new")
    with pytest.raises(InputError):
        Session(tmp_path)


def test_demo_import(session):
    [job] = session.jobs()
    assert job.name == "Import/job001/" and job.type_label == "relion.importtomo" and job.status == "Succeeded"
    d = job.path
    for name in ("job.star", "job_pipeline.star", "note.txt", "tomograms.star", "particles.star",
                 "optimisation_set.star", "RELION_JOB_EXIT_SUCCESS", "PIPELINER_JOB_EXIT_SUCCESS"):
        assert (d / name).exists(), name
    # tilt-series paths now resolve from the session directory
    assert "Dataset/tilt_series/TS_01.star" in (d / "tomograms.star").read_text()
    assert (session.root / "Dataset/tilt_series/TS_01.star").exists()
    assert "Import/job001/particles.star" in (d / "optimisation_set.star").read_text()
    pipe = session.read_pipeline()
    assert pipe.job_counter == 2
    assert pipe.node("Import/job001/tomograms.star").type_label == "TomogramGroupMetadata.star.relion.tomo.import"
    assert (session.root / ".Nodes/TomoOptimisationSet/Import/job001/optimisation_set.star").exists()
    settings = session.settings
    assert settings["pixel_size"] == 6.0 and settings["symmetry"] == "C6" and settings["n_particles"] > 0


def test_import_external_files_keeps_paths_valid(tmp_path, demo_template):
    s = Session.create(tmp_path / "s2")
    job = import_dataset(s, demo_template / "Dataset/tomograms.star", demo_template / "Dataset/particles.star")
    text = (job.path / "tomograms.star").read_text()
    assert str((demo_template / "Dataset/tilt_series/TS_01.star").resolve()) in text


def test_import_missing_file_leaves_nothing(tmp_path):
    s = Session.create(tmp_path / "s3")
    with pytest.raises(InputError):
        import_dataset(s, tmp_path / "nope.star", tmp_path / "nope2.star")
    assert not (s.root / "Import").exists() and s.jobs() == []


def test_jobs_are_numbered_across_the_session_with_nodes_and_edges(session):
    e = session.create_job("extract", ExtractParameters(in_optimisation=OPT, binning=3, box_size=64, crop_size=48),
                           alias="bin3")
    assert e.name == "Extract/job002/" and e.status == "Scheduled" and e.alias == "Extract/bin3/"
    link = session.root / "Extract/bin3"
    assert link.is_symlink() and os.readlink(link) == "../Extract/job002/"
    r = session.create_job("reconstruct", ReconstructParameters(in_optimisation="Extract/bin3/optimisation_set.star",
                                                                binning=3, box_size=64, crop_size=48))
    assert r.name == "Reconstruct/job003/"
    star = JobStar.read(r.path / "job.star")
    assert star.type_label == "relion.reconstructparticletomo" and not star.is_tomo
    assert star.options["in_optimisation"] == "Extract/job002/optimisation_set.star"  # alias resolved
    assert star.options["binfactor"] == star.options["binning"] == "3"  # ccpem twin keys
    pipe = session.read_pipeline()
    assert pipe.job_counter == 4
    assert pipe.inputs_of("Extract/job002/") == [OPT]
    assert pipe.inputs_of("Reconstruct/job003/") == ["Extract/job002/optimisation_set.star"]
    assert pipe.node("Reconstruct/job003/half1.mrc").depth == 99
    assert pipe.producer_of("Extract/job002/optimisation_set.star") == "Extract/job002/"
    mini = Pipeline.read(r.path / "job_pipeline.star")
    assert [p.name for p in mini.processes] == ["Reconstruct/job003/"] and mini.job_counter == 2
    # lookups by alias, path and name
    assert session.resolve_job("Extract/bin3") == "Extract/job002/"
    assert session.resolve_job(session.root / "Extract/bin3") == "Extract/job002/"
    found, name = find_session(session.root / "Reconstruct/job003")
    assert found.root == session.root and name == "Reconstruct/job003/"
    with pytest.raises(InputError):
        session.create_job("extract", ExtractParameters(in_optimisation=OPT), alias="bin3")


def test_set_alias_moves_link(session):
    e = session.create_job("extract", ExtractParameters(in_optimisation=OPT), alias="first")
    session.set_alias(e.name, "second")
    assert not (session.root / "Extract/first").exists()
    assert os.readlink(session.root / "Extract/second") == "../Extract/job002/"
    session.set_alias(e.name, None)
    assert session.job(e.name).alias is None and not (session.root / "Extract/second").exists()


def test_invalid_parameters_leave_no_job_directory(session):
    before = sorted(p.name for p in session.root.iterdir())
    with pytest.raises(JobValidationError) as err:
        session.create_job("extract", ExtractParameters(in_optimisation="Import/job001/missing.star"))
    assert "missing.star" in str(err.value) and err.value.problems[0].field == "in_optimisation"
    with pytest.raises(JobValidationError):
        session.create_job("extract", ExtractParameters(in_optimisation=OPT, box_size=64, crop_size=96))
    assert sorted(p.name for p in session.root.iterdir()) == before
    assert not (session.root / "Extract").exists()
    assert session.read_pipeline().job_counter == 2 and len(session.jobs()) == 1


def _create_many(root: str, n: int, tag: str) -> list[str]:
    s = Session(root)
    names = []
    for i in range(n):
        alias = f"{tag}_{i}" if i % 3 == 0 else None
        names.append(s.create_job("extract", ExtractParameters(in_optimisation=OPT), alias=alias).name)
    return names


def test_concurrent_writers_lose_nothing(session):
    ctx = mp.get_context("spawn")
    n_proc, n_jobs = 4, 8
    with ctx.Pool(n_proc) as pool:
        results = pool.starmap(_create_many, [(str(session.root), n_jobs, f"w{k}") for k in range(n_proc)])
    created = [n for r in results for n in r]
    assert len(created) == len(set(created)) == n_proc * n_jobs
    pipe = session.read_pipeline()
    names = [p.name for p in pipe.processes]
    assert sorted(names[1:]) == sorted(created)
    numbers = sorted(int(n.split("job")[1].rstrip("/")) for n in names)
    assert numbers == list(range(1, n_proc * n_jobs + 2))
    assert pipe.job_counter == n_proc * n_jobs + 2
    aliases = [p.alias for p in pipe.processes if p.alias]
    assert len(aliases) == n_proc * len(range(0, n_jobs, 3))
    for name in created:
        assert (session.root / name / "job.star").exists()
    assert not (session.root / RELION_LOCK_DIR).exists()


def test_stale_lock_of_killed_process_is_recovered(session):
    code = ("import os, signal, sys; from sessions.lock import SessionLock; "
            "l = SessionLock(sys.argv[1]); l.acquire('die holding it'); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(session.root)])
    assert proc.returncode == -signal.SIGKILL
    assert (session.root / RELION_LOCK_DIR / RELION_LOCK_FILE).exists()
    with pytest.warns(UserWarning, match="stale"):
        session.create_job("extract", ExtractParameters(in_optimisation=OPT))
    assert not (session.root / RELION_LOCK_DIR).exists()


def test_reused_pid_does_not_keep_a_lock(session):
    me = identity_of(os.getpid())  # a live pid, but not the start time in the lock file
    lock_dir = session.root / RELION_LOCK_DIR
    lock_dir.mkdir()
    (lock_dir / RELION_LOCK_FILE).write_text(
        f"tomodash pid={me.pid} start={me.start_time - 1} host={me.host} boot={me.boot_id}: old\n")
    with pytest.warns(UserWarning, match="stale"):
        session.set_status("Import/job001/", "Succeeded")


def test_foreign_lock_is_respected(session):
    (session.root / RELION_LOCK_DIR).mkdir()  # RELION or ccpem holding it right now
    impatient = Session(session.root, lock_timeout=0.5)
    with pytest.raises(LockTimeout):
        impatient.create_job("extract", ExtractParameters(in_optimisation=OPT))
    assert not (session.root / "Extract").exists()


# ---- presets ----------------------------------------------------------------------------------

def test_builtin_presets_match_the_tutorial():
    p = BUILTIN_PRESETS["tutorial-bin6-refine3d"].params()
    assert (p.particle_diameter, p.sym_name, p.ini_high, p.sampling, p.auto_local_sampling, p.sigma_tilt,
            p.nr_pool, p.nr_mpi, p.nr_threads) == (500, "C6", 60, "7.5 degrees", "1.8 degrees", 10, 30, 5, 6)
    e = BUILTIN_PRESETS["tutorial-bin2-extract"].params()
    assert (e.binning, e.box_size, e.crop_size, e.max_dose, e.min_frames, e.do_stack2d, e.do_float16) == \
        (2, 256, 128, 50, 1, True, True)
    assert BUILTIN_PRESETS["tutorial-bin2-reconstruct"].params().sym_name == "C6"
    r2 = BUILTIN_PRESETS["tutorial-bin2-refine3d"].params()
    assert (r2.ini_high, r2.particle_diameter) == (20, 230)
    d = BUILTIN_PRESETS["demo-refine3d"].params()
    assert (d.ini_high, d.sym_name, d.sampling, d.auto_local_sampling, d.sigma_tilt, d.nr_mpi) == \
        (60, "C6", "7.5 degrees", "1.8 degrees", 10, 3)
    assert 240 <= d.particle_diameter <= 260
    de = BUILTIN_PRESETS["demo-extract"].params()
    assert (de.binning, de.box_size, de.crop_size, de.max_dose) == (3, 64, 40, 30)
    dr = BUILTIN_PRESETS["demo-reconstruct"].params()
    assert (dr.binning, dr.box_size, dr.crop_size, dr.sym_name) == (3, 64, 40, "C6")


def test_presets_saved_in_session_and_user_folder(session, tmp_path, monkeypatch):
    monkeypatch.setenv("TOMODASH_PRESETS", str(tmp_path / "user"))
    mine = Preset("mine-extract", "extract", {"binning": "4", "box_size": "96"},
                  Fingerprint(6.0, 4, 96, "C6"), "mine")
    path = save_preset(mine, session=session)
    assert path == session.root / "presets/mine-extract.star"
    assert JobStar.read(path).type_label == "relion.pseudosubtomo"  # RELION can read it as a job.star
    again = find_preset("mine", "extract", session)
    assert again.options == mine.options and again.fingerprint == mine.fingerprint and again.source == "session"
    save_preset(Preset("everywhere-reconstruct", "reconstruct", {"sym_name": "D2"}), user=True)
    assert (tmp_path / "user/everywhere-reconstruct.star").exists()
    names = {p.name for p in list_presets(session, "reconstruct")}
    assert {"everywhere-reconstruct", "demo-reconstruct", "tutorial-bin2-reconstruct"} <= names
    with pytest.raises(InputError, match="available"):
        find_preset("nothing", "extract", session)


def test_preset_mismatch_warns(session):
    preset = find_preset("tutorial-bin6", "extract", session)
    with pytest.warns(PresetMismatchWarning, match="pixel size 1.35"):
        params, problems = apply_preset(preset, session, ExtractParameters(in_optimisation=OPT))
    assert params.binning == 6 and params.in_optimisation == OPT and problems
    fitting = Preset("fits-extract", "extract", {"binning": "2"}, Fingerprint(6.0, 2, 64, "C6"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, problems = apply_preset(fitting, session)
    assert problems == []
    wrong_sym = Preset("d2-extract", "extract", {}, Fingerprint(6.0, None, None, "D2"))
    with pytest.warns(PresetMismatchWarning, match="symmetry D2 vs C6"):
        apply_preset(wrong_sym, session)


# ---- CCP-EM pipeliner --------------------------------------------------------------------------

def test_ccpem_pipeliner_lists_jobs_and_statuses(session):
    import pipeliner.project_graph  # noqa: F401  (a test dependency: fail, not skip, when absent)
    session.create_job("extract", ExtractParameters(in_optimisation=OPT, binning=3, box_size=64, crop_size=48),
                       alias="bin3")
    session.set_status("Extract/job002/", "Failed", touch_markers=True)
    view = ccpem_pipeliner_view(session.root, {"Extract/job002/job.star": ["binfactor"]})
    seen = {name: (p["type"], p["status"], p["alias"], p["inputs"], len(p["outputs"]))
            for name, p in view["processes"].items()}
    assert seen["Import/job001/"] == ("relion.importtomo", "Succeeded", None, 0, 3)
    assert seen["Extract/job002/"] == ("relion.pseudosubtomo", "Failed", "Extract/bin3/", 1, 2)
    star = view["jobs"]["Extract/job002/job.star"]
    assert star["class"] == "RelionPseudoSubtomoJob" and float(star["binfactor"]) == 3
