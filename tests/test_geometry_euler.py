"""Euler angles against the conformance table (tests/data/euler, RELION 5.0.1 relion_project)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from processing.geometry.euler import euler_to_matrix, matrix_to_euler

DATA = Path(__file__).parent / "data" / "euler"
TABLE = pd.read_csv(DATA / "euler_matrices.csv")
A_COLS = [f"A{i}{j}" for i in range(3) for j in range(3)]


def _wrap(a):
    return (np.asarray(a) + 180.0) % 360.0 - 180.0


def test_matrix_formula() -> None:
    A = euler_to_matrix(TABLE["rot"], TABLE["tilt"], TABLE["psi"])
    ref = TABLE[A_COLS].to_numpy().reshape(-1, 3, 3)
    assert len(ref) == 22
    # the CSV prints 12 decimals of the same float64 formula: 1e-9 (README 4)
    assert np.abs(A - ref).max() < 1e-9


def test_matches_relion_project_measurements() -> None:
    A = euler_to_matrix(TABLE["rot"], TABLE["tilt"], TABLE["psi"])
    meas = TABLE[[f"proj_meas_A{i}{j}" for i in range(2) for j in range(3)]].to_numpy()
    # blob-centroid measurement of rows 0-1 of A has ~0.1% bias: 0.003 (README 4)
    assert np.abs(A[:, :2, :].reshape(-1, 6) - meas).max() < 0.003


def test_matrix_to_euler_rule() -> None:
    ref = TABLE[A_COLS].to_numpy().reshape(-1, 3, 3)
    rot, tilt, psi = matrix_to_euler(ref)
    # RELION's Euler_matrix2angles branches reproduced: 1e-6 deg, angles wrapped (README 4)
    for ours, col in ((rot, "m2a_rot"), (tilt, "m2a_tilt"), (psi, "m2a_psi")):
        assert np.abs(_wrap(ours - TABLE[col].to_numpy())).max() < 1e-6
    # round trip: A(matrix_to_euler(A)) == A (the CSV matrix has 12 decimals)
    assert np.abs(euler_to_matrix(rot, tilt, psi) - ref).max() < 1e-9


def test_random_round_trip() -> None:
    rng = np.random.default_rng(0)
    ang = rng.uniform([-180, 0, -180], [180, 180, 180], size=(500, 3))
    A = euler_to_matrix(*ang.T)
    back = np.stack(matrix_to_euler(A), axis=-1)
    # generic angles: exact inverse up to float64 rounding of atan2/acos near tilt 0/180
    assert np.abs(euler_to_matrix(*back.T) - A).max() < 1e-9
    assert np.allclose(A @ np.swapaxes(A, -1, -2), np.eye(3), atol=1e-12)
