"""Point-group symmetry in RELION's conventions (spec 6, 5.11; conformance README 1).

A group is named as in RELION (case-insensitive): ``C<n>``, ``D<n>``, ``T``, ``O``, ``I``
(= ``I2``), ``I1`` ... ``I4`` for the chiral groups used in sub-tomogram averaging, plus the
improper variants ``Ci``, ``Cs``, ``C<n>v``, ``C<n>h``, ``S<n>`` (n even), ``D<n>v``,
``D<n>h``, ``Td``, ``Th``, ``Oh``, ``Ih`` (= ``I2h``), ``I1h`` ... ``I4h``.

Each group is the closure of a few generators (``rot_axis n axis``, ``mirror_plane normal``,
``inversion``) in the orientation RELION uses (spec 6 table). Every operator is a pair
``(L, R)`` of 3x3 matrices; ``R`` is what RELION stores and prints
(``--print_symmetry_ops``): for a ``rot_axis`` generator the *transpose* of the active
right-handed rotation by ``k*360/n`` about the axis. ``L`` is the identity except for the
inversion generator, where RELION uses ``L = diag(1, 1, -1)`` (it only enters the
direction mates used by the sampling code). The list order reproduces RELION's: the
identity first, then the generator matrices, then the products in the order RELION's
``compute_subgroup`` finds them.

How RELION uses the operators:

* symmetry mates of an orientation ``A`` (``x_image = A x_ref``) are ``L_k A R_k``;
* symmetry mates of a projection direction ``d`` (unit vector of ``(rot, tilt)``) are
  ``L_k R_k^T d``;
* the back-projected Fourier sums are symmetrised by summing ``F(R_k k)``.
"""
from __future__ import annotations

import math

import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InputError

__all__ = [
    "SymmetryGroup",
    "symmetry_group",
    "symmetry_operators",
    "group_order",
    "normalise_symmetry_name",
    "orientation_mates",
    "direction_mates",
    "axes_angular_distance",
    "angular_distance",
    "nearest_symmetry_mate",
    "VALID_SYMMETRY_FORMS",
]

VALID_SYMMETRY_FORMS = (
    "C<n>, D<n> (n = 1..99), T, O, I (= I2), I1, I2, I3, I4; improper: Ci, Cs, C<n>v, C<n>h, "
    "S<n> (n even), D<n>v, D<n>h, Td, Th, Oh, Ih (= I2h), I1h, I2h, I3h, I4h"
)

# RELION's equality tolerance when closing a group (XMIPP_EQUAL_ACCURACY, double build).
_EQUAL_ACCURACY = 1e-6
#: RELION's PI (macros.h), the double nearest to pi.
_RELION_PI = 3.14159265358979323846

# Generators per group kind, in RELION's order (src/symmetries.cpp fill_symmetry_class).
# ("rot", fold, axis) | ("mirror", normal) | ("inversion",). For T/Td/Th the source gives
# the 2-fold axis to 6 digits; we use the exact axis (0, sqrt(2/3), sqrt(1/3)), which keeps
# the closure exact (RELION's own matrices differ from these by < 5e-6).
_S23 = (0.0, np.sqrt(2.0 / 3.0), np.sqrt(1.0 / 3.0))
_ICOSA = {
    "I2": [("rot", 2, (0, 0, 1)), ("rot", 5, (0.525731114, 0, 0.850650807)),
           ("rot", 3, (0, 0.356822076, 0.934172364))],
    "I1": [("rot", 2, (1, 0, 0)), ("rot", 5, (0.85065080702670, 0, -0.5257311142635)),
           ("rot", 3, (0.9341723640, 0.3568220765, 0))],
    "I3": [("rot", 2, (-0.5257311143, 0, 0.8506508070)), ("rot", 5, (0, 0, 1)),
           ("rot", 3, (-0.4911234778630044, 0.3568220764705179, 0.7946544753759428))],
    "I4": [("rot", 2, (0.5257311143, 0, 0.8506508070)),
           ("rot", 5, (0.8944271932547096, 0, 0.4472135909903704)),
           ("rot", 3, (0.4911234778630044, 0.3568220764705179, 0.7946544753759428))],
}
_ICOSA_MIRROR = {
    "I2": (1, 0, 0),
    "I1": (0, 0, -1),
    "I3": (0.850650807, 0, 0.525731114),
    "I4": (0.850650807, 0, -0.525731114),
}


