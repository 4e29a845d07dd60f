"""relion_postprocess's phase randomisation (``randomizePhasesBeyond``), draw for draw.

RELION seeds glibc's ``rand()`` with ``--random_seed`` (default 0) and, for each half map in
turn, walks its FFTW half transform in memory order (z, y, x with x >= 0), giving every
element with ``kz^2 + ky^2 + kx^2 >= index^2`` (index: the first shell where the unmasked FSC
< 0.8) the phase ``rnd_unif(0, 2 pi)`` (single precision) and keeping its amplitude.
:class:`~processing.glibc_random.GlibcRandom` reproduces that stream, so the phase-randomised
maps, and with them RELION's ``rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps``,
are reproduced, not only matched statistically.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from processing.fourier.fft import half_frequencies, irfftn, rfftn
from processing.glibc_random import RAND_MAX, GlibcRandom

__all__ = ["relion_random_phases", "randomize_phases_beyond"]


def relion_random_phases(generator: GlibcRandom, count: int) -> NDArray[np.float64]:
    """The next ``count`` values of RELION's ``rnd_unif(0, 2*pi)`` (float32 arithmetic,
    returned as float64 radians), ``(count,)``."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    draws = np.fromiter((generator.rand() for _ in range(count)), dtype=np.int64, count=count)
    span = np.float32(np.float32(2.0 * np.pi) - np.float32(0.0))
    scale = np.float32(np.float32(RAND_MAX) / span)
    return (np.float32(0.0) + draws.astype(np.float32) / scale).astype(np.float64)


def randomize_phases_beyond(volume: ArrayLike, *, index: int, generator: GlibcRandom) -> NDArray[np.float64]:
    """RELION's ``randomizePhasesBeyond(v, index)`` on a cubic map.

    Parameters
    ----------
    volume
        ``(N, N, N)`` real map (indexed ``[z, y, x]``, as read from the MRC file).
    index
        Fourier radius (in Fourier voxels, compared un-rounded as ``|k|^2 >= index^2``) from
        which the phases are replaced.
    generator
        RELION's ``rand()`` stream, advanced by one draw per randomised element.

    Returns
    -------
    ``(N, N, N)`` float64 map with the same amplitudes and random phases beyond ``index``.
    """
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ValueError(f"expected a cubic map, got shape {vol.shape}")
    n = vol.shape[0]
    f = rfftn(vol, ndim=3)
    kz, ky, kx = half_frequencies(n, ndim=3)
    sel = (kz * kz + ky * ky + kx * kx) >= index * index
    # Boolean indexing visits the elements in C (memory) order: RELION's loop order.
    phase = relion_random_phases(generator, int(sel.sum()))
    f[sel] = np.abs(f[sel]) * (np.cos(phase) + 1j * np.sin(phase))
    return irfftn(f, size=n, ndim=3)
