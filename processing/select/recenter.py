"""Re-centring particles on a point of the reference, as ``relion_star_handler --center
--center_X x --center_Y y --center_Z z`` does it (``center()``, src/apps/star_handler.cpp of
RELION 5).

The point c = (x, y, z) is given in pixels of the particle images, relative to the box centre
of the reference. For each particle with Euler angles (rot, tilt, psi) and ``A = A(rot, tilt,
psi)`` (reference -> particle frame, spec 2.1), RELION sets

    origin_new = origin - A · c · angpix          (Å, rlnOriginX/Y/ZAngst)

with angpix the optics group's pixel size (``rlnImagePixelSize``, else
``rlnMicrographPixelSize``, ``rlnMicrographOriginalPixelSize``, ``rlnTomoTiltSeriesPixelSize``,
the order of RELION's ObservationModel). Only the origins change; the coordinates stay. Since a
reference point r lies in the tomogram at ``p + A_sub·A·r`` and the particle centre at
``p = p0 - A_sub·origin`` (spec 2.3), the new centre is exactly where c of the reference was:
the next extraction, which folds the origins into the coordinates, centres the boxes on it.

RELION refuses a table without ``rlnOriginX/YAngst`` and leaves ``rlnOriginZAngst`` out when it
is absent; here absent origin columns count as zero and all three are written.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from processing.errors import InputError
from processing.geometry.euler import euler_to_matrix
from processing.io.particles import ParticleSet
from processing.io.star import numeric_column

__all__ = ["PIXEL_SIZE_LABELS", "image_pixel_sizes", "recenter"]

#: Where RELION's ObservationModel finds the pixel size of an optics group, in order.
PIXEL_SIZE_LABELS = ("rlnImagePixelSize", "rlnMicrographPixelSize", "rlnMicrographOriginalPixelSize",
                     "rlnTomoTiltSeriesPixelSize")

ORIGINS = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")


def image_pixel_sizes(particles: ParticleSet) -> NDArray[np.float64]:
    """Pixel size (Å) of each particle's images, (n,), from its optics group.

    Raises
    ------
    InputError
        No optics table, no pixel-size column in it, a non-positive size, or a particle whose
        optics group is not in the table.
    """
    if particles.optics is None:
        raise InputError("table data_optics not found: the pixel size of the particles is needed",
                         file=particles.path, table="optics")
    label = next((c for c in PIXEL_SIZE_LABELS if c in particles.optics.columns), None)
    if label is None:
        raise InputError(f"no pixel size column ({', '.join(PIXEL_SIZE_LABELS)})", file=particles.path,
                         table="optics", column=PIXEL_SIZE_LABELS[0])
    sizes = particles.optics_column(label)
    bad = ~(sizes > 0)
    if bad.any():
        raise InputError(f"pixel size must be > 0 Å (got {sizes[bad][0]!r})", file=particles.path,
                         table="optics", column=label)
    return sizes


def recenter(particles: ParticleSet, centre_px: ArrayLike) -> ParticleSet:
    """A copy of ``particles`` with origins moved onto the reference point ``centre_px``.

    Parameters
    ----------
    particles
        The particle set (angles ``rlnAngleRot/Tilt/Psi`` in degrees, absent = 0).
    centre_px
        (3,) point (x, y, z) of the reference, pixels of the particle images from the box centre.

    Returns
    -------
    ParticleSet
        Same rows, columns and blocks; ``rlnOriginX/Y/ZAngst`` = origin - A·c·angpix (Å).

    Raises
    ------
    InputError
        Non-numeric angles or origins, or no usable pixel size (see :func:`image_pixel_sizes`).
    """
    c = np.asarray(centre_px, dtype=np.float64).reshape(3)
    table = particles.particles.copy()
    where = {"file": particles.path, "table": "particles"}
    angles = [numeric_column(table, label, default=0.0, finite=True, **where)
              for label in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")]
    origins = np.stack([numeric_column(table, label, default=0.0, finite=True, **where) for label in ORIGINS], axis=1)
    shift = np.einsum("nij,j->ni", euler_to_matrix(*angles), c) * image_pixel_sizes(particles)[:, None]
    for k, label in enumerate(ORIGINS):
        table[label] = origins[:, k] - shift[:, k]
    return ParticleSet(table, particles.optics, particles.general, extra_blocks=particles.extra_blocks,
                       path=particles.path)
