"""Subset selection (RELION's Select job through relion_star_handler): duplicate removal,
selection on a value range and re-centring, compared with relion_star_handler's own output
(tests/data/select, see its README) and with the simulator's planted duplicates; the job on the
command line and in a session, its files, ccpem-pipeliner's listing, bad input."""
from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from processing.errors import InputError
from processing.geometry.projection import particle_positions, particle_rotations, tilt_projection_matrices
from processing.io.jobstar import JobStar
from processing.io.optimisation_set import OptimisationSet
from processing.io.particles import ParticleSet
from processing.io.star import read_star, write_star
from processing.jobs.reconstruct_params import ReconstructParameters
from processing.jobs.select_params import SelectParameters
from processing.select import (
    find_duplicates, recenter, remove_duplicates, select_on_value, value_mask,
)
from processing.simulate import TEST, planted_duplicates, simulate_dataset
from sessions import JobValidationError, Session, import_dataset, runner

from conftest import ccpem_pipeliner_view, wait_for_job

DATA = Path(__file__).parent / "data" / "select"

#: Written STAR values carry 6 decimals; the copied columns must agree to that.
COPY_ATOL = 1e-6


def _names(p: ParticleSet) -> list[str]:
    return [str(n) for n in p.particle_names()]


@pytest.fixture(scope="module")
def relion_in() -> ParticleSet:
    return ParticleSet.read(DATA / "particles_in.star")


# ---- duplicate removal ---------------------------------------------------------------------------

@pytest.mark.parametrize("threshold, stem", [(30.0, "dedup30"), (29.9, "dedup29")])
def test_duplicate_removal_matches_relion_star_handler(relion_in, threshold, stem):
    kept, removed, removal = remove_duplicates(relion_in, min_distance_angst=threshold)
    relion_kept = ParticleSet.read(DATA / f"{stem}.star")
    relion_removed = read_star(DATA / f"{stem}_removed.star")["particles"]
    assert _names(kept) == _names(relion_kept)
    assert _names(removed) == list(relion_removed["rlnTomoParticleName"].astype(str))
    assert removal.n_removed == len(relion_removed)
    # every column travels unchanged, and so do the general and optics blocks
    assert list(kept.particles.columns) == list(relion_kept.particles.columns)
    for column in kept.particles.columns:
        ours, theirs = kept.particles[column], relion_kept.particles[column]
        if ours.dtype.kind in "iuf":
            np.testing.assert_allclose(ours.to_numpy(float), theirs.to_numpy(float), atol=COPY_ATOL, err_msg=column)
        else:
            assert list(ours.astype(str)) == list(theirs.astype(str)), column
    assert kept.general == relion_kept.general
    pd.testing.assert_frame_equal(kept.optics, relion_kept.optics)


def test_image_angpix_plays_no_part_for_tomograms(tmp_path):
    # relion_star_handler gave the same file with --image_angpix 1.35 (dedup30_angpix.star)
    code = _cli(["--i", str(DATA / "particles_in.star"), "--o", str(tmp_path / "job" / "particles.star"),
                 "--remove_duplicates", "30", "--image_angpix", "1.35"])   # RELION's --o spelling
    assert code == 0
    assert JobStar.read(tmp_path / "job" / "job.star").options["image_angpix"] == "1.35"
    assert _names(ParticleSet.read(tmp_path / "job" / "particles.star")) == \
        _names(ParticleSet.read(DATA / "dedup30_angpix.star"))


def test_relion_keep_rule_on_the_hand_made_table(relion_in):
    # Restates what the fixture's README says RELION did, case by case.
    _, removed, removal = remove_duplicates(relion_in, min_distance_angst=30.0)
    gone = set(_names(removed))
    assert {"TS_01/1", "TS_01/2"} <= gone and "TS_01/3" not in gone   # chain a-b-c: only c stays
    assert "TS_01/4" in gone                                           # exactly 30 Å: <= removes
    assert "TS_01/6" in gone          # origin subtracted unrotated, as RELION does (rotated: 72 Å)
    assert "TS_02/1" not in gone      # same coordinates as TS_01/1, other tomogram
    assert "TS_02/2" in gone          # 35 Å apart, 25 Å once its origin is applied
    assert "TS_02/4" not in gone      # 31 Å
    names = _names(relion_in)
    assert names[removal.partner[names.index("TS_01/1")]] == "TS_01/2"   # first later neighbour


