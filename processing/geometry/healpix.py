"""HEALPix (NEST scheme) projection directions as RELION samples them (spec 5.7).

A HEALPix grid of order ``h`` has ``Nside = 2**h`` and ``12 * 4**h`` equal-area pixels; RELION
uses the pixel centres, in NEST order, as projection directions ``(rot, tilt) = (phi,
acos z)`` in degrees, normalised to rot in [-180, 180] and tilt in [0, 180]. Its angular step
is ``360 / (6 * 2**h)`` degrees. Directions outside the asymmetric unit of the symmetry group
are removed: first by geometric rules per point group, then (below 4000 directions) by a
pairwise test against the symmetry mates of the directions already kept.

The pixel-centre formulas follow the HEALPix paper (Gorski et al. 2005) and evaluate the
same floating-point expressions as the HEALPix C++ library bundled with RELION, so that
directions on the border of an asymmetric unit fall on the same side as in RELION.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InputError
from .euler import euler_to_matrix
from .symmetry import SymmetryGroup, direction_mates, symmetry_group

__all__ = [
    "HealpixDirections",
    "healpix_nside",
    "healpix_npix",
    "healpix_angular_step",
    "default_psi_step",
    "healpix_max_pixrad",
    "nest_to_xyf",
    "xyf_to_nest",
    "healpix_z_phi",
    "healpix_directions",
    "direction_vectors",
    "vectors_to_directions",
    "normalise_direction",
    "psi_grid",
    "oversampled_direction_pixels",
    "oversampled_directions",
    "oversampled_psi",
    "oversampled_orientations",
    "asymmetric_unit_mask",
    "remove_symmetry_equivalent",
    "limit_tilt_mask",
    "asymmetric_unit_directions",
]

_MAX_ORDER = 13  # Healpix_Base order_max
_JRLL = np.array([2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4], dtype=np.int64)
_JPLL = np.array([1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7], dtype=np.int64)
_PI = np.pi
_HALFPI = np.pi / 2.0
# RELION only runs the pairwise symmetry-mate test below this many directions.
_PAIRWISE_LIMIT = 4000


class HealpixDirections(NamedTuple):
    """A set of HEALPix directions.

    Attributes
    ----------
    pix
        (n,) int64 NEST pixel indices at ``order``.
    rot, tilt
        (n,) float64 angles in degrees (rot in [-180, 180], tilt in [0, 180]).
    order
        HEALPix order.
    """

    pix: NDArray[np.int64]
    rot: NDArray[np.float64]
    tilt: NDArray[np.float64]
    order: int


def _check_order(order: int) -> int:
    if not (0 <= int(order) <= _MAX_ORDER) or int(order) != order:
        raise InputError(f"HEALPix order must be an integer in 0..{_MAX_ORDER}, got {order!r}")
    return int(order)


def healpix_nside(order: int) -> int:
    """``Nside = 2**order``."""
    return 1 << _check_order(order)


def healpix_npix(order: int) -> int:
    """Number of pixels ``12 * 4**order``."""
    return 12 * healpix_nside(order) ** 2


def healpix_angular_step(order: int) -> float:
    """RELION's angular sampling of a HEALPix order, ``360 / (6 * 2**order)`` degrees."""
    return 360.0 / (6 * healpix_nside(order))


def default_psi_step(order: int) -> float:
    """Default psi step of 3D sampling: the HEALPix angular step of ``order`` (degrees)."""
    return healpix_angular_step(order)


def healpix_max_pixrad(order: int) -> float:
    """Largest angular distance between a pixel centre and its corners (radians)."""
    nside = healpix_nside(order)

    def vec(z: float, phi: float) -> NDArray[np.float64]:
        s = np.sqrt((1.0 - z) * (1.0 + z))
        return np.array([s * np.cos(phi), s * np.sin(phi), z])

    t1 = (1.0 - 1.0 / nside) ** 2
    va = vec(2.0 / 3.0, _PI / (4 * nside))
    vb = vec(1.0 - t1 / 3.0, 0.0)
    return float(np.arctan2(np.linalg.norm(np.cross(va, vb)), np.dot(va, vb)))


