"""Geometry: RELION Euler angles, tilt projection matrices, symmetry groups, HEALPix and
pose sampling (spec 1.3, 2.1-2.3, 5.5, 5.7, 5.8, 6)."""
from __future__ import annotations

from . import euler, healpix, projection, sampling, symmetry
from .euler import *  # noqa: F401,F403
from .healpix import *  # noqa: F401,F403
from .projection import *  # noqa: F401,F403
from .sampling import *  # noqa: F401,F403
from .symmetry import *  # noqa: F401,F403

__all__ = (
    list(euler.__all__)
    + list(projection.__all__)
    + list(symmetry.__all__)
    + list(healpix.__all__)
    + list(sampling.__all__)
)