def test_keep_rule_chain_order_and_tomograms():
    pos = np.array([[0, 0, 0], [20, 0, 0], [40, 0, 0], [0, 0, 0], [1000, 0, 0], [1000, 0, 30.0]])
    names = np.array(["A", "A", "A", "B", "A", "A"], dtype=object)
    result = find_duplicates(names, pos, min_distance_angst=30.0)
    # chain: a and b go (each has a later neighbour), c stays; B's particle stays; of the
    # 30-Å pair the later one stays.
    np.testing.assert_array_equal(result.keep, [False, False, True, True, False, True])
    np.testing.assert_array_equal(result.partner, [1, 2, -1, -1, 5, -1])
    # reversed file order: the other end of the chain survives
    reverse = find_duplicates(names[::-1], pos[::-1], min_distance_angst=30.0)
    np.testing.assert_array_equal(reverse.keep, [False, True, True, False, False, True])
    # just below the 30-Å distance the pair stays
    assert find_duplicates(names, pos, min_distance_angst=29.999).keep[4]


def test_distances_are_in_angstrom_not_pixels(sim_dataset):
    ds, _ = sim_dataset
    particles = ParticleSet.read(ds / "particles.star")
    px = TEST.pixel_size
    # two particles 25 Å apart in the same tomogram: 25 Å is 25/px = 4.2 px
    table = particles.particles.iloc[:2].copy()
    table["rlnTomoName"] = "TS_01"
    table["rlnCenteredCoordinateXAngst"] = [0.0, 25.0]
    for label in ("rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst", "rlnOriginXAngst",
                  "rlnOriginYAngst", "rlnOriginZAngst"):
        table[label] = 0.0
    pair = ParticleSet(table, particles.optics)
    assert remove_duplicates(pair, min_distance_angst=30.0)[2].n_removed == 1
    assert remove_duplicates(pair, min_distance_angst=25.0 / px)[2].n_removed == 0


def test_relion4_pixel_coordinates_give_the_same_selection(sim_dataset, tmp_path):
    ds, _ = sim_dataset
    particles = ParticleSet.read(ds / "particles.star")
    # the same particles with RELION-4 coordinates in ts-px (tomogram corner = 0)
    table = particles.particles.copy()
    size = np.array(TEST.tomogram_size, dtype=float)
    for axis, label in enumerate("XYZ"):
        table[f"rlnCoordinate{label}"] = table.pop(f"rlnCenteredCoordinate{label}Angst") / TEST.pixel_size + size[axis] / 2
    write_star(tmp_path / "relion4.star", {"optics": particles.optics, "particles": table})
    OptimisationSet(particles=str(tmp_path / "relion4.star"), tomograms=str(ds / "tomograms.star")).write(
        tmp_path / "opt.star")
    code = _cli(["--i", str(tmp_path / "opt.star"), "--o", str(tmp_path / "job") + "/", "--remove_duplicates", "50"])
    assert code == 0
    ours = ParticleSet.read(tmp_path / "job" / "particles.star")
    expected = remove_duplicates(particles, min_distance_angst=50.0)[0]
    assert _names(ours) == _names(expected)
    # RELION 5 writes centred coordinates back (px -> Å round trip within the 6 written decimals)
    np.testing.assert_allclose(ours.centred_coordinates(), expected.centred_coordinates(), atol=1e-4)


# ---- planted duplicates (simulator) ----------------------------------------------------------------

@pytest.fixture(scope="module")
def sim_dataset(tmp_path_factory):
    """Two tiny tomograms (3 tilts), 30 % of the particles picked twice 3-20 Å from their centre;
    first picks within 5 Å RMS of the truth (about 2 s)."""
    out = tmp_path_factory.mktemp("select_sim")
    params = dataclasses.replace(TEST, n_tomograms=2, tilt_step=45.0, duplicate_fraction=0.3,
                                 position_error_angst=5.0)
    result = simulate_dataset(params, out)
    return out, result