@dataclass(frozen=True, eq=False)
class SymmetryGroup:
    """A point group with RELION's operator list.

    Attributes
    ----------
    name
        Canonical name (upper case, e.g. ``"C6"``, ``"D7"``, ``"I2"``, ``"C4H"``).
    kind
        Group family: ``"CN"``, ``"CI"``, ``"CS"``, ``"CNV"``, ``"CNH"``, ``"SN"``, ``"DN"``,
        ``"DNV"``, ``"DNH"``, ``"T"``, ``"TD"``, ``"TH"``, ``"O"``, ``"OH"``, ``"I1"``..``"I4"``,
        ``"I1H"``..``"I4H"``.
    n
        The ``n`` of the family (``C6`` -> 6); 0 when the family has none.
    R
        (order, 3, 3) float64 operators as RELION stores them; ``R[0]`` is the identity.
    L
        (order, 3, 3) float64 left operators (identity except after an inversion).
    """

    name: str
    kind: str
    n: int
    R: NDArray[np.float64] = field(repr=False)
    L: NDArray[np.float64] = field(repr=False)

    @property
    def order(self) -> int:
        """Number of operators (including the identity)."""
        return int(self.R.shape[0])

    @property
    def is_proper(self) -> bool:
        """True when every operator is a rotation (no mirror or inversion)."""
        return bool(np.all(np.linalg.det(self.R) > 0) and np.allclose(self.L, np.eye(3)))


def _parse(name: str) -> tuple[str, str, int]:
    """Canonical name, family and n of a RELION symmetry name; InputError when invalid."""
    if not isinstance(name, str):
        raise InputError(f"symmetry group must be a string, got {name!r}; valid forms: "
                         f"{VALID_SYMMETRY_FORMS}")
    s = name.strip().upper()
    if s == "I":
        s = "I2"
    if s == "IH":
        s = "I2H"
    m = re.fullmatch(r"([CDS])(\d{1,2})([VH]?)", s)
    if m:
        letter, digits, suffix = m.groups()
        n = int(digits)
        kind = {"C": "CN", "D": "DN", "S": "SN"}[letter] + suffix
        if letter == "S" and suffix:
            kind = ""
        if kind and n >= 1:
            if kind == "SN" and n % 2:
                raise InputError(f"symmetry group {name!r}: the order of an S<n> group must "
                                 f"be even (RELION builds it from an n/2-fold axis and an "
                                 f"inversion)")
            return f"{letter}{n}{suffix}", kind, n
    if s in ("CI", "CS", "T", "TD", "TH", "O", "OH", "I1", "I2", "I3", "I4",
             "I1H", "I2H", "I3H", "I4H"):
        return s, s, 0
    if s in ("I5", "I5H"):
        raise InputError(f"symmetry group {name!r} is not implemented (RELION has no I5 "
                         f"either); valid forms: {VALID_SYMMETRY_FORMS}")
    raise InputError(f"unknown symmetry group {name!r}; valid forms (case-insensitive): "
                     f"{VALID_SYMMETRY_FORMS}")


def normalise_symmetry_name(name: str) -> str:
    """Canonical upper-case name of a symmetry group (``"c6"`` -> ``"C6"``, ``"I"`` -> ``"I2"``).

    Raises
    ------
    InputError
        If ``name`` is not a RELION point-group name.
    """
    return _parse(name)[0]


