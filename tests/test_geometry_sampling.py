"""HEALPix directions, asymmetric units and pose grids against RELION 5.0.1 sampling files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import starfile

from processing.errors import InputError
from processing.geometry.healpix import (
    asymmetric_unit_directions,
    direction_vectors,
    healpix_angular_step,
    healpix_directions,
    healpix_npix,
    healpix_z_phi,
    nest_to_xyf,
    oversampled_direction_pixels,
    oversampled_directions,
    oversampled_orientations,
    psi_grid,
    xyf_to_nest,
)
from processing.geometry.sampling import (
    AngularSampling,
    make_sampling,
    next_random_perturbation,
    oversampled_translations,
    perturb_orientations,
    perturb_translations,
    real_wrap,
    relion_oversampled_translations,
    select_orientations_with_prior,
    translation_grid,
)
from processing.geometry.euler import euler_to_matrix

DATA = Path(__file__).parent / "data" / "sampling"
SUMMARY = json.loads((DATA / "summary.json").read_text())
# keys are "C1_order2" or "extra_order3/C2_order3"; index the cases by their last part
CASES = {k.split("/")[-1]: SUMMARY[k] for k in SUMMARY if k != "common"}
EXPECTED_COUNTS = {"C1_order2": 192, "C6_order2": 28, "C6_order3": 118, "C2_order3": 384,
                   "D2_order3": 192, "D7_order3": 53, "T_order3": 59, "O_order3": 32,
                   "I1_order3": 12, "I2_order3": 11, "I3_order3": 12, "I4_order3": 11}


def _star(case: str) -> dict:
    info = CASES[case]
    path = DATA / info["file"]
    if not path.exists():
        path = DATA / "extra_order3" / Path(info["file"]).name
    return starfile.read(path)


def _match_directions(rot, tilt, rot_ref, tilt_ref, tol_deg: float) -> None:
    """Each direction matches one reference within tol: rot mod 360, rot ignored at poles."""
    d_tilt = np.abs(tilt[:, None] - tilt_ref[None, :])
    d_rot = np.abs((rot[:, None] - rot_ref[None, :] + 180.0) % 360.0 - 180.0)
    pole = (np.abs(tilt_ref) < tol_deg) | (np.abs(tilt_ref - 180.0) < tol_deg)
    ok = (d_tilt < tol_deg) & ((d_rot < tol_deg) | pole[None, :])
    assert ok.any(axis=1).all(), "some of our directions are not in RELION's set"
    assert ok.any(axis=0).all(), "some of RELION's directions are missing"


def test_all_cases_present() -> None:
    assert sorted(CASES) == sorted(EXPECTED_COUNTS)


@pytest.mark.parametrize("case", sorted(EXPECTED_COUNTS))
def test_directions_match_relion(case: str) -> None:
    info = CASES[case]
    star = _star(case)
    dirs = star["sampling_directions"]
    rot_ref = dirs["rlnAngleRot"].to_numpy(float)
    tilt_ref = dirs["rlnAngleTilt"].to_numpy(float)
    ours = asymmetric_unit_directions(info["healpix_order"], info["group"])
    assert len(ours.rot) == info["n_directions"] == EXPECTED_COUNTS[case] == len(rot_ref)
    # 1e-4 deg: RELION writes the angles with 6 decimals (README 2).
    _match_directions(ours.rot, ours.tilt, rot_ref, tilt_ref, 1e-4)
    # We also reproduce RELION's order (same tolerance).
    assert np.abs(ours.tilt - tilt_ref).max() < 1e-4
    general = star["sampling_general"]
    assert general["rlnHealpixOrder"] == info["healpix_order"]
    assert general["rlnSymmetryGroup"] == info["group"]


@pytest.mark.parametrize("case", sorted(EXPECTED_COUNTS))
def test_psi_step_translations_and_counts(case: str) -> None:
    info = CASES[case]
    general = _star(case)["sampling_general"]
    px = SUMMARY["common"]["pixel_size_A"]
    grid = make_sampling(
        info["healpix_order"], info["group"], offset_range=info["offset_range_A"],
        offset_step=info["offset_step_A"], translation_dim=2,
    )
    # psi step and offsets are exact numbers in the STAR file (printed with 6 decimals)
    assert grid.angles.psi_step == pytest.approx(info["psi_step_deg"], abs=1e-9)
    assert general["rlnPsiStep"] == pytest.approx(grid.angles.psi_step, abs=1e-6)
    assert general["rlnOffsetRange"] == pytest.approx(grid.offsets.offset_range, abs=1e-6)
    assert general["rlnOffsetStep"] == pytest.approx(grid.offsets.offset_step, abs=1e-6)
    assert grid.offsets.offset_range / px == 5 and grid.offsets.offset_step / px == 2
    for os_key, os in (("oversampling_0", 0), ("oversampling_1", 1)):
        report = info["stdout_sampling_report"][os_key]
        assert grid.n_orientations(os) == report["NrOrientations"]
        assert grid.n_translations(os) == report["NrTranslations"]
        assert grid.n_samples(os) == report["NrHiddenVariableSamplingPoints"]
        assert grid.angles.angular_step(os) == pytest.approx(report["OrientationalSampling_deg"])
        assert grid.offsets.step(os) == pytest.approx(report["TranslationalSampling_A"])


def test_translation_grids() -> None:
    t3 = translation_grid(5, 2, 3)
    assert t3.shape == (81, 3)  # spec 5.7: GUI defaults give 81 coarse 3D translations
    assert np.all(np.sum(t3**2, axis=1) <= 25.0)
    assert np.all(np.isin(t3, [-4.0, -2.0, 0.0, 2.0, 4.0]))
    # RELION's order: x outer, z inner
    assert np.array_equal(t3[0], [-4.0, -2.0, -2.0]) and np.array_equal(t3[40], [0, 0, 0])
    t2 = translation_grid(5, 2, 2)
    assert t2.shape == (21, 2)
    over2 = oversampled_translations(t2, 2.0, 1)
    assert over2.shape == (21, 4, 2) and over2.reshape(-1, 2).shape[0] == 84
    np.testing.assert_allclose(over2[10, :, :] - t2[10], [[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    over3 = oversampled_translations(t3, 2.0, 1)
    assert over3.shape == (81, 8, 3)
    np.testing.assert_allclose(over3.mean(axis=1), t3)
    assert translation_grid(0, 2, 3).shape == (1, 3)
    with pytest.raises(InputError):
        translation_grid(5, 0, 3)


def test_fine_translations_in_relions_arithmetic() -> None:
    """getTranslationsInPixel works in Å and divides by the pixel size: the same children as
    the pixel-unit rule, up to the last bits, and those are RELION's. With a 16.2 Å step at
    8.1 Å/px, the child half a pixel above the centre is (-8.1 + 1.5·16.2/2) / 8.1 =
    0.49999999999999989, which RELION's ROUND takes to 0 (relion_refine --cpu's whole-pixel
    search centres of the demo's iteration 2 say so)."""
    indices = translation_grid(4, 2, 3) / 2
    fine = relion_oversampled_translations(indices, 16.2, 8.1, 1)
    np.testing.assert_allclose(fine, oversampled_translations(indices * 2, 2.0, 1), rtol=0, atol=1e-14)
    centre = int(np.flatnonzero(np.all(indices == 0, axis=1))[0])
    assert fine[centre, 7, 0] == 0.49999999999999989 and fine[centre, 7, 0] != 0.5
    assert np.floor(fine[centre, 7, 0] + 0.5) == 0.0
    np.testing.assert_array_equal(relion_oversampled_translations(indices, 16.2, 8.1, 0)[:, 0], indices * 16.2 / 8.1)