def test_simulator_plants_second_picks_of_the_same_particles(sim_dataset):
    ds, result = sim_dataset
    planted = planted_duplicates(ds)
    picks = ParticleSet.read(ds / "particles.star")
    truth = ParticleSet.read(ds / "particles_true.star")
    assert len(planted) == sum(round(0.3 * len(t.true_poses)) for t in result.tomograms) > 0
    assert len(picks) == len(truth) == result.n_particles + len(planted)
    assert _names(picks) == _names(truth)
    index = {n: i for i, n in enumerate(_names(picks))}
    centred, true_centred = picks.centred_coordinates(), truth.centred_coordinates()
    for second, first in planted.items():
        # a second pick's truth is its particle's; it lies 3-20 Å from that true centre
        np.testing.assert_allclose(true_centred[index[second]], true_centred[index[first]], atol=1e-6)
        distance = np.linalg.norm(centred[index[second]] - true_centred[index[second]])
        assert 3.0 - 1e-5 <= distance <= 20.0 + 1e-5
    # the default dataset has none
    assert TEST.duplicate_fraction == 0 and "duplicate_fraction" not in TEST.to_dict()


def test_planted_duplicates_are_all_removed_and_no_distinct_particle_is(sim_dataset, tmp_path):
    ds, _ = sim_dataset
    planted = planted_duplicates(ds)
    picks = ParticleSet.read(ds / "particles.star")
    names = _names(picks)
    particle_of = {n: planted.get(n, n) for n in names}          # pick -> its particle's first pick
    # Precondition of the check: 50 Å separates every pair of picks of one particle and no two
    # distinct particles (else no threshold could do both).
    pos, tomo = picks.centred_coordinates(), picks.tomo_names()
    same_max, other_min = 0.0, np.inf
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            if tomo[i] != tomo[j]:
                continue
            d = float(np.linalg.norm(pos[i] - pos[j]))
            if particle_of[names[i]] == particle_of[names[j]]:
                same_max = max(same_max, d)
            else:
                other_min = min(other_min, d)
    assert same_max < 50.0 < other_min, (same_max, other_min)
    code = _cli(["--i", str(ds / "optimisation_set.star"), "--o", str(tmp_path / "job") + "/",
                 "--remove_duplicates", "50"])
    assert code == 0
    kept = _names(ParticleSet.read(tmp_path / "job" / "particles.star"))
    removed = list(read_star(tmp_path / "job" / "particles_removed.star")["particles"]["rlnTomoParticleName"].astype(str))
    assert len(removed) == len(planted)
    # every particle keeps exactly one of its picks
    survivors = [particle_of[n] for n in kept]
    assert sorted(survivors) == sorted(set(particle_of.values()))
    opt = OptimisationSet.read(tmp_path / "job" / "optimisation_set.star")
    assert opt.particles == str(tmp_path / "job" / "particles.star")
    assert Path(opt.tomograms).resolve() == (ds / "tomograms.star").resolve()
    summary = json.loads((tmp_path / "job" / "selection.json").read_text())
    assert summary == {"input": len(names), "kept": len(kept), "duplicates_removed": len(planted),
                       "min_distance_angst": 50.0, "recentered": False, "task": "removeduplicates"}


# ---- selection on values ---------------------------------------------------------------------------

@pytest.mark.parametrize("label, low, high, stem", [
    ("rlnMaxValueProbDistribution", 0.2, 0.5, "sel_mvpd"),
    ("rlnClassNumber", 2, 3, "sel_class"),
])
def test_value_selection_matches_relion_star_handler(relion_in, label, low, high, stem):
    kept, mask = select_on_value(relion_in, label, minval=low, maxval=high)
    assert _names(kept) == _names(ParticleSet.read(DATA / f"{stem}.star"))
    assert mask.sum() == len(kept)


def test_value_bounds_are_inclusive_in_single_precision(relion_in):
    values = relion_in.particles["rlnMaxValueProbDistribution"].to_numpy()
    mask = value_mask(relion_in, "rlnMaxValueProbDistribution", minval=0.2, maxval=0.5)
    assert mask[values == 0.5].all()            # 0.5 is exact in float: included
    assert not mask[values == 0.2].any()        # 0.2f > 0.2: RELION leaves it out
    assert value_mask(relion_in, "rlnMaxValueProbDistribution", minval=0.125, maxval=0.5)[values == 0.2].all()


