"""Simulator: outputs, formats, determinism, phantom symmetry, SNR."""
from __future__ import annotations

import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile
from scipy import ndimage

from processing.errors import InputError
from processing.geometry.euler import rotation_z
from processing.simulate import TEST, SimulationParameters, procedural_phantom, render_map, simulate_dataset
from processing.geometry.symmetry import symmetry_operators as point_group_operators
from processing.simulate.acquisition import dose_symmetric_order
from processing.simulate.phantom import phantom_from_model, read_atoms

# Small but complete: one tomogram, ~20 particles, 7 tilts.
SMALL = TEST.replace(tilt_min=-27.0, tilt_max=27.0, max_particles_per_sphere=20)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("sim_a")
    return simulate_dataset(SMALL, out)


def test_outputs_parse_with_expected_columns(small) -> None:
    out = small.outdir
    tomos = starfile.read(out / "tomograms.star")
    assert list(tomos.columns) == [
        "rlnTomoName", "rlnTomoTiltSeriesStarFile", "rlnVoltage", "rlnSphericalAberration",
        "rlnAmplitudeContrast", "rlnMicrographOriginalPixelSize", "rlnTomoHand", "rlnTomoTiltSeriesPixelSize",
        "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ", "rlnTomoTomogramBinning",
    ]
    assert tomos["rlnTomoName"].tolist() == ["TS_01"]
    ts = starfile.read(out / tomos["rlnTomoTiltSeriesStarFile"][0], always_dict=True)
    assert list(ts) == ["TS_01"]
    tilts = ts["TS_01"]
    for col in (
        "rlnMicrographName", "rlnMicrographPreExposure", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
        "rlnCtfScalefactor", "rlnTomoNominalStageTiltAngle", "rlnTomoXTilt", "rlnTomoYTilt", "rlnTomoZRot",
        "rlnTomoXShiftAngst", "rlnTomoYShiftAngst",
    ):
        assert col in tilts.columns, col
    assert len(tilts) == 7
    np.testing.assert_allclose(tilts["rlnMicrographPreExposure"], np.arange(7) * SMALL.dose_per_tilt)
    np.testing.assert_allclose(tilts["rlnTomoYTilt"], [0, 9, -9, -18, 18, 27, -27])
    for name in tilts["rlnMicrographName"]:
        with mrcfile.open(out / name, permissive=False) as mrc:
            assert mrc.data.shape == (SMALL.image_size[1], SMALL.image_size[0])
            assert mrc.data.dtype == np.float32
            assert float(mrc.voxel_size.x) == pytest.approx(SMALL.pixel_size, rel=1e-6)
    for key in ("particles", "particles_true"):
        blocks = starfile.read(out / f"{key}.star", always_dict=True)
        assert list(blocks) == ["optics", "particles"]
        assert list(blocks["optics"].columns) == [
            "rlnOpticsGroup", "rlnOpticsGroupName", "rlnVoltage", "rlnSphericalAberration",
            "rlnAmplitudeContrast", "rlnTomoTiltSeriesPixelSize",
        ]
        parts = blocks["particles"]
        assert len(parts) == small.n_particles == 20
        for col in (
            "rlnTomoName", "rlnTomoParticleName", "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
            "rlnCenteredCoordinateZAngst", "rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt",
            "rlnTomoSubtomogramPsi", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnAngleTiltPrior",
            "rlnAnglePsiPrior", "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst", "rlnOpticsGroup",
        ):
            assert col in parts.columns, col
        assert parts["rlnTomoParticleName"].iloc[0] == "TS_01/1"
    opt = starfile.read(out / "optimisation_set.star")
    assert opt["rlnTomoParticlesFile"] == "particles.star"
    assert opt["rlnTomoTomogramsFile"] == "tomograms.star"
    with mrcfile.open(out / "truth_map.mrc") as mrc:
        assert mrc.data.ndim == 3 and len(set(mrc.data.shape)) == 1
        assert float(mrc.voxel_size.x) == pytest.approx(SMALL.pixel_size, rel=1e-6)
    summary = json.loads((out / "simulation.json").read_text())
    assert summary["seed"] == SMALL.seed and summary["parameters"]["symmetry"] == "C6"


def test_render_truth_matches_written_truth_map(small) -> None:
    from processing.simulate import load_parameters, render_truth

    assert load_parameters(small.outdir) == SMALL
    written = mrcfile.read(small.outdir / "truth_map.mrc")
    np.testing.assert_array_equal(render_truth(small.outdir, written.shape[0], SMALL.pixel_size), written)
    coarse = render_truth(small.outdir, 24, 3 * SMALL.pixel_size)
    assert coarse.shape == (24, 24, 24) and coarse.dtype == np.float32