def test_healpix_basics() -> None:
    for order in range(5):
        rot, tilt = healpix_directions(order)
        assert rot.shape == (healpix_npix(order),)
        assert rot.min() >= -180 and rot.max() <= 180 and tilt.min() >= 0 and tilt.max() <= 180
        z, _ = healpix_z_phi(np.arange(healpix_npix(order)), order)
        assert abs(z.sum()) < 1e-9  # equal-area pixels are symmetric about the equator
        v = direction_vectors(rot, tilt)
        # all pixel centres are distinct and nearly uniform: nearest-neighbour ~ step
        d = np.rad2deg(np.arccos(np.clip(v @ v.T, -1, 1))) + 1e3 * np.eye(len(v))
        nn = d.min(axis=1)
        assert nn.min() > 0.4 * healpix_angular_step(order) and nn.max() < 1.6 * healpix_angular_step(order)
    assert [healpix_angular_step(o) for o in (0, 2, 3)] == [60.0, 15.0, 7.5]
    pix = np.arange(healpix_npix(3))
    assert np.array_equal(xyf_to_nest(*nest_to_xyf(pix, 3), 3), pix)


def test_oversampled_children() -> None:
    order = 2
    pix = np.arange(healpix_npix(order))
    kids = oversampled_direction_pixels(pix, order, 1)
    assert kids.shape == (192, 4)
    # NEST children of p are 4p .. 4p+3 (as a set)
    assert np.array_equal(np.sort(kids, axis=1), 4 * pix[:, None] + np.arange(4))
    rot_k, tilt_k = oversampled_directions(pix, order, 1)
    vk = direction_vectors(rot_k, tilt_k)
    vc = direction_vectors(*healpix_directions(order))
    ang = np.rad2deg(np.arccos(np.clip(np.einsum("nkc,nc->nk", vk, vc), -1, 1)))
    assert ang.max() < healpix_angular_step(order)  # children surround their parent
    rot, tilt, psi = oversampled_orientations(pix[:3], np.array([0.0, 15.0, 30.0]), order, 15.0, 1)
    assert rot.shape == (3, 8)
    np.testing.assert_allclose(psi[1], [11.25, 18.75] * 4)  # psi +- step/4, child outer
    assert np.array_equal(rot[0, 0:2], [rot_k[0, 0]] * 2)


