"""Tilt-series projection matrices and particle pose composition (spec 1.3, 2.2, 2.3).

Coordinates: tomogram positions are in tilt-series pixels ("ts-px"), origin at the tomogram
corner; tilt-image positions are in ts-px with the origin at the first pixel. Vectors are
(x, y, z) ordered.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .euler import euler_to_matrix, rotation_x, rotation_y, rotation_z

__all__ = [
    "tilt_projection_matrices",
    "tomogram_centre",
    "particle_positions",
    "centred_angstrom_from_position",
    "particle_rotations",
    "projection_depth",
]


def tilt_projection_matrices(
    x_tilt: ArrayLike,
    y_tilt: ArrayLike,
    z_rot: ArrayLike,
    x_shift_angst: ArrayLike,
    y_shift_angst: ArrayLike,
    *,
    tomogram_size: tuple[int, int, int],
    image_size: tuple[int, int],
    pixel_size: float,
) -> NDArray[np.float64]:
    """Projection matrices of a tilt series, as RELION 5 builds them from the alignment.

    Parameters
    ----------
    x_tilt, y_tilt, z_rot
        ``rlnTomoXTilt``, ``rlnTomoYTilt``, ``rlnTomoZRot`` per tilt (degrees), shape (n_tilts,).
    x_shift_angst, y_shift_angst
        ``rlnTomoXShiftAngst``, ``rlnTomoYShiftAngst`` per tilt (Å), shape (n_tilts,).
    tomogram_size
        ``(rlnTomoSizeX, rlnTomoSizeY, rlnTomoSizeZ)`` in ts-px.
    image_size
        Tilt-image ``(width, height)`` in pixels.
    pixel_size
        ``rlnTomoTiltSeriesPixelSize`` in Å.

    Returns
    -------
    (n_tilts, 4, 4) float64: rows 0 and 1 give image x and y (ts-px), row 2 the depth.
    """
    x_tilt, y_tilt, z_rot, sx, sy = (
        np.atleast_1d(np.asarray(v, dtype=np.float64))
        for v in (x_tilt, y_tilt, z_rot, x_shift_angst, y_shift_angst)
    )
    rotation = rotation_z(z_rot) @ rotation_y(y_tilt) @ rotation_x(x_tilt)
    specimen_centre = np.array([int(s // 2) for s in tomogram_size], dtype=np.float64)
    image_centre = np.array([int(image_size[0] // 2), int(image_size[1] // 2), 0.0])
    shift = np.stack([sx, sy, np.zeros_like(sx)], axis=-1) / pixel_size
    translation = -(rotation @ specimen_centre) + image_centre + shift
    out = np.zeros(rotation.shape[:-2] + (4, 4))
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def tomogram_centre(tomogram_size: tuple[float, float, float]) -> NDArray[np.float64]:
    """Tomogram centre (ts-px) used for centred particle coordinates: Size/2 as floats."""
    return np.asarray(tomogram_size, dtype=np.float64) / 2.0


def particle_rotations(
    angles: ArrayLike, subtomogram_angles: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Particle-to-tomogram rotations ``R = A_sub @ A_part`` (spec 2.2).

    Parameters
    ----------
    angles
        (n, 3) ``rlnAngleRot/Tilt/Psi`` in degrees.
    subtomogram_angles
        (n, 3) ``rlnTomoSubtomogramRot/Tilt/Psi``; identity when None.

    Returns
    -------
    (n, 3, 3) float64.
    """
    angles = np.atleast_2d(np.asarray(angles, dtype=np.float64))
    a_part = euler_to_matrix(angles[:, 0], angles[:, 1], angles[:, 2])
    if subtomogram_angles is None:
        return a_part
    sub = np.atleast_2d(np.asarray(subtomogram_angles, dtype=np.float64))
    return euler_to_matrix(sub[:, 0], sub[:, 1], sub[:, 2]) @ a_part


def particle_positions(
    centred_angst: ArrayLike,
    *,
    tomogram_size: tuple[float, float, float],
    pixel_size: float,
    origin_angst: ArrayLike | None = None,
    subtomogram_angles: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Decentred particle positions in ts-px, with origins applied (spec 2.3).

    ``p = centred / px + Size/2 - A_sub @ origin / px``; origins live in the subtomogram frame.

    Parameters
    ----------
    centred_angst
        (n, 3) ``rlnCenteredCoordinateX/Y/ZAngst``.
    tomogram_size
        ``(rlnTomoSizeX, Y, Z)`` in ts-px.
    pixel_size
        Tilt-series pixel size in Å.
    origin_angst
        (n, 3) ``rlnOriginX/Y/ZAngst`` or None for zero.
    subtomogram_angles
        (n, 3) ``rlnTomoSubtomogramRot/Tilt/Psi`` or None for identity.

    Returns
    -------
    (n, 3) float64 positions in ts-px.
    """
    centred = np.atleast_2d(np.asarray(centred_angst, dtype=np.float64))
    position = centred / pixel_size + tomogram_centre(tomogram_size)
    if origin_angst is not None:
        origin = np.atleast_2d(np.asarray(origin_angst, dtype=np.float64)) / pixel_size
        if subtomogram_angles is not None:
            sub = np.atleast_2d(np.asarray(subtomogram_angles, dtype=np.float64))
            origin = np.einsum("nij,nj->ni", euler_to_matrix(sub[:, 0], sub[:, 1], sub[:, 2]), origin)
        position = position - origin
    return position


def centred_angstrom_from_position(
    position: ArrayLike, *, tomogram_size: tuple[float, float, float], pixel_size: float
) -> NDArray[np.float64]:
    """Inverse of :func:`particle_positions` without origins: (p - Size/2) * px, (n, 3) Å."""
    return (np.asarray(position, dtype=np.float64) - tomogram_centre(tomogram_size)) * pixel_size


def projection_depth(projection: ArrayLike, position: ArrayLike) -> NDArray[np.float64]:
    """Depth (row 2 of ``P @ p``) of ts-px positions, shape broadcast of (t,) x (n,) -> (t, n)."""
    P = np.asarray(projection, dtype=np.float64)
    p = np.atleast_2d(np.asarray(position, dtype=np.float64))
    return np.einsum("tj,nj->tn", P[..., 2, :3], p) + P[..., 2, 3][:, None]