def test_value_selection_names_what_is_wrong(relion_in):
    with pytest.raises(InputError) as bad:
        value_mask(relion_in, "rlnCtfMaxResolution", minval=0, maxval=1)
    assert bad.value.column == "rlnCtfMaxResolution" and bad.value.table == "particles"
    assert bad.value.file.endswith("particles_in.star")
    with pytest.raises(InputError) as text:
        value_mask(relion_in, "rlnTomoName", minval=0, maxval=1)
    assert text.value.column == "rlnTomoName"
    with pytest.raises(InputError) as order:
        value_mask(relion_in, "rlnClassNumber", minval=3, maxval=2)
    assert order.value.column == "select_minval"


# ---- re-centring ------------------------------------------------------------------------------------

def test_recentering_matches_relion_star_handler(relion_in):
    ours = recenter(relion_in, (2, -3, 5))
    relion = ParticleSet.read(DATA / "centered.star")
    # RELION prints ~7 significant digits (e.g. -11.73423): 1e-4 Å covers that; a wrong sign or
    # rotation would be off by tens of Å.
    np.testing.assert_allclose(ours.origins(), relion.origins(), atol=1e-4)
    np.testing.assert_array_equal(ours.centred_coordinates(), relion_in.centred_coordinates())
    assert np.abs(ours.origins() - relion_in.origins()).max() > 20


def test_recentred_particle_projects_where_the_reference_point_did():
    rng = np.random.default_rng(5)
    n, size, px, angpix = 6, (400, 380, 200), 2.7, 8.1
    centred = rng.uniform(-300, 300, (n, 3))
    origins = rng.uniform(-10, 10, (n, 3))
    angles = rng.uniform(-180, 180, (n, 3))
    sub = rng.uniform(-180, 180, (n, 3))
    table = pd.DataFrame({
        "rlnTomoName": ["TS_01"] * n, "rlnOpticsGroup": [1] * n,
        **{f"rlnCenteredCoordinate{a}Angst": centred[:, k] for k, a in enumerate("XYZ")},
        **{f"rlnOrigin{a}Angst": origins[:, k] for k, a in enumerate("XYZ")},
        **{f"rlnAngle{a}": angles[:, k] for k, a in enumerate(("Rot", "Tilt", "Psi"))},
        **{f"rlnTomoSubtomogram{a}": sub[:, k] for k, a in enumerate(("Rot", "Tilt", "Psi"))},
    })
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnImagePixelSize": [angpix], "rlnTomoTiltSeriesPixelSize": [px]})
    point = np.array([3.0, -1.5, 7.0])                      # px of the 8.1-Å particle images
    moved = recenter(ParticleSet(table, optics), point)
    old = particle_positions(centred, tomogram_size=size, pixel_size=px, origin_angst=origins, subtomogram_angles=sub)
    new = particle_positions(centred, tomogram_size=size, pixel_size=px, origin_angst=moved.origins(),
                             subtomogram_angles=sub)
    # the reference point lies at p + A_sub·A·r (r in Å, positions in ts-px)
    target = old + np.einsum("nij,j->ni", particle_rotations(angles, sub), point * angpix) / px
    tilts = np.array([-45.0, 0.0, 30.0])
    P = tilt_projection_matrices(np.zeros(3), tilts, np.full(3, 85.0), np.zeros(3), np.zeros(3),
                                 tomogram_size=size, image_size=(400, 380), pixel_size=px)
    project = (lambda p: np.einsum("tij,nj->tni", P[:, :2, :3], p) + P[:, None, :2, 3])
    # pure double arithmetic: agreement to 1e-9 px; the move itself is ~20 ts-px
    np.testing.assert_allclose(project(new), project(target), atol=1e-9)
    assert np.linalg.norm(new - old, axis=1).min() > 5


# ---- the job: command line, session, pipeliner, bad input ------------------------------------------

def _cli(argv: list[str]) -> int:
    from dashboard.cli import main

    return main(["select", *argv])