def test_initial_poses_are_truth_plus_bounded_errors(small) -> None:
    init = starfile.read(small.outdir / "particles.star")["particles"]
    true = starfile.read(small.outdir / "particles_true.star")["particles"]
    np.testing.assert_allclose(init["rlnTomoSubtomogramRot"], true["rlnTomoSubtomogramRot"])
    np.testing.assert_allclose(true["rlnAngleTilt"], 90.0)
    np.testing.assert_allclose(true["rlnAnglePsi"], 0.0, atol=1e-9)
    np.testing.assert_allclose(true["rlnAngleTiltPrior"], 90.0)
    np.testing.assert_allclose(true["rlnAnglePsiPrior"], 0.0)
    d_rot = np.mod(init["rlnAngleRot"] - true["rlnAngleRot"] + 180.0, 360.0) - 180.0
    assert np.all(np.abs(d_rot) <= SMALL.rot_error_deg + 1e-6)
    assert np.abs(init["rlnAngleTilt"] - 90.0).max() < 6 * SMALL.tilt_error_deg
    d_pos = init[[f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]].to_numpy() - true[
        [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]
    ].to_numpy()
    rms = np.sqrt(np.mean(np.sum(d_pos**2, axis=1)))
    assert 0.4 * SMALL.position_error_angst < rms < 1.8 * SMALL.position_error_angst


def _file_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_identical_different_seed_differs(small, tmp_path: Path) -> None:
    again = simulate_dataset(SMALL, tmp_path / "b")
    a, b = _file_bytes(small.outdir), _file_bytes(again.outdir)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name  # STAR, JSON and MRC bytes alike
    other = simulate_dataset(SMALL.replace(seed=SMALL.seed + 1), tmp_path / "c")
    c = _file_bytes(other.outdir)
    assert c["particles.star"] != a["particles.star"]
    assert c["tilt_series/TS_01.star"] != a["tilt_series/TS_01.star"]
    img = "tilt_series/TS_01/TS_01_000_0.0.mrc"
    assert not np.array_equal(mrcfile.read(small.outdir / img), mrcfile.read(other.outdir / img))
    # the particle itself does not depend on the dataset seed
    assert c["truth_map.mrc"] == a["truth_map.mrc"]


def test_dose_symmetric_order() -> None:
    order = dose_symmetric_order(-60, 60, 3)
    assert len(order) == 41 and sorted(order) == list(np.arange(-60, 61, 3))
    np.testing.assert_allclose(order[:10], [0, 3, -3, -6, 6, 9, -9, -12, 12, 15])
    np.testing.assert_allclose(dose_symmetric_order(-6, 12, 3), [0, 3, -3, -6, 6, 9, 12])


