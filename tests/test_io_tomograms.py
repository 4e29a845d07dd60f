"""Tomogram sets (processing.io.tomograms): RELION 5 and RELION 4 layouts, matrices, CTF."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from processing.errors import InputError
from processing.geometry.projection import tilt_projection_matrices
from processing.io import TiltSeries, TomogramSet, read_star, write_mrc, write_star
from processing.io.star import format_vector

DATA = Path(__file__).parent / "data" / "io" / "tiltseries"
GLOBAL = DATA / "tilt_series_metadata" / "tilt_series.star"


# --------------------------------------------------------------------------------------------
# RELION's own test data (copied fixture, see tests/data/io/ORIGIN.md)


def test_fixture_reads_with_project_root():
    ts = TomogramSet.read(GLOBAL, root=DATA, image_size=(3710, 3838))
    assert ts.names == ["220728_TS_01", "220728_TS_03", "220728_TS_43", "220728_TS_45", "220728_TS_54"]
    t = ts["220728_TS_01"]
    assert (t.voltage, t.cs, t.amplitude_contrast, t.pixel_size, t.hand) == (300.0, 2.7, 0.1, 1.35, 1.0)
    assert t.size == (4000, 4000, 3000)
    assert t.defocus_slope == 1.0 and t.bfactor_per_electron_dose == 0.0 and t.optics_group_name is None
    assert t.n_tilts == 41
    assert t.tilts.pre_exposure[:3].tolist() == [0.0, 3.0, 6.0]
    np.testing.assert_array_equal(t.tilts.ctf_scale, 1.0)
    np.testing.assert_array_equal(t.tilts.phase_shift, 0.0)
    assert t.tilts.micrograph_names[0] == "MotionCorr/job002/frames/TS_01_000_0_0.mrc"
    # Only two per-tilt files were copied: the others fail, lazily, with a located error.
    with pytest.raises(InputError) as err:
        ts["220728_TS_43"].tilts
    assert "220728_TS_43.star" in str(err.value) and "not found" in str(err.value)
    with pytest.raises(InputError, match="'TS_99' is not in the tomogram set"):
        ts["TS_99"]


def test_fixture_paths_resolve_from_elsewhere(tmp_path, monkeypatch):
    # No root given and CWD elsewhere: found relative to a parent of tomograms.star's directory.
    monkeypatch.chdir(tmp_path)
    ts = TomogramSet.read(GLOBAL)
    assert ts["220728_TS_03"].n_tilts == 41


@pytest.mark.parametrize("name", ["220728_TS_01", "220728_TS_03"])
def test_fixture_projection_matrices_match_stored_rows(name):
    """Spec 1.3 applied to the per-tilt angles reproduces RELION's stored rlnTomoProjX/Y/Z/W.

    Tolerances: the stored matrices are printed with 12 significant digits from float64, and
    the conformance check (README section 3) found rotation differences <= 1.1e-7 and
    translation differences <= 3.4e-4 px (the angles/shifts are printed with only ~6 decimals
    while the translations are ~3000 px, so the angle rounding shows up there). Hence 1e-6 on
    the rotation part and 1e-3 px on the translation. Image size 3710 x 3838 px is implied by
    the stored image centre (1855, 1919).
    """
    ts = TomogramSet.read(GLOBAL, root=DATA)
    tomo = ts[name]
    computed = tomo.projection_matrices(image_size=(3710, 3838))
    stored = tomo.tilts.stored_projections
    assert computed.shape == stored.shape == (41, 4, 4)
    np.testing.assert_allclose(computed[:, :3, :3], stored[:, :3, :3], atol=1e-6, rtol=0)
    np.testing.assert_allclose(computed[:, :3, 3], stored[:, :3, 3], atol=1e-3, rtol=0)
    np.testing.assert_array_equal(computed[:, 3], np.tile([0.0, 0.0, 0.0, 1.0], (41, 1)))
    # Without an image size (no micrographs available) the stored matrices are used.
    np.testing.assert_array_equal(tomo.projection_matrices(), stored)


def test_fixture_write_relion5_round_trip(tmp_path):
    ts = TomogramSet.read(GLOBAL, root=DATA)
    small = TomogramSet([ts["220728_TS_01"], ts["220728_TS_03"]])
    out = tmp_path / "Tomograms" / "job001"
    out.mkdir(parents=True)
    small.write(out / "tomograms.star", root=tmp_path)
    glob = read_star(out / "tomograms.star")["global"]
    assert glob["rlnTomoTiltSeriesStarFile"].tolist() == [
        "Tomograms/job001/tilt_series/220728_TS_01.star",
        "Tomograms/job001/tilt_series/220728_TS_03.star",
    ]
    # unknown global columns survive
    assert glob["rlnEtomoDirectiveFile"][0] == "AlignTiltSeries/job004/external/220728_TS_01/220728_TS_01.edf"
    again = TomogramSet.read(out / "tomograms.star", root=tmp_path)
    for name in small.names:
        a, b = small[name].tilts.table, again[name].tilts.table
        assert list(a.columns) == list(b.columns)  # all 29 columns, in order
        for column in a.columns:
            for x, y in zip(a[column].tolist(), b[column].tolist()):
                if isinstance(x, np.ndarray):
                    np.testing.assert_allclose(x, y, rtol=1e-12)
                else:
                    assert x == y
        assert again[name].size == small[name].size


# --------------------------------------------------------------------------------------------
# synthetic sets


def _tilt_table(n: int, micrograph: str, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rlnMicrographName": [micrograph] * n,
            "rlnMicrographPreExposure": np.arange(n) * 3.0,
            "rlnDefocusU": 30000 + rng.uniform(0, 1000, n),
            "rlnDefocusV": 29000 + rng.uniform(0, 1000, n),
            "rlnDefocusAngle": rng.uniform(-90, 90, n),
            "rlnTomoXTilt": rng.uniform(-1, 1, n),
            "rlnTomoYTilt": np.linspace(-60, 60, n),
            "rlnTomoZRot": 85 + rng.uniform(-1, 1, n),
            "rlnTomoXShiftAngst": rng.uniform(-50, 50, n),
            "rlnTomoYShiftAngst": rng.uniform(-50, 50, n),
            "rlnMyUnknownColumn": np.arange(n),
        }
    )


def _write_project(root: Path, *, hand: float = -1.0, slope: float = 0.9) -> Path:
    rng = np.random.default_rng(3)
    (root / "frames").mkdir()
    write_mrc(root / "frames" / "tilt.mrc", np.zeros((48, 64), np.float32), 2.0)  # W=64, H=48
    (root / "Import" / "job001" / "tilt_series").mkdir(parents=True)
    write_star(root / "Import/job001/tilt_series/TS_1.star", {"TS_1": _tilt_table(5, "frames/tilt.mrc", rng)})
    glob = pd.DataFrame(
        {
            "rlnTomoName": ["TS_1"],
            "rlnTomoTiltSeriesStarFile": ["Import/job001/tilt_series/TS_1.star"],
            "rlnVoltage": [300.0],
            "rlnSphericalAberration": [2.7],
            "rlnAmplitudeContrast": [0.07],
            "rlnTomoTiltSeriesPixelSize": [2.0],
            "rlnTomoHand": [hand],
            "rlnTomoSizeX": [200],
            "rlnTomoSizeY": [180],
            "rlnTomoSizeZ": [60],
            "rlnTomoDefocusSlope": [slope],
            "rlnCtfBfactorPerElectronDose": [4.0],
            "rlnOpticsGroupName": ["og1"],
        }
    )
    path = root / "Import" / "job001" / "tomograms.star"
    write_star(path, {"global": glob})
    return path


def test_image_size_from_micrograph_header(tmp_path):
    path = _write_project(tmp_path)
    tomo = TomogramSet.read(path, root=tmp_path)["TS_1"]
    t = tomo.tilts
    expected = tilt_projection_matrices(
        t.x_tilt, t.y_tilt, t.z_rot, t.x_shift_angst, t.y_shift_angst,
        tomogram_size=(200, 180, 60), image_size=(64, 48), pixel_size=2.0,
    )
    np.testing.assert_allclose(tomo.projection_matrices(), expected, atol=1e-12)
    assert tomo.image_size == (64, 48)
    assert tomo.defocus_slope == 0.9 and tomo.bfactor_per_electron_dose == 4.0
    assert tomo.optics_group_name == "og1"


def test_missing_image_size_is_an_input_error(tmp_path):
    path = _write_project(tmp_path)
    os.remove(tmp_path / "frames" / "tilt.mrc")
    tomo = TomogramSet.read(path, root=tmp_path)["TS_1"]
    with pytest.raises(InputError, match="tilt-image size is unknown"):
        tomo.projection_matrices()
    assert tomo.projection_matrices(image_size=(64, 48)).shape == (5, 4, 4)


def test_depth_dependent_defocus(tmp_path):
    path = _write_project(tmp_path, hand=-1.0, slope=0.9)
    tomo = TomogramSet.read(path, root=tmp_path)["TS_1"]
    centre = np.array([100.0, 90.0, 30.0])
    positions = np.array([centre, centre + [10.0, -5.0, 7.0]])
    ctf = tomo.ctf(positions)
    P = tomo.projection_matrices()
    dz = (P[:, 2, :3] @ positions[1] + P[:, 2, 3]) - (P[:, 2, :3] @ centre + P[:, 2, 3])
    np.testing.assert_allclose(ctf.defocus_offset[0], 0.0, atol=1e-9)
    np.testing.assert_allclose(ctf.defocus_offset[1], -1.0 * 2.0 * 0.9 * dz, atol=1e-9)
    np.testing.assert_allclose(ctf.defocus_u[1], tomo.tilts.defocus_u + ctf.defocus_offset[1])
    np.testing.assert_allclose(ctf.defocus_v[1], tomo.tilts.defocus_v + ctf.defocus_offset[1])
    p = ctf.parameters(1, 2)
    assert p.defocus_u == pytest.approx(ctf.defocus_u[1, 2]) and p.amplitude_contrast == 0.07
    assert ctf.bfactor_per_electron_dose == 4.0
    np.testing.assert_array_equal(ctf.dose, [0, 3, 6, 9, 12])


def test_relion4_layout(tmp_path):
    rng = np.random.default_rng(5)
    table = _tilt_table(4, "x.mrc", rng)
    matrices = tilt_projection_matrices(
        table.rlnTomoXTilt, table.rlnTomoYTilt, table.rlnTomoZRot, table.rlnTomoXShiftAngst,
        table.rlnTomoYShiftAngst, tomogram_size=(200, 180, 60), image_size=(64, 48), pixel_size=2.0,
    )
    r4 = table[["rlnMicrographPreExposure", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"]].copy()
    for r, label in enumerate(("rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW")):
        r4[label] = [format_vector(m[r]) for m in matrices]
    glob = pd.DataFrame({"rlnTomoName": ["TS_1"], "rlnTomoTiltSeriesName": ["TS_1.mrc:mrcs"],
                         "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7], "rlnAmplitudeContrast": [0.1],
                         "rlnTomoTiltSeriesPixelSize": [2.0], "rlnTomoHand": [1.0], "rlnTomoSizeX": [200],
                         "rlnTomoSizeY": [180], "rlnTomoSizeZ": [60]})
    path = tmp_path / "tomograms.star"
    write_star(path, {"global": glob, "TS_1": r4})
    tomo = TomogramSet.read(path)["TS_1"]
    np.testing.assert_allclose(tomo.projection_matrices(), matrices, atol=1e-9)
    # CTF depth uses the stored matrices' rotation
    ctf = tomo.ctf([[100.0, 90.0, 40.0]])
    np.testing.assert_allclose(ctf.defocus_offset[0], 2.0 * matrices[:, 2, 2] * 10.0, atol=1e-6)
    # written back in RELION 5 layout, the stored rows come along
    tomo_set = TomogramSet.read(path)
    tomo_set.write(tmp_path / "out" / "tomograms.star", root=tmp_path)
    again = TomogramSet.read(tmp_path / "out" / "tomograms.star", root=tmp_path)
    np.testing.assert_allclose(again["TS_1"].projection_matrices(), matrices, atol=1e-9)


def test_relion4_missing_table(tmp_path):
    glob = pd.DataFrame({"rlnTomoName": ["TS_9"], "rlnVoltage": [300.0], "rlnSphericalAberration": [2.7],
                         "rlnAmplitudeContrast": [0.1], "rlnTomoTiltSeriesPixelSize": [2.0], "rlnTomoHand": [1]})
    write_star(tmp_path / "t.star", {"global": glob})
    with pytest.raises(InputError, match="t.star.*data_TS_9.*per-tilt table data_TS_9 not found"):
        TomogramSet.read(tmp_path / "t.star")


def test_bad_global_table(tmp_path):
    path = _write_project(tmp_path)
    glob = read_star(path)["global"]
    write_star(tmp_path / "nohand.star", {"global": glob.drop(columns=["rlnTomoHand"])})
    with pytest.raises(InputError) as err:
        TomogramSet.read(tmp_path / "nohand.star", root=tmp_path)
    assert "nohand.star" in str(err.value) and "data_global" in str(err.value) and "rlnTomoHand" in str(err.value)
    bad = glob.astype({"rlnVoltage": object})
    bad.loc[0, "rlnVoltage"] = "300kV"
    write_star(tmp_path / "badkv.star", {"global": bad})
    with pytest.raises(InputError) as err:
        TomogramSet.read(tmp_path / "badkv.star", root=tmp_path)
    for part in ("badkv.star", "data_global", "rlnVoltage", "row 1", "300kV"):
        assert part in str(err.value)
    write_star(tmp_path / "noglobal.star", {"other": glob})
    with pytest.raises(InputError, match="data_global"):
        TomogramSet.read(tmp_path / "noglobal.star")
    with pytest.raises(InputError, match="not found"):
        TomogramSet.read(tmp_path / "absent.star")


def test_missing_pre_exposure(tmp_path):
    path = _write_project(tmp_path)
    tilt_file = tmp_path / "Import/job001/tilt_series/TS_1.star"
    table = read_star(tilt_file)["TS_1"].drop(columns=["rlnMicrographPreExposure"])
    write_star(tilt_file, {"TS_1": table})
    tomo = TomogramSet.read(path, root=tmp_path)["TS_1"]
    with pytest.raises(InputError) as err:
        tomo.tilts
    for part in ("TS_1.star", "data_TS_1", "rlnMicrographPreExposure", "compulsory"):
        assert part in str(err.value)


def test_tilt_series_from_arrays_and_write(tmp_path):
    tilts = TiltSeries.from_arrays(
        "TS_2", micrograph_names=["a.mrc", "b.mrc"], pre_exposure=[0.0, 3.0], defocus_u=[1e4, 1e4],
        defocus_v=[1e4, 1e4], defocus_angle=[0.0, 0.0], y_tilt=[0.0, 3.0], z_rot=[85.0, 85.0],
    )
    assert list(tilts.table.columns)[:2] == ["rlnMicrographName", "rlnMicrographPreExposure"]
    np.testing.assert_array_equal(tilts.x_tilt, 0.0)
    ts = TomogramSet.read(_write_project(tmp_path), root=tmp_path)
    ts["TS_1"].tilts = tilts  # replace the per-tilt table
    shutil.rmtree(tmp_path / "Import")
    (tmp_path / "Import").mkdir()
    ts.write(tmp_path / "Import" / "tomograms.star", root=tmp_path)
    again = TomogramSet.read(tmp_path / "Import" / "tomograms.star", root=tmp_path)
    assert again["TS_1"].tilts.micrograph_names.tolist() == ["a.mrc", "b.mrc"]
    assert again["TS_1"].hand == -1.0 and again["TS_1"].optics_group_name == "og1"