def _generators(kind: str, n: int) -> list[tuple]:
    """Generator lines of a group family, in RELION's order."""
    z, x = (0, 0, 1), (1, 0, 0)
    if kind == "CN":
        return [("rot", n, z)]
    if kind == "CI":
        return [("inversion",)]
    if kind == "CS":
        return [("mirror", z)]
    if kind == "CNV":
        return [("rot", n, z), ("mirror", (0, 1, 0))]
    if kind == "CNH":
        return [("rot", n, z), ("mirror", z)]
    if kind == "SN":
        return [("rot", n // 2, z), ("inversion",)]
    if kind == "DN":
        return [("rot", n, z), ("rot", 2, x)]
    if kind == "DNV":
        return [("rot", n, z), ("rot", 2, x), ("mirror", x)]
    if kind == "DNH":
        return [("rot", n, z), ("rot", 2, x), ("mirror", z)]
    if kind == "T":
        return [("rot", 3, z), ("rot", 2, _S23)]
    if kind == "TD":
        return [("rot", 3, z), ("rot", 2, _S23), ("mirror", (1.4142136, 2.4494897, 0.0))]
    if kind == "TH":
        return [("rot", 3, z), ("rot", 2, tuple(-c for c in _S23)), ("inversion",)]
    if kind == "O":
        return [("rot", 3, (1, 1, 1)), ("rot", 4, z)]
    if kind == "OH":
        return [("rot", 3, (1, 1, 1)), ("rot", 4, z), ("mirror", (0, 1, 1))]
    if kind in _ICOSA:
        return list(_ICOSA[kind])
    if kind.endswith("H") and kind[:2] in _ICOSA:
        return list(_ICOSA[kind[:2]]) + [("mirror", _ICOSA_MIRROR[kind[:2]])]
    raise InputError(f"symmetry family {kind!r} is not known")  # pragma: no cover


def _matmul(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """3x3 product summed in RELION's order (``Matrix2D::operator*``: k = 0, 1, 2 from 0),
    so that the operators carry RELION's exact bits (sampling cut-offs at exactly 3 sigma
    depend on them)."""
    out = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            acc = 0.0
            for k in range(3):
                acc += float(a[i, k]) * float(b[k, j])
            out[i, j] = acc
    return out


def _active_rotation(angle_deg: float, axis: ArrayLike) -> NDArray[np.float64]:
    """Active right-handed rotation by ``angle_deg`` about ``axis``, computed as RELION's
    ``rotation3DMatrix(ang, axis)`` does: ``A^T R_z(ang) A`` with ``A`` from ``alignWithZ``
    (glibc cos/sin of ``ang * PI / 180``), (3, 3)."""
    x, y, z = (float(v) for v in axis)
    m = math.sqrt(x * x + y * y + z * z)
    im = 1.0 / m
    x, y, z = x * im, y * im, z * im
    proj = math.sqrt(y * y + z * z)
    if proj > _EQUAL_ACCURACY:
        A = np.array([[proj, -x * y / proj, -x * z / proj], [0.0, z / proj, -y / proj], [x, y, z]])
    else:
        A = np.array([[0.0, 0.0, -1.0 if x > 0 else 1.0], [0.0, 1.0, 0.0], [1.0 if x > 0 else -1.0, 0.0, 0.0]])
    ang = angle_deg * _RELION_PI / 180
    c, s = math.cos(ang), math.sin(ang)
    Rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return _matmul(_matmul(A.T, Rz), A)


def _zero_small(m: NDArray[np.float64]) -> NDArray[np.float64]:
    out = m.copy()
    out[np.abs(out) < _EQUAL_ACCURACY] = 0.0
    return out


def _generator_matrices(kind: str, n: int) -> tuple[list[NDArray], list[NDArray]]:
    """(L, R) lists produced directly by the generator lines (before closure)."""
    Ls: list[NDArray] = []
    Rs: list[NDArray] = []
    eye = np.eye(3)
    for gen in _generators(kind, n):
        if gen[0] == "rot":
            fold, axis = gen[1], gen[2]
            increment = 360.0 / fold
            angle = increment                      # accumulated, as RELION does
            for _ in range(1, fold):
                Ls.append(eye.copy())
                Rs.append(_zero_small(_active_rotation(angle, axis)).T.copy())
                angle += increment
        elif gen[0] == "mirror":
            u = np.asarray(gen[1], dtype=np.float64)
            u = u / np.linalg.norm(u)
            Ls.append(eye.copy())
            Rs.append(eye - 2.0 * np.outer(u, u))
        else:  # inversion
            Ls.append(np.diag([1.0, 1.0, -1.0]))
            Rs.append(-eye)
    return Ls, Rs


def _close(Ls: list[NDArray], Rs: list[NDArray]) -> tuple[list[NDArray], list[NDArray]]:
    """Closure under products, visiting pairs (i, j) in RELION's order.

    The pair table is scanned shell by shell: for shell m, (0,m), (1,m), ..., (m,m), then
    (m,m-1), ..., (m,0). New elements extend the table by one shell each, so iterating the
    shells in sequence reproduces RELION's order of discovery.
    """
    Ls, Rs = list(Ls), list(Rs)
    # (L, R) pairs flattened to 18 numbers, for vectorised "already known?" checks;
    # the identity is never stored in the list, so it is tested separately.
    known = np.empty((max(8, 4 * len(Rs)), 18))
    known[: len(Rs)] = np.concatenate(
        [np.asarray(Ls).reshape(-1, 9), np.asarray(Rs).reshape(-1, 9)], axis=1
    )
    identity = np.concatenate([np.eye(3).ravel(), np.eye(3).ravel()])
    m = 0
    while m < len(Rs):
        cells = [(i, m) for i in range(m + 1)] + [(m, j) for j in range(m - 1, -1, -1)]
        for i, j in cells:
            new_l = _matmul(Ls[i], Ls[j])
            new_r = _matmul(Rs[i], Rs[j])
            flat = np.concatenate([new_l.ravel(), new_r.ravel()])
            if np.all(np.abs(flat - identity) < _EQUAL_ACCURACY):
                continue
            if np.any(np.all(np.abs(known[: len(Rs)] - flat) < _EQUAL_ACCURACY, axis=1)):
                continue
            Ls.append(_zero_small(new_l))
            Rs.append(_zero_small(new_r))
            if len(Rs) > known.shape[0]:
                known = np.concatenate([known, np.empty_like(known)])
            known[len(Rs) - 1] = np.concatenate([Ls[-1].ravel(), Rs[-1].ravel()])
        m += 1
    return Ls, Rs


@lru_cache(maxsize=None)
def _build(canonical: str, kind: str, n: int) -> SymmetryGroup:
    Ls, Rs = _generator_matrices(kind, n)
    Ls, Rs = _close(Ls, Rs)
    L = np.concatenate([np.eye(3)[None], np.asarray(Ls).reshape(-1, 3, 3)])
    R = np.concatenate([np.eye(3)[None], np.asarray(Rs).reshape(-1, 3, 3)])
    L.setflags(write=False)
    R.setflags(write=False)
    return SymmetryGroup(name=canonical, kind=kind, n=n, R=R, L=L)


def symmetry_group(name: str | SymmetryGroup) -> SymmetryGroup:
    """The :class:`SymmetryGroup` of a RELION symmetry name (cached; arrays are read-only).

    Raises
    ------
    InputError
        For an unknown name; the message lists the valid forms.
    """
    if isinstance(name, SymmetryGroup):
        return name
    return _build(*_parse(name))


def symmetry_operators(name: str | SymmetryGroup) -> NDArray[np.float64]:
    """RELION's stored symmetry matrices ``R``, shape (order, 3, 3), identity first.

    The matrices are those printed by ``relion_refine --sym NAME --print_symmetry_ops``, in
    the same order (for a ``rot_axis`` generator, the transpose of the active rotation).
    """
    return np.array(symmetry_group(name).R)


def group_order(name: str | SymmetryGroup) -> int:
    """Number of operators of a group (``C6`` -> 6, ``D7`` -> 14, ``I`` -> 60)."""
    return symmetry_group(name).order


def orientation_mates(A: ArrayLike, sym: str | SymmetryGroup) -> NDArray[np.float64]:
    """All symmetry-equivalent orientations ``L_k A R_k``.

    Parameters
    ----------
    A
        (..., 3, 3) RELION rotation matrices (reference -> image).
    sym
        Group name or object.

    Returns
    -------
    (..., order, 3, 3) float64; index 0 is ``A`` itself.
    """
    g = symmetry_group(sym)
    A = np.asarray(A, dtype=np.float64)[..., None, :, :]
    return g.L @ A @ g.R


def direction_mates(v: ArrayLike, sym: str | SymmetryGroup) -> NDArray[np.float64]:
    """Symmetry mates ``L_k R_k^T v`` of projection-direction unit vectors.

    Parameters
    ----------
    v
        (..., 3) direction vectors (see :func:`processing.geometry.healpix.direction_vectors`).
    sym
        Group name or object.

    Returns
    -------
    (..., order, 3) float64; index 0 is ``v`` itself.
    """
    g = symmetry_group(sym)
    M = g.L @ np.swapaxes(g.R, -1, -2)  # (K, 3, 3)
    v = np.asarray(v, dtype=np.float64)
    return np.einsum("kij,...j->...ki", M, v)


def axes_angular_distance(A1: ArrayLike, A2: ArrayLike) -> NDArray[np.float64]:
    """RELION's orientation distance: mean over the 3 rows of the angle between rows (deg).

    ``(1/3) sum_i acos(clip(A1[i] . A2[i]))`` (HealpixSampling::calculateAngularDistance
    without symmetry). Broadcasts over leading dimensions: (..., 3, 3) x (..., 3, 3) -> (...).
    """
    A1 = np.asarray(A1, dtype=np.float64)
    A2 = np.asarray(A2, dtype=np.float64)
    dots = np.clip(np.sum(A1 * A2, axis=-1), -1.0, 1.0)
    return np.rad2deg(np.arccos(dots)).mean(axis=-1)


def _geodesic(A1: NDArray, A2: NDArray) -> NDArray:
    trace = np.einsum("...ij,...ij->...", A1, A2)
    return np.rad2deg(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


def angular_distance(
    A1: ArrayLike,
    A2: ArrayLike,
    sym: str | SymmetryGroup = "C1",
    *,
    metric: str = "axes",
) -> NDArray[np.float64]:
    """Angle between orientations, minimised over the symmetry mates of ``A2`` (degrees).

    Parameters
    ----------
    A1, A2
        (..., 3, 3) RELION rotation matrices; broadcast against each other.
    sym
        Symmetry group; mates of ``A2`` are ``L_k A2 R_k``.
    metric
        ``"axes"`` (RELION's mean angle between corresponding matrix rows, used for the
        hidden-variable change monitoring, spec 5.7) or ``"geodesic"`` (rotation angle of
        ``A1^T A2``).

    Returns
    -------
    (...) float64 distances in degrees.
    """
    return nearest_symmetry_mate(A1, A2, sym, metric=metric)[2]


def nearest_symmetry_mate(
    A_ref: ArrayLike,
    A: ArrayLike,
    sym: str | SymmetryGroup,
    *,
    metric: str = "axes",
) -> tuple[NDArray[np.float64], NDArray[np.intp], NDArray[np.float64]]:
    """The symmetry mate of ``A`` closest to ``A_ref``.

    Parameters
    ----------
    A_ref, A
        (..., 3, 3) RELION rotation matrices; broadcast against each other.
    sym
        Symmetry group name or object.
    metric
        ``"axes"`` (RELION's row-angle mean) or ``"geodesic"``.

    Returns
    -------
    mate : (..., 3, 3) float64, ``L_k A R_k`` for the best ``k``.
    index : (...) int, the best ``k`` (first one on ties, as RELION's strict ``<``).
    distance : (...) float64, the distance in degrees.
    """
    A_ref = np.asarray(A_ref, dtype=np.float64)
    A = np.asarray(A, dtype=np.float64)
    mates = orientation_mates(A, sym)  # (..., K, 3, 3)
    ref = A_ref[..., None, :, :]
    if metric == "axes":
        d = axes_angular_distance(ref, mates)
    elif metric == "geodesic":
        d = _geodesic(ref, mates)
    else:
        raise InputError(f"unknown angular distance metric {metric!r}; use 'axes' or 'geodesic'")
    k = np.argmin(d, axis=-1)
    best = np.take_along_axis(d, k[..., None], axis=-1)[..., 0]
    shape = np.broadcast_shapes(A_ref.shape, A.shape)[:-2]
    mates = np.broadcast_to(mates, shape + mates.shape[-3:])
    mate = np.take_along_axis(mates, k[..., None, None, None], axis=-3)[..., 0, :, :]
    return mate, k, best

