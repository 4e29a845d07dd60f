"""A particle set restricted to some of its rows (all columns and blocks kept)."""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from processing.io.particles import ParticleSet

__all__ = ["subset"]


def subset(particles: ParticleSet, keep: ArrayLike) -> ParticleSet:
    """The rows of ``particles`` where ``keep`` is true, in their order.

    Parameters
    ----------
    particles
        The set; its optics table, ``data_general`` block and other blocks are copied as they are.
    keep
        (n,) booleans, one per particle row.

    Returns
    -------
    ParticleSet
        A new set (the input is not changed).
    """
    mask = np.asarray(keep, dtype=bool)
    if mask.shape != (len(particles),):
        raise ValueError(f"keep has shape {mask.shape}, expected ({len(particles)},)")
    return ParticleSet(particles.particles.loc[mask], particles.optics, particles.general,
                       extra_blocks=particles.extra_blocks, path=particles.path)