def test_job_star_and_labels(tmp_path):
    dup = SelectParameters(fn_data="x.star", do_remove_duplicates=True, duplicate_threshold=50)
    assert dup.process_type_label() == "relion.select.removeduplicates"
    dup.write_job_star(tmp_path)
    star = JobStar.read(tmp_path / "job.star")
    assert star.type_label == "relion.select.removeduplicates" and not star.is_continue
    assert star.options["duplicate_threshold"] == "50" and star.options["do_remove_duplicates"] == "Yes"
    assert star.options["fn_model"] == "" and star.options["do_split"] == "No"      # RELION's other options
    back = SelectParameters.from_job_options(star.options)
    assert back.duplicate_threshold == 50 and back.do_remove_duplicates and back.fn_data == "x.star"
    on_value = SelectParameters(fn_data="x.star", do_select_values=True, select_label="rlnLogLikeliContribution")
    assert on_value.process_type_label() == "relion.select.onvalue"
    problems = {p.field for p in SelectParameters(fn_data="x.star").problems()}
    assert "do_remove_duplicates" in problems                                    # no task chosen
    both = SelectParameters(fn_data="x.star", do_select_values=True, do_remove_duplicates=True)
    assert "do_select_values" in {p.field for p in both.problems()}


def test_command_line_bad_input_leaves_nothing(relion_in, tmp_path):
    src = str(DATA / "particles_in.star")
    for argv, words in ((["--remove_duplicates", "-5"], ("column duplicate_threshold", "(got -5)")),
                        (["--select", "rlnNoSuchLabel"], ("table data_particles, column rlnNoSuchLabel",)),
                        (["--select", "rlnClassNumber", "--minval", "3", "--maxval", "1"], ("column select_minval",))):
        out = tmp_path / "bad"
        proc = subprocess.run([sys.executable, "-m", "dashboard.cli", "select", "--i", src, "--o", f"{out}/", *argv],
                              capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert all(w in proc.stderr for w in words) and "Traceback" not in proc.stderr, proc.stderr
        assert not out.exists()


@pytest.fixture(scope="module")
def select_session(sim_dataset, tmp_path_factory):
    ds, _ = sim_dataset
    session = Session.create(tmp_path_factory.mktemp("select_session") / "s")
    import_dataset(session, ds / "tomograms.star", ds / "particles.star")
    info = runner.run_job(session, "select", SelectParameters(
        in_optimisation="Import/job001/optimisation_set.star", do_remove_duplicates=True, duplicate_threshold=50))
    assert wait_for_job(session, info.name) == "Succeeded", (info.path / "run.err").read_text()
    on_value = runner.run_job(session, "select", SelectParameters(
        in_optimisation=f"{info.name}optimisation_set.star", do_select_values=True, select_label="rlnAngleTilt",
        select_minval=85, select_maxval=95))
    assert wait_for_job(session, on_value.name) == "Succeeded", (on_value.path / "run.err").read_text()
    return session, info, on_value


def test_select_job_in_a_session_feeds_reconstruct(select_session, sim_dataset):
    session, info, _ = select_session
    ds, _ = sim_dataset
    job = info.path
    for name in ("job.star", "note.txt", "particles.star", "particles_removed.star", "optimisation_set.star",
                 "selection.json", "RELION_JOB_EXIT_SUCCESS"):
        assert (job / name).is_file(), name
    assert session.job(info.name).type_label == "relion.select.removeduplicates"
    pipe = session.read_pipeline()
    assert pipe.node(f"{info.name}particles.star").type_label == "ParticleGroupMetadata.star.relion"
    assert pipe.node(f"{info.name}optimisation_set.star").type_label.startswith("TomoOptimisationSet.star.relion")
    assert "Import/job001/optimisation_set.star" in pipe.inputs_of(info.name)
    opt = OptimisationSet.read(job / "optimisation_set.star")
    assert opt.particles == f"{info.name}particles.star" and opt.tomograms == "Import/job001/tomograms.star"
    assert len(ParticleSet.read(job / "particles.star")) == json.loads((job / "selection.json").read_text())["kept"]
    # the second job selected from the first one's set, on a value range
    on_value_job = select_session[2].path
    chained = ParticleSet.read(on_value_job / "particles.star")
    expected = select_on_value(ParticleSet.read(job / "particles.star"), "rlnAngleTilt", minval=85, maxval=95)[0]
    assert _names(chained) == _names(expected)
    assert 0 < len(chained) < len(ParticleSet.read(job / "particles.star"))       # some, not all
    assert session.job(select_session[2].name).type_label == "relion.select.onvalue"
    assert not (on_value_job / "particles_removed.star").exists()
    rec = runner.run_job(session, "reconstruct", ReconstructParameters(
        in_optimisation=f"{info.name}optimisation_set.star", binning=4, box_size=32, crop_size=24, sym_name="C6"))
    assert wait_for_job(session, rec.name) == "Succeeded", (rec.path / "run.err").read_text()
    assert (rec.path / "merged.mrc").is_file()
    assert f"{info.name}optimisation_set.star" in session.read_pipeline().inputs_of(rec.name)


def test_ccpem_pipeliner_lists_the_select_jobs(select_session):
    session, info, on_value = select_session
    importlib.import_module("pipeliner.project_graph")  # a test dependency: fail, not skip, when absent
    view = ccpem_pipeliner_view(session.root, {f"{info.name}job.star": ["duplicate_threshold"],
                                               f"{on_value.name}job.star": ["select_label"]})
    for job, label in ((info, "relion.select.removeduplicates"), (on_value, "relion.select.onvalue")):
        seen = view["processes"][job.name]
        assert (seen["type"], seen["status"], seen["inputs"], len(seen["outputs"])) == (label, "Succeeded", 1, 2)
    duplicates = view["jobs"][f"{info.name}job.star"]
    assert duplicates["class"] == "RelionSelectRemoveDuplicates" and float(duplicates["duplicate_threshold"]) == 50
    assert view["jobs"][f"{on_value.name}job.star"] == {"class": "RelionSelectOnValue", "select_label": "rlnAngleTilt"}


def test_session_refuses_bad_select_jobs_and_creates_nothing(select_session):
    session, _, _ = select_session
    before = (session.root / "default_pipeline.star").read_text()
    jobs = sorted(p.name for p in (session.root / "Select").iterdir())
    with pytest.raises(InputError) as missing:
        runner.run_job(session, "select", SelectParameters(
            in_optimisation="Import/job001/optimisation_set.star", do_select_values=True,
            select_label="rlnLogLikeliContribution", select_minval=0, select_maxval=1))
    assert missing.value.column == "rlnLogLikeliContribution" and missing.value.table == "particles"
    with pytest.raises(JobValidationError) as order:
        runner.run_job(session, "select", SelectParameters(
            in_optimisation="Import/job001/optimisation_set.star", do_select_values=True,
            select_label="rlnAngleRot", select_minval=10, select_maxval=-10))
    assert "select_minval" in {p.field for p in order.value.problems}
    with pytest.raises(JobValidationError) as negative:
        runner.run_job(session, "select", SelectParameters(
            in_optimisation="Import/job001/optimisation_set.star", do_remove_duplicates=True, duplicate_threshold=-5))
    assert negative.value.column == "duplicate_threshold" and "-5" in str(negative.value)
    assert (session.root / "default_pipeline.star").read_text() == before
    assert sorted(p.name for p in (session.root / "Select").iterdir()) == jobs


# ---- dashboard headline (headless) -----------------------------------------------------------------

def test_dashboard_headline_of_a_select_job(select_session):
    from dashboard.select_results import select_headline
    from dashboard.viewmodels.job import job_headline
    from dashboard.watcher import SessionWatcher

    session, info, _ = select_session
    summary = json.loads((info.path / "selection.json").read_text())
    removed = len(read_star(info.path / "particles_removed.star")["particles"])
    kept = len(ParticleSet.read(info.path / "particles.star"))
    watcher = SessionWatcher(session.root, interval=0.0)
    watcher.poll(force=True)
    headline = job_headline(watcher, watcher.job(info.name))
    assert headline.title == f"{kept} of {kept + removed} particles kept; {removed} duplicates removed"
    assert headline.value == kept and summary["input"] == kept + removed
    assert "minimum inter-particle distance 50 Å" in headline.facts
    on_value = select_headline({"input": 10, "kept": 7, "task": "onvalue", "outside_range": 3,
                                "label": "rlnMaxValueProbDistribution", "minval": 0.1, "maxval": 1.0,
                                "recentered": True, "centre_px": [0, 0, 11]})
    assert on_value.title == "7 of 10 particles kept; 3 outside the range"
    assert on_value.facts == ("0.1 ≤ rlnMaxValueProbDistribution ≤ 1", "re-centred on (0, 0, 11) px of the reference")
    # no summary yet (a running job): no headline rather than an error
    (info.path / "selection.json").rename(info.path / "selection.json.bak")
    try:
        watcher.poll(force=True)
        assert job_headline(watcher, watcher.job(info.name)) is None
    finally:
        (info.path / "selection.json.bak").rename(info.path / "selection.json")
