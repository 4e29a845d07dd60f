"""Tilt projection matrices against RELION's stored rlnTomoProjX/Y/Z (tests/data/tiltseries)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import starfile

from processing.geometry.projection import tilt_projection_matrices

DATA = Path(__file__).parent / "data" / "tiltseries"
IMAGE_SIZE = (3710, 3838)  # W x H implied by the image centre (1855, 1919) (README 3)


def _vectors(column) -> np.ndarray:
    """Parse RELION vector tokens '[a,b,c,d]' (starfile returns them as strings)."""
    rows = []
    for v in column:
        if isinstance(v, str):
            rows.append([float(x) for x in v.strip().strip("[]").split(",")])
        else:
            rows.append(list(np.asarray(v, dtype=float)))
    return np.asarray(rows)


GLOBAL = starfile.read(DATA / "tilt_series_metadata" / "tilt_series.star")
PRESENT = [r for _, r in GLOBAL.iterrows() if (DATA / r["rlnTomoTiltSeriesStarFile"]).exists()]


def test_fixture_has_two_tilt_series() -> None:
    assert [r["rlnTomoName"] for r in PRESENT] == ["220728_TS_01", "220728_TS_03"]


@pytest.mark.parametrize("row", PRESENT, ids=lambda r: r["rlnTomoName"])
def test_projection_matrices_match_relion(row) -> None:
    tilts = starfile.read(DATA / row["rlnTomoTiltSeriesStarFile"])
    assert tilts.shape == (41, 29)
    P = tilt_projection_matrices(
        tilts["rlnTomoXTilt"], tilts["rlnTomoYTilt"], tilts["rlnTomoZRot"],
        tilts["rlnTomoXShiftAngst"], tilts["rlnTomoYShiftAngst"],
        tomogram_size=(int(row["rlnTomoSizeX"]), int(row["rlnTomoSizeY"]), int(row["rlnTomoSizeZ"])),
        image_size=IMAGE_SIZE,
        pixel_size=float(row["rlnTomoTiltSeriesPixelSize"]),
    )
    stored = np.stack([_vectors(tilts[c]) for c in
                       ("rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW")], axis=1)
    assert P.shape == stored.shape == (41, 4, 4)
    # README 3: the stored matrices are printed with ~12 digits from float angles; rotation
    # part within 1e-6 (measured <= 1.1e-7), translation within 1e-3 px (measured <= 3.4e-4).
    assert np.abs(P[:, :3, :3] - stored[:, :3, :3]).max() < 1e-6
    assert np.abs(P[:, :3, 3] - stored[:, :3, 3]).max() < 1e-3
    np.testing.assert_array_equal(stored[:, 3], np.tile([0, 0, 0, 1], (41, 1)))
    np.testing.assert_array_equal(P[:, 3], stored[:, 3])
