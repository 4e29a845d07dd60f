"""RELION Euler angles (ZYZ, rot-tilt-psi) and rotation matrices (spec 2.1).

``A = euler_to_matrix(rot, tilt, psi)`` maps reference coordinates to observation
coordinates, ``x_image = A @ x_ref``; equivalently ``A = (Rz(rot) Ry(tilt) Rz(psi))^T`` with
active right-handed rotations. All angles are in degrees.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "euler_to_matrix",
    "matrix_to_euler",
    "rotation_x",
    "rotation_y",
    "rotation_z",
    "angle_between_rotations",
]

# RELION switches to the gimbal-lock branch below this value of sqrt(A02^2 + A12^2).
_GIMBAL_EPS = 16 * np.finfo(np.float32).eps


def euler_to_matrix(rot: ArrayLike, tilt: ArrayLike, psi: ArrayLike) -> NDArray[np.float64]:
    """RELION rotation matrices from Euler angles.

    Parameters
    ----------
    rot, tilt, psi
        Angles in degrees; any broadcastable shapes ``(...)``.

    Returns
    -------
    (..., 3, 3) float64 array ``A``.
    """
    a, b, g = np.broadcast_arrays(
        *(np.deg2rad(np.asarray(v, dtype=np.float64)) for v in (rot, tilt, psi))
    )
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    out = np.empty(a.shape + (3, 3))
    out[..., 0, 0] = cg * cc - sg * sa
    out[..., 0, 1] = cg * cs + sg * ca
    out[..., 0, 2] = -cg * sb
    out[..., 1, 0] = -sg * cc - cg * sa
    out[..., 1, 1] = -sg * cs + cg * ca
    out[..., 1, 2] = sg * sb
    out[..., 2, 0] = sc
    out[..., 2, 1] = ss
    out[..., 2, 2] = cb
    return out


def matrix_to_euler(matrix: ArrayLike) -> tuple[NDArray, NDArray, NDArray]:
    """Euler angles (degrees) from RELION rotation matrices, with RELION's branch rules.

    Parameters
    ----------
    matrix
        (..., 3, 3) rotation matrices.

    Returns
    -------
    rot, tilt, psi : arrays of shape (...), rot and psi in (-180, 180], tilt in [0, 180].
    """
    A = np.asarray(matrix, dtype=np.float64)
    a02, a12, a22 = A[..., 0, 2], A[..., 1, 2], A[..., 2, 2]
    a20, a21 = A[..., 2, 0], A[..., 2, 1]
    a00, a10 = A[..., 0, 0], A[..., 1, 0]
    sin_tilt = np.sqrt(a02**2 + a12**2)
    regular = sin_tilt > _GIMBAL_EPS

    psi_r = np.arctan2(a12, -a02)
    rot_r = np.arctan2(a21, a20)
    # psi = atan2(A12, -A02) puts sin(psi) on the sign of A12, so RELION's sign rule for
    # sin(tilt) always picks the positive root: tilt lies in [0, 180].
    tilt_r = np.arctan2(sin_tilt, a22)

    upright = a22 > 0
    rot_g = np.zeros_like(a22)
    tilt_g = np.where(upright, 0.0, np.pi)
    psi_g = np.where(upright, np.arctan2(-a10, a00), np.arctan2(a10, -a00))

    rot = np.rad2deg(np.where(regular, rot_r, rot_g))
    tilt = np.rad2deg(np.where(regular, tilt_r, tilt_g))
    psi = np.rad2deg(np.where(regular, psi_r, psi_g))
    return _wrap180(rot), tilt, _wrap180(psi)


def _wrap180(angle: NDArray) -> NDArray:
    """Wrap degrees into (-180, 180]."""
    wrapped = np.mod(angle + 180.0, 360.0) - 180.0
    return np.where(wrapped == -180.0, 180.0, wrapped)


def rotation_x(angle_deg: ArrayLike) -> NDArray[np.float64]:
    """Active right-handed rotation about X, (..., 3, 3)."""
    a = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def rotation_y(angle_deg: ArrayLike) -> NDArray[np.float64]:
    """Active right-handed rotation about Y, (..., 3, 3)."""
    a = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def rotation_z(angle_deg: ArrayLike) -> NDArray[np.float64]:
    """Active right-handed rotation about Z, (..., 3, 3)."""
    a = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def angle_between_rotations(a: ArrayLike, b: ArrayLike) -> NDArray[np.float64]:
    """Geodesic angle (degrees) between rotation matrices ``a`` and ``b`` (broadcasting)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    trace = np.einsum("...ij,...ij->...", a, b)
    return np.rad2deg(np.arccos(np.clip((trace - 1.0) / 2.0, -1.0, 1.0)))