def test_psi_grid() -> None:
    psi, step = psi_grid(15.0)
    assert step == 15.0 and psi.shape == (24,) and psi[-1] == 345.0
    psi, step = psi_grid(7.0)  # ceil(360/7) = 52 steps
    assert psi.shape == (52,) and step == pytest.approx(360 / 52)


def test_higher_orders_and_limit_tilt() -> None:
    # Above 4000 directions RELION skips the pairwise step: C1 order 4 keeps all 3072,
    # C2 order 5 keeps the geometric half.
    assert len(asymmetric_unit_directions(4, "C1").rot) == 3072
    c2 = asymmetric_unit_directions(5, "C2")
    assert len(c2.rot) >= 12288 // 2
    side = asymmetric_unit_directions(2, "C1", limit_tilt=60.0)
    t = np.where(side.tilt > 90, side.tilt - 180, side.tilt)
    assert np.all(np.abs(t) >= 60.0) and 0 < len(side.rot) < 192


def test_prior_sigma_tilt_only() -> None:
    # --sigma_tilt 10 around tilt 90: only |tilt - 90| < 30 survive, rot and psi unrestricted
    ang = AngularSampling.create(2, "C1")
    subs = select_orientations_with_prior(ang, [0.0, 77.0], [90.0, 90.0], [0.0, 0.0], 0.0, 10.0, 0.0)
    expect = np.flatnonzero(np.abs(ang.tilt - 90.0) < 30.0)
    for s in subs:
        assert np.array_equal(s.dir_index, expect)
        assert s.dir_weight.sum() == pytest.approx(1.0)
        assert len(s.psi_index) == ang.n_psi
        w = s.dir_weight
        near = np.abs(ang.tilt[s.dir_index] - 90.0)
        assert w[np.argmin(near)] == w.max()
    # symmetry mates are considered: with D2 the 2-fold on X maps tilt t to 180 - t, so a
    # prior at tilt 170 selects the asymmetric-unit directions (tilt <= 90) within 15 of 10
    d2 = AngularSampling.create(2, "D2")
    (s,) = select_orientations_with_prior(d2, 0.0, 170.0, 0.0, 0.0, 5.0, 0.0)
    assert np.all(d2.tilt <= 90.0)
    assert np.array_equal(s.dir_index, np.flatnonzero(np.abs(d2.tilt - 10.0) < 15.0))
    # C1 sampling, D2 mates: directions near tilt 170 match a prior at 10
    (s,) = select_orientations_with_prior(ang, 0.0, 10.0, 0.0, 0.0, 5.0, 0.0, symmetry="D2")
    mate_tilt = np.minimum(ang.tilt, 180.0 - ang.tilt)  # D2 mates have tilt t or 180 - t
    assert np.array_equal(s.dir_index, np.flatnonzero(np.abs(mate_tilt - 10.0) < 15.0))
    assert np.any(ang.tilt[s.dir_index] > 150.0)