def nest_to_xyf(pix: ArrayLike, order: int) -> tuple[NDArray, NDArray, NDArray]:
    """NEST pixel index -> (ix, iy, face): de-interleave the bits of the in-face index.

    Parameters
    ----------
    pix
        (...) NEST indices at ``order``.
    order
        HEALPix order.

    Returns
    -------
    ix, iy, face : (...) int64 arrays.
    """
    order = _check_order(order)
    pix = np.asarray(pix, dtype=np.int64)
    face = pix >> (2 * order)
    p = pix & ((1 << (2 * order)) - 1)
    ix = np.zeros_like(p)
    iy = np.zeros_like(p)
    for b in range(order):
        ix |= ((p >> (2 * b)) & 1) << b
        iy |= ((p >> (2 * b + 1)) & 1) << b
    return ix, iy, face


def xyf_to_nest(ix: ArrayLike, iy: ArrayLike, face: ArrayLike, order: int) -> NDArray[np.int64]:
    """(ix, iy, face) -> NEST pixel index (interleave the bits of ix and iy), shape (...)."""
    order = _check_order(order)
    ix = np.asarray(ix, dtype=np.int64)
    iy = np.asarray(iy, dtype=np.int64)
    p = np.zeros(np.broadcast_shapes(ix.shape, iy.shape), dtype=np.int64)
    for b in range(order):
        p |= ((ix >> b) & 1) << (2 * b)
        p |= ((iy >> b) & 1) << (2 * b + 1)
    return (np.asarray(face, dtype=np.int64) << (2 * order)) + p


