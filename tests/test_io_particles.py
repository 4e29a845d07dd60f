"""Particle sets (processing.io.particles)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from processing.errors import InputError
from processing.geometry.projection import particle_positions
from processing.io import ParticleSet, TomogramSet, create_optics_table, read_star, write_star


def _tomograms(root: Path, *, group_names: list[str] | None = None) -> TomogramSet:
    names = ["TS_1", "TS_2", "TS_3"]
    tilts = pd.DataFrame({"rlnMicrographName": ["a.mrc", "b.mrc"], "rlnMicrographPreExposure": [0.0, 3.0],
                          "rlnTomoYTilt": [0.0, 3.0], "rlnTomoZRot": [85.0, 85.0]})
    glob = pd.DataFrame(
        {
            "rlnTomoName": names,
            "rlnVoltage": [300.0] * 3,
            "rlnSphericalAberration": [2.7] * 3,
            "rlnAmplitudeContrast": [0.1] * 3,
            "rlnTomoTiltSeriesPixelSize": [1.35, 1.35, 2.0],
            "rlnTomoHand": [1.0] * 3,
            "rlnTomoSizeX": [400, 400, 300],
            "rlnTomoSizeY": [380, 380, 300],
            "rlnTomoSizeZ": [100, 100, 80],
        }
    )
    if group_names:
        glob["rlnOpticsGroupName"] = group_names
    path = root / "tomograms.star"
    write_star(path, {"global": glob, **{n: tilts for n in names}})  # RELION 4 layout, in one file
    return TomogramSet.read(path)


def _particles() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "rlnTomoName": ["TS_1", "TS_2", "TS_1", "TS_3"],
            "rlnCenteredCoordinateXAngst": [10.0, -20.0, 0.0, 5.0],
            "rlnCenteredCoordinateYAngst": [1.0, 2.0, 3.0, 4.0],
            "rlnCenteredCoordinateZAngst": [-5.0, 0.0, 5.0, 2.0],
            "rlnOriginXAngst": [1.0, 0.0, 0.0, 0.0],
            "rlnAngleRot": [10.0, 20.0, 30.0, 40.0],
            "rlnAngleTilt": [90.0, 80.0, 70.0, 60.0],
            "rlnTomoSubtomogramRot": [0.0, 90.0, 0.0, 0.0],
            "rlnAngleTiltPrior": [90.0, 90.0, 90.0, 90.0],
            "rlnRandomSubset": [1, 2, 1, 2],
            "rlnTomoVisibleFrames": [np.array([1, 1]), np.array([0, 1]), np.array([1, 0]), np.array([1, 1])],
            "rlnImageName": [f"Extract/job002/Subtomograms/TS_1/{k}_stack2d.mrcs" for k in range(1, 5)],
        }
    )


def test_read_completes_and_round_trips(tmp_path):
    tomograms = _tomograms(tmp_path)
    path = tmp_path / "particles.star"
    write_star(path, {"general": {"rlnTomoSubTomosAre2DStacks": 1}, "particles": _particles()})
    ps = ParticleSet.read(path, tomograms)
    # optics created: one group per tomogram (no rlnOpticsGroupName), particles assigned
    assert ps.optics["rlnOpticsGroupName"].tolist() == ["TS_1", "TS_2", "TS_3"]
    assert ps.optics_groups().tolist() == [1, 2, 1, 3]
    np.testing.assert_allclose(ps.optics_column("rlnTomoTiltSeriesPixelSize"), [1.35, 1.35, 1.35, 2.0])
    assert ps.particle_names().tolist() == ["TS_1/1", "TS_2/1", "TS_1/2", "TS_3/1"]
    assert ps.are_2d_stacks is True
    assert ps.centred_coordinates().shape == (4, 3)
    np.testing.assert_array_equal(ps.origins()[:, 0], [1, 0, 0, 0])
    np.testing.assert_array_equal(ps.origins()[:, 1:], 0.0)  # absent columns default to 0
    np.testing.assert_array_equal(ps.angles()[:, 2], 0.0)
    np.testing.assert_array_equal(ps.subtomogram_angles()[:, 0], [0, 90, 0, 0])
    np.testing.assert_array_equal(ps.tilt_prior(), 90.0)
    assert ps.psi_prior() is None and ps.rot_prior() is None
    assert ps.random_subset().tolist() == [1, 2, 1, 2]
    assert [v.tolist() for v in ps.visible_frames()] == [[1, 1], [0, 1], [1, 0], [1, 1]]
    assert ps.image_names()[0].endswith("1_stack2d.mrcs")

    out = tmp_path / "out.star"
    ps.write(out)
    blocks = read_star(out)
    assert list(blocks) == ["general", "optics", "particles"]
    again = ParticleSet.read(out, tomograms)
    pd.testing.assert_frame_equal(
        again.particles.drop(columns=["rlnTomoVisibleFrames"]), ps.particles.drop(columns=["rlnTomoVisibleFrames"]),
        check_dtype=False,
    )
    assert list(again.particles.columns) == list(ps.particles.columns)


def test_positions_use_each_tomogram(tmp_path):
    tomograms = _tomograms(tmp_path)
    ps = ParticleSet(_particles())
    pos = ps.positions(tomograms)
    df = _particles()
    centred = df[["rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst"]]
    origin = np.zeros((4, 3))
    origin[:, 0] = df["rlnOriginXAngst"]
    sub = np.zeros((4, 3))
    sub[:, 0] = df["rlnTomoSubtomogramRot"]
    expected_1 = particle_positions(centred.to_numpy()[[1]], tomogram_size=(400, 380, 100), pixel_size=1.35,
                                    origin_angst=origin[[1]], subtomogram_angles=sub[[1]])
    expected_3 = particle_positions(centred.to_numpy()[[3]], tomogram_size=(300, 300, 80), pixel_size=2.0,
                                    origin_angst=origin[[3]], subtomogram_angles=sub[[3]])
    np.testing.assert_allclose(pos[1], expected_1[0])
    np.testing.assert_allclose(pos[3], expected_3[0])
    # particle 0: origin +1 Å along x, identity subtomogram frame -> 1/1.35 px to the left
    no_origin = ps.positions(tomograms, apply_origins=False)
    np.testing.assert_allclose(no_origin[0] - pos[0], [1 / 1.35, 0, 0])
    np.testing.assert_allclose(no_origin[0], [10 / 1.35 + 200, 1 / 1.35 + 190, -5 / 1.35 + 50])


def test_relion4_coordinates_are_centred_and_dropped(tmp_path):
    tomograms = _tomograms(tmp_path)
    df = pd.DataFrame({"rlnTomoName": ["TS_1", "TS_3"], "rlnCoordinateX": [200.0, 0.0],
                       "rlnCoordinateY": [190.0, 150.0], "rlnCoordinateZ": [60.0, 40.0]})
    path = tmp_path / "r4.star"
    write_star(path, {"particles": df})
    ps = ParticleSet.read(path, tomograms)
    np.testing.assert_allclose(ps.centred_coordinates(), [[0, 0, 10 * 1.35], [-150 * 2.0, 0, 0]])
    ps.write(tmp_path / "r5.star")
    columns = read_star(tmp_path / "r5.star")["particles"].columns
    assert "rlnCoordinateX" not in columns and "rlnCenteredCoordinateZAngst" in columns
    # without a tomogram set the conversion is impossible: a located error, not a KeyError
    bare = ParticleSet.read(path)
    with pytest.raises(InputError, match="r4.star.*data_particles.*rlnCenteredCoordinateXAngst"):
        bare.centred_coordinates()


def test_optics_groups_from_group_names(tmp_path):
    tomograms = _tomograms(tmp_path, group_names=["a", "a", "b"])
    with pytest.raises(InputError) as err:  # TS_2 and TS_3 have different pixel sizes...
        create_optics_table(_tomograms(tmp_path, group_names=["a", "b", "b"]))
    assert "rlnTomoTiltSeriesPixelSize" in str(err.value) and "row 3" in str(err.value)
    optics, group_of = create_optics_table(tomograms)
    assert optics["rlnOpticsGroupName"].tolist() == ["a", "b"]
    assert group_of == {"TS_1": 1, "TS_2": 1, "TS_3": 2}


def test_optics_disagreeing_with_tomograms(tmp_path):
    tomograms = _tomograms(tmp_path)
    optics = pd.DataFrame({"rlnOpticsGroup": [1, 2], "rlnOpticsGroupName": ["g1", "g2"],
                           "rlnVoltage": [300.0, 200.0], "rlnSphericalAberration": [2.7, 2.7],
                           "rlnAmplitudeContrast": [0.1, 0.1], "rlnTomoTiltSeriesPixelSize": [1.35, 2.0]})
    df = _particles()
    df["rlnOpticsGroup"] = [1, 1, 1, 2]
    path = tmp_path / "disagree.star"
    write_star(path, {"optics": optics, "particles": df})
    with pytest.raises(InputError) as err:
        ParticleSet.read(path, tomograms)
    message = str(err.value)
    for part in ("disagree.star", "data_optics", "rlnVoltage", "row 2", "TS_3"):
        assert part in message
    # within 1e-3 is fine
    optics.loc[1, "rlnVoltage"] = 300.0005
    write_star(path, {"optics": optics, "particles": df})
    ParticleSet.read(path, tomograms)


def test_unknown_tomogram_and_missing_columns(tmp_path):
    tomograms = _tomograms(tmp_path)
    df = _particles()
    df.loc[2, "rlnTomoName"] = "TS_404"
    path = tmp_path / "unknown.star"
    write_star(path, {"particles": df})
    with pytest.raises(InputError) as err:
        ParticleSet.read(path, tomograms)
    for part in ("unknown.star", "data_particles", "rlnTomoName", "row 3", "TS_404"):
        assert part in str(err.value)

    write_star(path, {"particles": _particles().drop(columns=["rlnCenteredCoordinateYAngst"])})
    with pytest.raises(InputError, match="unknown.star.*data_particles.*rlnCenteredCoordinateYAngst"):
        ParticleSet.read(path)
    write_star(path, {"optics": pd.DataFrame({"rlnOpticsGroup": [1]})})
    with pytest.raises(InputError, match="data_particles not found"):
        ParticleSet.read(path)


def test_non_numeric_particle_value(tmp_path):
    df = _particles().astype({"rlnAngleTilt": object})
    df.loc[3, "rlnAngleTilt"] = "ninety"
    path = tmp_path / "nn.star"
    write_star(path, {"particles": df})
    ps = ParticleSet.read(path)
    with pytest.raises(InputError) as err:
        ps.angles()
    for part in ("nn.star", "data_particles", "rlnAngleTilt", "row 4", "ninety"):
        assert part in str(err.value)


def test_random_subsets():
    ps = ParticleSet(_particles().drop(columns=["rlnRandomSubset"]))
    assert ps.random_subset() is None
    ps.assign_random_subsets(0)
    assert set(ps.random_subset().tolist()) <= {1, 2}