@pytest.mark.parametrize("group", ["C6", "D3", "C1"])
def test_phantom_has_requested_symmetry(group: str) -> None:
    phantom = procedural_phantom(group, diameter=210.0, sigma_min=3.0)
    box, px = 80, 3.0
    vol = render_map(phantom, box, px).astype(np.float64)
    centre = np.full(3, box // 2, dtype=np.float64)
    ops = point_group_operators(group)
    assert len(ops) == {"C6": 6, "D3": 6, "C1": 1}[group]
    flip = np.eye(3)[::-1]  # xyz <-> zyx
    for op in ops:
        # rotated map: value at x is the original at opᵀ x (voxel index order z, y, x)
        m = flip @ op.T @ flip
        rotated = ndimage.affine_transform(vol, m, offset=centre - m @ centre, order=3)
        err = np.linalg.norm(rotated - vol) / np.linalg.norm(vol)
        assert err < 0.02, (group, err)  # interpolation error only (stated tolerance: 2 %)
    if group == "C6":
        # ...and it is *not* invariant under a rotation outside the group (orientation determinable)
        m = flip @ rotation_z(30.0) @ flip
        rotated = ndimage.affine_transform(vol, m, offset=centre - m @ centre, order=3)
        assert np.linalg.norm(rotated - vol) / np.linalg.norm(vol) > 0.5


def test_render_map_pixel_size_independent_values() -> None:
    phantom = procedural_phantom("C6", diameter=210.0, sigma_min=2.7)
    fine = render_map(phantom, 96, 2.7)
    coarse = render_map(phantom, 32, 8.1)  # band-limited (rendered finer and Fourier-cropped)
    assert fine.shape == (96,) * 3 and coarse.shape == (32,) * 3
    # the coarse voxels sit on every third fine voxel (both centred at N//2)
    sub = fine[::3, ::3, ::3]
    assert np.corrcoef(sub.ravel(), coarse.ravel())[0, 1] > 0.8
    assert coarse.sum() * 27 == pytest.approx(fine.sum(), rel=0.02)


def test_snr_measured_from_images_matches_request(tmp_path: Path) -> None:
    one = TEST.replace(max_particles_per_sphere=1, tilt_min=-9.0, tilt_max=9.0, snr=0.05)
    noisy = simulate_dataset(one, tmp_path / "noisy")
    clean = simulate_dataset(one.replace(snr=None), tmp_path / "clean")
    name = "tilt_series/TS_01/TS_01_000_0.0.mrc"
    a, b = mrcfile.read(noisy.outdir / name), mrcfile.read(clean.outdir / name)
    noise_var = np.var(a.astype(np.float64) - b)
    tomo = noisy.tomograms[0]
    q = noisy.tomograms[0].projections[0] @ np.append(_written_position(noisy.outdir, one), 1.0)
    yy, xx = np.mgrid[0 : b.shape[0], 0 : b.shape[1]]
    mask = (xx - q[0]) ** 2 + (yy - q[1]) ** 2 <= (noisy.mask_radius_angst / one.pixel_size) ** 2
    snr = np.var(b[mask].astype(np.float64)) / noise_var
    assert snr <= 0.05 * 1.03  # stated tolerance 3 % (noise-variance estimate)
    assert snr == pytest.approx(tomo.tilt_snr[0], rel=0.03)
    assert tomo.tilt_snr.max() == pytest.approx(0.05, rel=1e-6)
    assert np.all(tomo.tilt_snr <= 0.05 * (1 + 1e-6))


def _written_position(outdir: Path, params: SimulationParameters) -> np.ndarray:
    part = starfile.read(outdir / "particles_true.star")["particles"].iloc[0]
    centred = np.array([part[f"rlnCenteredCoordinate{a}Angst"] for a in "XYZ"])
    return centred / params.pixel_size + np.asarray(params.tomogram_size) / 2.0


def test_model_parsers_and_model_phantom(tmp_path: Path) -> None:
    pdb = tmp_path / "m.pdb"
    pdb.write_text(
        "HEADER    TEST\n"
        "ATOM      1  N   ALA A   1      11.104  13.207   2.100  1.00 20.00           N\n"
        "ATOM      2  CA  ALA A   1      12.560  13.207   2.100  1.00 20.00           C\n"
        "ATOM      3  H   ALA A   1      12.000  12.000   2.000  1.00 20.00           H\n"
        "HETATM    4 ZN    ZN A 101      20.000  10.000   5.000  1.00 20.00          ZN\n"
        "HETATM    5  O   HOH A 201      30.000  30.000  30.000  1.00 20.00           O\n"
        "END\n"
    )
    pos, z = read_atoms(pdb)
    np.testing.assert_allclose(pos[0], [11.104, 13.207, 2.1])
    np.testing.assert_allclose(z, [7, 6, 30])
    cif = tmp_path / "m.cif"
    cif.write_text(
        "data_test\n#\nloop_\n_atom_site.group_PDB\n_atom_site.id\n_atom_site.type_symbol\n"
        "_atom_site.label_atom_id\n_atom_site.label_comp_id\n_atom_site.Cartn_x\n_atom_site.Cartn_y\n"
        "_atom_site.Cartn_z\n_atom_site.pdbx_PDB_model_num\n"
        "ATOM 1 N N ALA 11.104 13.207 2.100 1\n"
        "ATOM 2 C \"CA\" ALA 12.560 13.207 2.100 1\n"
        "HETATM 3 ZN ZN ZN 20.000 10.000 5.000 1\n"
        "ATOM 4 C CA ALA 0.0 0.0 0.0 2\n#\n"
    )
    pos_c, z_c = read_atoms(cif)
    np.testing.assert_allclose(pos_c, pos)
    np.testing.assert_allclose(z_c, z)
    phantom = phantom_from_model(pdb, symmetry="C3", is_asymmetric_unit=True, grain=0.0, sigma_min=2.0)
    assert phantom.n_blobs == 9 and phantom.symmetry == "C3"
    complete = phantom_from_model(cif, grain=0.0)
    np.testing.assert_allclose(np.average(complete.positions, axis=0, weights=complete.amplitudes), 0, atol=1e-9)
    with pytest.raises(InputError):
        phantom_from_model(tmp_path / "missing.pdb")


def test_invalid_parameters_raise_input_error() -> None:
    with pytest.raises(InputError, match="hand"):
        TEST.replace(hand=0)
    with pytest.raises(InputError, match="symmetry"):
        procedural_phantom("X7")
    with pytest.raises(InputError, match="sphere_lattice.*fibonacci, geodesic"):
        TEST.replace(sphere_lattice="square")


def test_cli_prints_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dashboard.cli import main

    rc = main(["simulate", str(tmp_path / "cli"), "--preset", "test", "--seed", "3", "--no-noise",
               "--max-particles-per-sphere", "3", "--sphere-lattice", "geodesic"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "3 particles" in text and "particles.star" in text and "truth_map.mrc" in text
    summary = json.loads((tmp_path / "cli" / "simulation.json").read_text())
    assert summary["seed"] == 3 and summary["parameters"]["sphere_lattice"] == "geodesic"