def test_prior_local_search() -> None:
    ang = AngularSampling.create(3, "C1")
    sigma = 2 * ang.angular_step(1)  # 7.5 deg: local searches use 2 x oversampled step
    prior = (30.0, 60.0, 45.0)
    (s,) = select_orientations_with_prior(ang, *prior, sigma, sigma, sigma)
    v = direction_vectors(ang.rot, ang.tilt)
    p = direction_vectors(prior[0], prior[1])
    dist = np.rad2deg(np.arccos(np.clip(v @ p, -1, 1)))
    assert np.array_equal(s.dir_index, np.flatnonzero(dist < 3 * sigma))
    np.testing.assert_allclose(s.dir_weight, np.exp(-0.5 * (dist[s.dir_index] / sigma) ** 2)
                               / np.exp(-0.5 * (dist[s.dir_index] / sigma) ** 2).sum())
    dpsi = np.abs((ang.psi - 45.0 + 180) % 360 - 180)
    assert np.array_equal(s.psi_index, np.flatnonzero(dpsi < 3 * sigma))
    # a prior outside the asymmetric unit selects the directions around its symmetry mate
    c6 = AngularSampling.create(3, "C6")
    (s6,) = select_orientations_with_prior(c6, 120.0, 60.0, 0.0, sigma, sigma, sigma)
    v6 = direction_vectors(c6.rot[s6.dir_index], c6.tilt[s6.dir_index])
    mate = direction_vectors(0.0, 60.0)  # 120 deg about Z is a C6 operation
    assert np.all(np.rad2deg(np.arccos(np.clip(v6 @ mate, -1, 1))) < 3 * sigma)
    assert len(s6.dir_index) > 3
    # nothing within 3 sigma: the nearest direction / psi is used
    (s0,) = select_orientations_with_prior(ang, *prior, 0.01, 0.01, 0.01)
    assert len(s0.dir_index) == 1 and s0.dir_index[0] == np.argmin(dist)
    assert list(s0.dir_weight) == [1.0] and len(s0.psi_index) == 1
    assert ang.psi[s0.psi_index[0]] == 45.0


def test_prior_rot_only_and_no_prior() -> None:
    ang = AngularSampling.create(2, "C1")
    (s,) = select_orientations_with_prior(ang, 0.0, 90.0, 0.0, 10.0, 0.0, 0.0)
    y = np.sin(np.deg2rad(ang.tilt)) * np.sin(np.deg2rad(ang.rot))
    expect = np.flatnonzero(np.abs(np.rad2deg(np.arcsin(y))) < 30.0)
    assert np.array_equal(s.dir_index, expect)
    (s,) = select_orientations_with_prior(ang, 0.0, 90.0, 0.0, 0.0, 0.0, 0.0)
    assert len(s.dir_index) == 192 and s.dir_weight.sum() == pytest.approx(1.0)


