"""Symmetry groups against RELION 5.0.1 `--print_symmetry_ops` (tests/data/symmetry)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from processing.errors import InputError
from processing.geometry.euler import euler_to_matrix
from processing.geometry.symmetry import (
    angular_distance,
    direction_mates,
    group_order,
    nearest_symmetry_mate,
    normalise_symmetry_name,
    orientation_mates,
    symmetry_group,
    symmetry_operators,
)

DATA = Path(__file__).parent / "data" / "symmetry"
GROUPS = ["C1", "C2", "C6", "D2", "D7", "T", "O", "I1", "I2", "I3", "I4"]


def _fixture(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.mark.parametrize("name", GROUPS)
def test_operators_match_relion(name: str) -> None:
    fx = _fixture(name)
    ops = symmetry_operators(name)
    ref = np.asarray(fx["matrices"])
    assert ops.shape == (fx["order"], 3, 3)
    assert group_order(name) == fx["order"]
    # As a set: 1e-5 max-abs (conformance README 1; our closure is exact to ~1e-7, RELION's
    # T axis is given to 6 digits, hence <5e-6 differences).
    diff = np.abs(ops[:, None] - ref[None]).max(axis=(2, 3))
    assert diff.min(axis=1).max() < 1e-5
    assert diff.min(axis=0).max() < 1e-5
    # RELION's printed values carry 5-8 significant digits: 2e-5 (README 1).
    printed = np.asarray(fx["matrices_as_printed"])
    diff_p = np.abs(ops[:, None] - printed[None]).max(axis=(2, 3))
    assert diff_p.min(axis=1).max() < 2e-5
    # We also reproduce RELION's operator order (compute_subgroup traversal); same 1e-5.
    assert np.abs(ops - ref).max() < 1e-5


@pytest.mark.parametrize("name", GROUPS)
def test_printed_euler_angles_give_the_matrices(name: str) -> None:
    fx = _fixture(name)
    ops = symmetry_operators(name)
    for k, angles in enumerate(fx["euler_angles_as_printed"]):
        if angles is None:
            np.testing.assert_array_equal(ops[k], np.eye(3))
            continue
        # Angles printed to 6 significant digits -> matrix entries within 2e-5 (README 1).
        assert np.abs(euler_to_matrix(*angles) - ops[k]).max() < 2e-5


@pytest.mark.parametrize(
    "name,order",
    [("c1", 1), ("C10", 10), ("d1", 2), ("Ci", 2), ("cs", 2), ("C4v", 8), ("C4H", 8), ("S4", 4),
     ("D3v", 12), ("d3h", 12), ("Td", 24), ("th", 24), ("oh", 48), ("i", 60), ("Ih", 120),
     ("I1h", 120), ("I3H", 120), ("i4h", 120)],
)
def test_orders_and_closure(name: str, order: int) -> None:
    g = symmetry_group(name)
    assert g.order == order
    R = g.R
    # Closed under products and orthogonal. RELION gives the icosahedral axes and the Td
    # mirror normal with 8-10 digits, so products close only to ~1e-7: tolerance 1e-6.
    prod = (R[:, None] @ R[None]).reshape(-1, 1, 3, 3)
    assert np.abs(prod - R[None]).max(axis=(2, 3)).min(axis=1).max() < 1e-6
    # RELION zeroes entries below 1e-6 (setSmallValuesToZero), as we do: orthogonal to 1e-6.
    assert np.allclose(R @ np.swapaxes(R, -1, -2), np.eye(3), atol=1e-6)
    assert np.allclose(np.abs(np.linalg.det(R)), 1.0, atol=1e-6)


def test_names_are_case_insensitive_and_canonical() -> None:
    assert normalise_symmetry_name("c6") == "C6"
    assert normalise_symmetry_name("I") == "I2"
    assert np.array_equal(symmetry_operators("i"), symmetry_operators("I2"))
    assert np.array_equal(symmetry_operators("d7"), symmetry_operators("D7"))


@pytest.mark.parametrize("bad", ["", "X", "C", "C0", "C123", "D", "I5", "S3", "Q2", "C2X", "T2"])
def test_unknown_names_raise_input_error(bad: str) -> None:
    with pytest.raises(InputError) as err:
        symmetry_group(bad)
    assert "C<n>" in str(err.value) or "even" in str(err.value)


def test_relion_orientations_of_axes() -> None:
    # spec 6: Dn has a 2-fold on X; I2 (Crowther 222) has 2-folds on X, Y, Z; I3 a 5-fold on Z.
    d7 = symmetry_operators("D7")
    assert any(np.allclose(R, np.diag([1.0, -1.0, -1.0])) for R in d7)
    i2 = symmetry_operators("I2")
    for axis in np.eye(3):
        flip = 2 * np.outer(axis, axis) - np.eye(3)
        assert any(np.allclose(R, flip, atol=1e-9) for R in i2)
    i3 = symmetry_operators("I3")
    # I3 generators: 2-fold (R(2)), then the 5-fold about Z (R(3)..R(6))
    assert np.allclose(i3[2:6, 2, 2], 1.0, atol=1e-9)


def test_nearest_mate_and_distance() -> None:
    rng = np.random.default_rng(1)
    angles = rng.uniform([-180, 0, -180], [180, 180, 180], size=(20, 3))
    A = euler_to_matrix(*angles.T)
    ops = symmetry_operators("O")
    k = rng.integers(0, 24, size=20)
    B = A @ ops[k]  # an exact symmetry mate of A
    for metric in ("axes", "geodesic"):
        assert np.allclose(angular_distance(A, B, "O", metric=metric), 0.0, atol=1e-5)
        mate, idx, dist = nearest_symmetry_mate(A, B, "O", metric=metric)
        assert np.allclose(mate, A, atol=1e-6)
        assert np.allclose(ops[k] @ ops[idx], np.eye(3), atol=1e-9)
    # without symmetry the distance is non-zero; with C1 it equals the plain metric
    assert np.all(angular_distance(A, B, "C1") >= 0)
    assert orientation_mates(A, "D2").shape == (20, 4, 3, 3)
    assert direction_mates(np.array([0.0, 0.0, 1.0]), "D2").shape == (4, 3)


def test_small_rotation_distance() -> None:
    A = euler_to_matrix(10.0, 40.0, 70.0)
    B = euler_to_matrix(10.0, 40.0, 73.0)
    # A 3-degree psi change rotates rows 0 and 1 by 3 degrees, row 2 not: mean = 2 degrees.
    # acos near 1 resolves angles only to ~1e-6 degrees (as in RELION): tolerance 1e-5.
    assert angular_distance(A, B) == pytest.approx(2.0, abs=1e-5)
    assert angular_distance(A, B, metric="geodesic") == pytest.approx(3.0, abs=1e-5)
