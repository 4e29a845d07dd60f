"""Planted decoys of the simulator (``decoy_fraction``, ``tomodash simulate --decoys``): picks on
empty membrane, the "bad particles" 3D classification has to set apart."""
from __future__ import annotations

import dataclasses
import json

import mrcfile
import numpy as np
import pytest

from processing.io.particles import ParticleSet
from processing.io.tomograms import TomogramSet
from processing.simulate import TEST, planted_decoys, simulate_dataset
from processing.geometry.projection import tomogram_centre
from processing.simulate.tiltseries import add_patches, project_particles
from processing.simulate.truth import pose_errors

#: Two small tomograms of 3 noise-free, CTF-free tilts: 35 lattice sites each.
SMALL = dataclasses.replace(TEST, n_tomograms=2, tilt_step=45.0, snr=None, ctf=False, dose_weighting=False)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The same dataset with 30 % decoys and without (about 1 s)."""
    root = tmp_path_factory.mktemp("decoys")
    with_decoys = simulate_dataset(dataclasses.replace(SMALL, decoy_fraction=0.3), root / "decoys")
    plain = simulate_dataset(SMALL, root / "plain")
    return with_decoys, plain


def _table(path):
    return ParticleSet.read(path)


def test_about_a_third_of_the_picks_are_listed_as_decoys(datasets):
    result, plain = datasets
    decoys = planted_decoys(result.outdir)
    picks = _table(result.outdir / "particles.star")
    names = [str(n) for n in picks.particle_names()]
    sites = [len(t.true_poses) for t in result.tomograms]
    assert len(decoys) == sum(round(0.3 * n) for n in sites) > 0
    assert decoys <= set(names) and len(names) == sum(sites) == plain.n_particles
    assert abs(len(decoys) / len(names) - 0.3) < 0.05
    assert result.n_particles == len(names) - len(decoys)
    summary = json.loads((result.outdir / "simulation.json").read_text())
    assert summary["parameters"]["decoy_fraction"] == 0.3
    assert summary["n_particles"] == result.n_particles
    # the default dataset has none and keeps its simulation.json keys
    assert planted_decoys(plain.outdir) == set()
    assert "decoy_fraction" not in TEST.to_dict()
    assert all("planted_decoys" not in t for t in json.loads((plain.outdir / "simulation.json").read_text())["tomograms"])


def test_real_particles_are_those_of_the_dataset_without_decoys(datasets):
    result, plain = datasets
    decoys = planted_decoys(result.outdir)
    for key in ("particles.star", "particles_true.star"):
        a, b = _table(result.outdir / key), _table(plain.outdir / key)
        names = [str(n) for n in a.particle_names()]
        assert names == [str(n) for n in b.particle_names()]
        real = np.array([n not in decoys for n in names])
        np.testing.assert_array_equal(a.centred_coordinates()[real], b.centred_coordinates()[real])
        np.testing.assert_array_equal(a.angles()[real], b.angles()[real])
        np.testing.assert_array_equal(a.subtomogram_angles()[real], b.subtomogram_angles()[real])


def test_decoys_lie_on_the_membrane_a_particle_diameter_from_every_complex(datasets):
    result, _ = datasets
    decoys = planted_decoys(result.outdir)
    tomograms = TomogramSet.read(result.outdir / "tomograms.star")
    truth = _table(result.outdir / "particles_true.star")
    picks = _table(result.outdir / "particles.star")
    px = result.params.pixel_size
    names = [str(n) for n in truth.particle_names()]
    tomo = [str(t) for t in truth.tomo_names()]
    true_pos, pick_pos = truth.positions(tomograms), picks.positions(tomograms)
    diameter = 2.0 * result.phantom.radius  # Å, every blob out to 2σ
    for t in result.tomograms:
        rows = [i for i, n in enumerate(names) if tomo[i] == t.name]
        bad = [i for i in rows if names[i] in decoys]
        good = [i for i in rows if names[i] not in decoys]
        assert bad and good
        # the true pick lies on a vesicle's surface; the pick itself within the pose errors
        d = np.linalg.norm(true_pos[bad][:, None] - t.sphere_centres[None], axis=2)
        np.testing.assert_allclose(np.min(np.abs(d - t.sphere_radii[None]), axis=1), 0.0, atol=1e-3)
        assert np.all(np.linalg.norm(pick_pos[bad] - true_pos[bad], axis=1) * px < 6 * result.params.position_error_angst)
        # no complex within a particle diameter
        gap = np.linalg.norm(true_pos[bad][:, None] - true_pos[good][None], axis=2) * px
        assert gap.min() >= diameter


def test_decoy_picks_hold_membrane_not_the_complex(datasets):
    """At 0° (noise-free, CTF-free) the complexes at the real sites explain the whole image but
    for a membrane patch at each decoy: nothing else anywhere, and at every decoy a patch about
    as heavy as a complex."""
    result, _ = datasets
    px, radius = result.params.pixel_size, result.phantom.radius
    centre = tomogram_centre(result.params.tomogram_size)
    for t in result.tomograms:
        f = int(np.argmin(np.abs(t.geometry.nominal_tilt)))
        image = mrcfile.read(result.outdir / t.image_files[f]).astype(np.float64)
        poses, real = t.true_poses, ~t.decoys
        complexes = project_particles(result.phantom, poses.rotations()[real], poses.positions[real], t.projections[f],
                                      pixel_size=px, patch_size=64, tomogram_centre=centre)
        model = np.zeros(image.shape, dtype=np.float32)
        add_patches(model, complexes.patches, complexes.origins)
        residual = image - model
        one_complex = float(complexes.patches.sum(axis=(1, 2)).max())
        decoys = project_particles(result.phantom, poses.rotations()[t.decoys], poses.positions[t.decoys],
                                   t.projections[f], pixel_size=px, patch_size=64, tomogram_centre=centre).centres
        yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
        near = np.stack([np.hypot(xx - cx, yy - cy) for cx, cy in decoys])         # (decoys, H, W) px
        assert np.abs(residual[near.min(axis=0) > 130.0 / px]).max() < 1e-4 * image.max()
        # (two patches may overlap in projection: each disc holds at least one)
        assert all(residual[d < 1.5 * radius / px].sum() > 0.5 * one_complex for d in near)
        np.testing.assert_allclose(residual.sum(), len(near) * one_complex, rtol=0.05)


def test_pose_errors_leave_the_decoys_out(datasets):
    result, _ = datasets
    ds = result.outdir
    errors = pose_errors(ds / "particles_true.star", ds / "particles_true.star", ds / "tomograms.star", symmetry="C6")
    assert len(errors.angles) == len(errors.names) == result.n_particles
    assert not set(errors.names) & planted_decoys(ds)
    assert np.max(errors.angles) < 1e-3 and np.max(errors.shifts) < 1e-3
    every = pose_errors(ds / "particles.star", ds / "particles_true.star", ds / "tomograms.star", exclude=())
    assert len(every.angles) == result.n_particles + len(planted_decoys(ds))


def test_command_line_option(tmp_path):
    from dashboard.cli import main

    out = tmp_path / "ds"
    assert main(["simulate", str(out), "--preset", "test", "--decoys", "0.2", "--no-noise"]) == 0
    params = json.loads((out / "simulation.json").read_text())["parameters"]
    assert params["decoy_fraction"] == 0.2 and len(planted_decoys(out)) == round(0.2 * 35)