def test_random_perturbation() -> None:
    p = 0.0
    for seed in range(50):
        q = next_random_perturbation(p, 0.5, seed)
        assert -0.5 <= q <= 0.5
        step = (q - p) % 1.0  # advance of U(0.25, 0.5) modulo the period 1
        assert 0.25 - 1e-12 <= step <= 0.5 + 1e-12
        p = q
    assert real_wrap(0.7, -0.5, 0.5) == pytest.approx(-0.3)
    assert real_wrap(-0.9, -0.5, 0.5) == pytest.approx(0.1)
    assert next_random_perturbation(0.0, 0.0, 1) == 0.0
    rot, tilt, psi = perturb_orientations(10.0, 20.0, 30.0, 0.2, 15.0)
    A = euler_to_matrix(rot, tilt, psi)
    np.testing.assert_allclose(A, euler_to_matrix(10, 20, 30) @ euler_to_matrix(3, 3, 3), atol=1e-12)
    np.testing.assert_allclose(perturb_translations(np.zeros((2, 3)), 0.2, 8.0), 1.6)
    grid = make_sampling(2, "C1", offset_range=5, offset_step=2)
    g2 = grid.with_next_perturbation(2)
    assert g2.random_perturbation != 0.0 and grid.random_perturbation == 0.0
    assert grid.n_translations(0) == 81 and grid.n_translations(1) == 81 * 8


def test_random_perturbation_is_relions() -> None:
    """relion_refine's perturbation instances (``rlnSamplingPerturbInstance`` of its
    run_itNNN_sampling.star, RELION 5.0.1 on the TEST data with ``--perturb 0.5``; see
    tests/data/refine_unkind/ORIGIN.md): iteration 0 from glibc's unseeded state whatever the
    seed, then ``srand(random_seed + iteration)`` each iteration."""
    from processing.geometry.sampling import initial_random_perturbation

    p0 = initial_random_perturbation(0.5)
    assert p0 == pytest.approx(0.460047, abs=1e-6)
    p1 = next_random_perturbation(p0, 0.5, 1 + 1)          # --random_seed 1, iteration 1
    assert p1 == pytest.approx(-0.11471, abs=1e-5)
    assert next_random_perturbation(p1, 0.5, 1 + 2) == pytest.approx(0.275636, abs=1e-6)
    assert next_random_perturbation(p0, 0.5, 7 + 1) == pytest.approx(-0.20176, abs=1e-5)   # --random_seed 7


def test_glibc_random_is_libc() -> None:
    import ctypes
    import ctypes.util

    from processing.glibc_random import GlibcRandom

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    for seed in (0, 1, 2, 12345):
        libc.srand(seed)
        generator = GlibcRandom(seed)
        assert [generator.rand() for _ in range(500)] == [libc.rand() for _ in range(500)]


def test_mt19937_shuffle_is_libstdcxx() -> None:
    """relion_refine's particle order: std::shuffle with std::mt19937, as libstdc++ 12 (GCC
    12.2, the compiler of the RELION build in oracle/) computes it. The expected values were
    printed by a C++ program built with that g++: for each n, iota(n) shuffled with
    mt19937(2), then its first half shuffled again with the same generator; shown are the first
    (up to) 12 elements, the last element and the generator's next output."""
    from processing.glibc_random import Mt19937, libstdcxx_shuffle

    expected = {
        7: ([5, 6, 2, 4, 1, 3, 0], 0, 2360782358),
        10: ([5, 1, 3, 8, 0, 4, 6, 2, 7, 9], 9, 2081981515),
        100: ([92, 95, 96, 41, 69, 82, 47, 17, 51, 1, 44, 5], 39, 513183305),
        135: ([43, 91, 133, 17, 41, 16, 19, 103, 101, 7, 70, 123], 15, 2337356230),
        # above 2**16 elements libstdc++ draws one swap position at a time
        70000: ([6343, 56508, 7413, 28505, 31020, 47557, 65902, 45030, 1702, 59214, 37431, 55813], 39808,
                3073513891),
    }
    for n, (first, last, next_value) in expected.items():
        items = list(range(n))
        generator = Mt19937(2)
        libstdcxx_shuffle(items, generator)
        half = items[: n // 2]
        libstdcxx_shuffle(half, generator)
        items[: n // 2] = half
        assert items[:12] == first and items[-1] == last and generator() == next_value, n
    assert Mt19937(5489)() == 3499211612          # first output of the default-seeded engine