def healpix_z_phi(pix: ArrayLike, order: int) -> tuple[NDArray, NDArray]:
    """Pixel centres of NEST pixels: ``z = cos(theta)`` and ``phi`` in [0, 2 pi) radians.

    Parameters
    ----------
    pix
        (...) NEST indices at ``order``.
    order
        HEALPix order.

    Returns
    -------
    z, phi : (...) float64 arrays.
    """
    order = _check_order(order)
    nside = 1 << order
    npix = 12 * nside * nside
    pix = np.asarray(pix, dtype=np.int64)
    if np.any((pix < 0) | (pix >= npix)):
        raise InputError(f"HEALPix pixel index out of range 0..{npix - 1} for order {order}")
    fact2 = 4.0 / npix
    fact1 = (nside << 1) * fact2
    nl4 = 4 * nside
    ix, iy, face = nest_to_xyf(pix, order)
    jr = (_JRLL[face] << order) - ix - iy - 1  # ring index counted from the north pole

    north = jr < nside
    south = jr > 3 * nside
    nr = np.where(north, jr, np.where(south, nl4 - jr, nside))
    z = np.where(
        north,
        1.0 - (nr * nr).astype(np.float64) * fact2,
        np.where(south, (nr * nr).astype(np.float64) * fact2 - 1.0,
                 (2 * nside - jr).astype(np.float64) * fact1),
    )
    kshift = np.where(north | south, 0, (jr - nside) & 1)
    num = _JPLL[face] * nr + ix - iy + 1 + kshift
    jp = np.where(num < 0, -((-num) // 2), num // 2)  # C integer division
    jp = np.where(jp > nl4, jp - nl4, jp)
    jp = np.where(jp < 1, jp + nl4, jp)
    phi = (jp - (kshift + 1) * 0.5) * (_HALFPI / nr)
    return z, phi


def normalise_direction(rot: ArrayLike, tilt: ArrayLike) -> tuple[NDArray, NDArray]:
    """RELION's ``checkDirection``: tilt < 0 -> (rot + 180, -tilt); rot wrapped to [-180, 180].

    Shapes (...) -> (...), degrees. Like RELION, +180 and -180 are both left as they are.
    """
    rot = np.array(rot, dtype=np.float64, copy=True)
    tilt = np.array(tilt, dtype=np.float64, copy=True)
    neg = tilt < 0
    tilt = np.where(neg, -tilt, tilt)
    rot = np.where(neg, rot + 180.0, rot)
    big = rot > 180.0
    small = rot < -180.0
    turns = np.where(big, np.ceil((rot - 180.0) / 360.0),
                     np.where(small, -np.ceil((-180.0 - rot) / 360.0), 0.0))
    return rot - 360.0 * turns, tilt


def healpix_directions(order: int, pix: ArrayLike | None = None) -> tuple[NDArray, NDArray]:
    """Directions (rot, tilt) in degrees of NEST pixels (all pixels when ``pix`` is None).

    ``rot = phi * 180 / pi`` and ``tilt = acos(z) * 180 / pi``, then normalised with
    :func:`normalise_direction` (rot in [-180, 180], tilt in [0, 180]).

    Returns
    -------
    rot, tilt : float64 arrays of the shape of ``pix`` (or (12 * 4**order,)).
    """
    if pix is None:
        pix = np.arange(healpix_npix(order), dtype=np.int64)
    z, phi = healpix_z_phi(pix, order)
    rot = phi * 180.0 / _PI
    # glibc's acos, as RELION's ACOSD: numpy's own arccos differs in the last bit for some z,
    # and tilts exactly 3 sigma from a prior are decided by that bit.
    tilt = np.frompyfunc(math.acos, 1, 1)(z).astype(np.float64) * 180.0 / _PI
    return normalise_direction(rot, tilt)


def direction_vectors(rot: ArrayLike, tilt: ArrayLike) -> NDArray[np.float64]:
    """Unit vectors of projection directions: ``(cos rot sin tilt, sin rot sin tilt, cos tilt)``.

    This is the third row of ``A(rot, tilt, psi)`` (the reference axis that becomes the
    viewing direction). Shapes (...), degrees -> (..., 3).
    """
    a = np.asarray(rot, dtype=np.float64) * _PI / 180.0
    b = np.asarray(tilt, dtype=np.float64) * _PI / 180.0
    a, b = np.broadcast_arrays(a, b)
    sb = np.sin(b)
    return np.stack([np.cos(a) * sb, np.sin(a) * sb, np.cos(b)], axis=-1)


def vectors_to_directions(v: ArrayLike) -> tuple[NDArray, NDArray]:
    """(rot, tilt) in degrees of direction vectors (..., 3); rot = 0 on the poles."""
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    tilt = np.rad2deg(np.arccos(np.clip(v[..., 2], -1.0, 1.0)))
    on_pole = np.hypot(v[..., 0], v[..., 1]) < 1e-12
    rot = np.where(on_pole, 0.0, np.rad2deg(np.arctan2(v[..., 1], v[..., 0])))
    return rot, tilt


def psi_grid(psi_step: float) -> tuple[NDArray[np.float64], float]:
    """In-plane angles ``psi_i = i * 360 / n`` with ``n = ceil(360 / psi_step)``.

    Returns
    -------
    psi : (n,) float64 degrees in [0, 360).
    step : the actual step ``360 / n`` (degrees).
    """
    if not psi_step > 0:
        raise InputError(f"psi step must be positive, got {psi_step!r}")
    x = 360.0 / psi_step
    n = int(x) if x == int(x) else int(x) + 1
    step = 360.0 / n
    return np.arange(n) * step, step


def oversampled_direction_pixels(pix: ArrayLike, order: int, oversampling: int = 1) -> NDArray:
    """Children of coarse NEST pixels at order ``order + oversampling``, in RELION's order.

    For a coarse pixel (x, y, face) the children are (i, j, face) at the fine order with
    ``j`` in ``f*y .. f*y+f-1`` (outer) and ``i`` in ``f*x .. f*x+f-1`` (inner), ``f = 2**os``.

    Returns
    -------
    (..., 4**oversampling) int64 NEST indices at the fine order.
    """
    fine = _check_order(order + oversampling)
    f = 1 << oversampling
    ix, iy, face = nest_to_xyf(pix, order)
    jj, ii = np.meshgrid(np.arange(f), np.arange(f), indexing="ij")
    fi = (f * ix)[..., None] + ii.ravel()
    fj = (f * iy)[..., None] + jj.ravel()
    return xyf_to_nest(fi, fj, face[..., None], fine)


def oversampled_directions(
    pix: ArrayLike, order: int, oversampling: int = 1
) -> tuple[NDArray, NDArray]:
    """(rot, tilt) degrees of the HEALPix children of coarse pixels, shape (..., 4**os)."""
    if oversampling == 0:
        r, t = healpix_directions(order, pix)
        return r[..., None], t[..., None]
    return healpix_directions(order + oversampling, oversampled_direction_pixels(pix, order, oversampling))


def oversampled_psi(psi: ArrayLike, psi_step: float, oversampling: int = 1) -> NDArray:
    """Oversampled in-plane angles ``psi - step/2 + (k + 1/2) step / 2**os``, shape (..., 2**os).

    For ``oversampling = 1`` these are ``psi - step/4`` and ``psi + step/4`` (degrees, not
    wrapped, as RELION does for 3D sampling).
    """
    n = 1 << oversampling
    psi = np.asarray(psi, dtype=np.float64)[..., None]
    if oversampling == 0:
        return psi
    return psi - 0.5 * psi_step + (0.5 + np.arange(n)) * psi_step / n


def oversampled_orientations(
    pix: ArrayLike, psi: ArrayLike, order: int, psi_step: float, oversampling: int = 1
) -> tuple[NDArray, NDArray, NDArray]:
    """All ``8**os`` oversampled (rot, tilt, psi) of coarse (direction, psi) pairs.

    Parameters
    ----------
    pix, psi
        Broadcastable (...) coarse NEST pixels (at ``order``) and coarse psi (degrees).
    order, psi_step
        Coarse HEALPix order and psi step (degrees).
    oversampling
        Adaptive oversampling order.

    Returns
    -------
    rot, tilt, psi : (..., 8**os) degrees; HEALPix child outer, psi child inner (RELION's
    ``getOrientations`` order).
    """
    rot_c, tilt_c = oversampled_directions(pix, order, oversampling)  # (..., 4**os)
    psi_c = oversampled_psi(psi, psi_step, oversampling)  # (..., 2**os)
    shape = np.broadcast_shapes(rot_c.shape[:-1], psi_c.shape[:-1])
    nd, npsi = rot_c.shape[-1], psi_c.shape[-1]
    rot = np.broadcast_to(rot_c[..., :, None], shape + (nd, npsi)).reshape(shape + (nd * npsi,))
    tilt = np.broadcast_to(tilt_c[..., :, None], shape + (nd, npsi)).reshape(shape + (nd * npsi,))
    psi_o = np.broadcast_to(psi_c[..., None, :], shape + (nd, npsi)).reshape(shape + (nd * npsi,))
    return rot, tilt, psi_o


# ---------------------------------------------------------------------------------------
# Asymmetric unit (RELION HealpixSampling::removeSymmetryEquivalentPoints*)
# ---------------------------------------------------------------------------------------

def _unit(v: ArrayLike) -> NDArray[np.float64]:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# Boundary-plane normals of the asymmetric units, as in RELION's geometric rules. A direction
# is inside when its dot product with every normal has the required sign.
_I2_NORMALS = ((0.0, 1.0, 0.0),
               (-0.4999999839058737, -0.8090170074556163, 0.3090169861701543),
               (0.4999999839058737, -0.8090170074556163, 0.3090169861701543))
_I4_NORMALS = ((0.0, 0.0, 1.0),
               (0.187592467856686, -0.303530987314591, -0.491123477863004),
               (0.187592467856686, 0.303530987314591, -0.491123477863004))
_I3_TILT = 31.7174745559  # half the angle between adjacent 5-folds (deg)


def _planes(
    vectors: tuple[tuple[float, float, float], ...] | list[tuple[float, float, float]],
    rotate_tilt: float | None = None,
) -> NDArray[np.float64]:
    """Unit normals (n, 3), optionally premultiplied by ``A(0, rotate_tilt, 0)`` as RELION does."""
    out = np.array([_unit(v) for v in vectors])
    if rotate_tilt is not None:
        out = out @ euler_to_matrix(0.0, rotate_tilt, 0.0).T
    return out


def asymmetric_unit_mask(
    rot: ArrayLike, tilt: ArrayLike, sym: str | SymmetryGroup
) -> NDArray[np.bool_]:
    """RELION's geometric asymmetric-unit test per point group (first reduction step).

    Parameters
    ----------
    rot, tilt
        (n,) normalised directions in degrees (rot in [-180, 180], tilt in [0, 180]).
    sym
        Symmetry group.

    Returns
    -------
    (n,) bool, True for directions kept. Points on the border of the unit may be kept
    twice (e.g. rot = +-180/n for Cn); :func:`remove_symmetry_equivalent` removes those.
    """
    g = symmetry_group(sym)
    rot = np.asarray(rot, dtype=np.float64)
    tilt = np.asarray(tilt, dtype=np.float64)
    v = direction_vectors(rot, tilt)
    k, n = g.kind, g.n
    upper = tilt <= 90.0

    def all_pos(normals: NDArray, sign: float = 1.0) -> NDArray[np.bool_]:
        return np.all(sign * (v @ normals.T) >= 0.0, axis=-1)

    if k == "CN":
        return (rot >= -180.0 / n) & (rot <= 180.0 / n)
    if k in ("CI", "CS"):
        return upper
    if k == "CNV":
        return (rot >= 0.0) & (rot <= 180.0 / n)
    if k == "CNH":
        return (rot >= -180.0 / n) & (rot <= 180.0 / n) & upper
    if k == "SN":
        return (rot >= -180.0 * 2.0 / n) & (rot <= 180.0 * 2.0 / n) & upper
    if k == "DN":
        if n == 1:
            return upper
        return (rot >= -180.0 / n + 90.0) & (rot <= 180.0 / n + 90.0) & upper
    if k in ("DNV", "DNH"):
        return (rot >= 90.0) & (rot <= 180.0 / n + 90.0) & upper
    if k == "T":
        normals = _planes([(-0.942809, 0.0, 0.0), (0.471405, 0.272165, 0.7698),
                           (0.471404, 0.816497, 0.0)])
        return (((rot >= 90.0) & (rot <= 150.0)) | (rot == 0.0)) & all_pos(normals)
    if k == "TD":
        return all_pos(_planes([(-0.942809, 0.0, 0.0), (0.471405, 0.272165, 0.7698),
                                (0.0, 0.471405, -0.666667)]))
    if k == "TH":
        return all_pos(_planes([(-0.816496, 0.0, 0.0), (0.707107, 0.408248, -0.57735),
                                (-0.408248, -0.707107, 0.0)]))
    if k in ("O", "OH"):
        normals = _planes([(0.0, -1.0, 1.0), (1.0, 1.0, 0.0), (-1.0, 1.0, 0.0)])
        if k == "O":
            sector = ((rot >= 45.0) & (rot <= 135.0) & upper) | (rot == 0.0)
        else:
            sector = (rot >= 90.0) & (rot <= 135.0) & upper
        return sector & all_pos(normals)
    if k == "I2":
        return all_pos(_planes(_I2_NORMALS))
    if k == "I1":
        return all_pos(_planes(_I2_NORMALS, 90.0))
    if k == "I3":
        return all_pos(_planes(_I2_NORMALS, _I3_TILT))
    if k == "I4":
        return all_pos(_planes(_I4_NORMALS, -_I3_TILT), sign=-1.0)
    if k == "I2H":
        return all_pos(_planes(_I2_NORMALS[:2] + ((1.0, 0.0, 0.0),)))
    if k == "I1H":
        return all_pos(_planes(_I2_NORMALS[:2] + ((1.0, 0.0, 0.0),), 90.0))
    if k == "I3H":
        return all_pos(_planes(_I4_NORMALS, _I3_TILT)) & (v[..., 1] >= 0.0)
    if k == "I4H":
        return all_pos(_planes(_I4_NORMALS, -_I3_TILT), sign=-1.0) & (v[..., 1] >= 0.0)
    raise InputError(f"no asymmetric-unit rule for symmetry {g.name}")  # pragma: no cover


def remove_symmetry_equivalent(
    rot: ArrayLike, tilt: ArrayLike, sym: str | SymmetryGroup, max_angle_deg: float
) -> NDArray[np.bool_]:
    """Pairwise step: drop directions within ``max_angle_deg`` of a mate of a kept one.

    Directions are visited in order; direction ``i`` is kept unless some symmetry mate
    ``L_k R_k^T v_j`` of an already kept direction ``j`` has ``v_i . mate > cos(max_angle)``
    (identity included).

    Parameters
    ----------
    rot, tilt
        (n,) directions in degrees.
    sym
        Symmetry group.
    max_angle_deg
        Threshold angle (RELION: half the maximum pixel radius of the HEALPix grid).

    Returns
    -------
    (n,) bool, True for directions kept.
    """
    v = direction_vectors(rot, tilt)
    n = v.shape[0]
    cos_max = np.cos(max_angle_deg * _PI / 180.0)
    mates = direction_mates(v, sym)  # (n, K, 3)
    close = np.zeros((n, n), dtype=bool)  # close[i, j]: v_i near a mate of v_j
    for k in range(mates.shape[1]):
        close |= (v @ mates[:, k, :].T) > cos_max
    keep = np.zeros(n, dtype=bool)
    for i in range(n):
        keep[i] = not np.any(close[i, :i] & keep[:i])
    return keep


def limit_tilt_mask(tilt: ArrayLike, limit_tilt: float) -> NDArray[np.bool_]:
    """RELION's ``--limit_tilt``: L > 0 keeps side views (|tilt'| >= L), L < 0 top views.

    ``tilt'`` is tilt mapped to [-90, 90] (tilt - 180 above 90). |L| >= 90 keeps everything.
    """
    tilt = np.asarray(tilt, dtype=np.float64)
    if abs(limit_tilt) >= 90.0:
        return np.ones(tilt.shape, dtype=bool)
    t = np.abs(np.where(tilt > 90.0, tilt - 180.0, tilt))
    if limit_tilt > 0:
        return t >= abs(limit_tilt)
    return t <= abs(limit_tilt)


def asymmetric_unit_directions(
    order: int, sym: str | SymmetryGroup = "C1", *, limit_tilt: float = -91.0
) -> HealpixDirections:
    """The coarse HEALPix directions RELION samples for a symmetry group (spec 5.7).

    All NEST pixels of ``order`` -> geometric asymmetric-unit rule -> pairwise removal of
    symmetry-equivalent directions (threshold ``0.5 * max_pixrad``; only when fewer than
    4000 directions remain) -> optional ``--limit_tilt`` filter. Order is RELION's.

    Parameters
    ----------
    order
        HEALPix order (0..13).
    sym
        Symmetry group name or object.
    limit_tilt
        RELION's ``--limit_tilt`` in degrees (default -91: no limit).

    Returns
    -------
    HealpixDirections with ``pix``, ``rot``, ``tilt`` (n,) and ``order``.
    """
    order = _check_order(order)
    g = symmetry_group(sym)
    pix = np.arange(healpix_npix(order), dtype=np.int64)
    rot, tilt = healpix_directions(order, pix)
    keep = asymmetric_unit_mask(rot, tilt, g)
    pix, rot, tilt = pix[keep], rot[keep], tilt[keep]
    if pix.size < _PAIRWISE_LIMIT:
        max_angle = 0.5 * healpix_max_pixrad(order) * 180.0 / _PI
        keep = remove_symmetry_equivalent(rot, tilt, g, max_angle)
        pix, rot, tilt = pix[keep], rot[keep], tilt[keep]
    keep = limit_tilt_mask(tilt, limit_tilt)
    return HealpixDirections(pix[keep], rot[keep], tilt[keep], order)
