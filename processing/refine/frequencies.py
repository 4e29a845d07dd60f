"""The Fourier pixels a refinement iteration works with (spec 5.5, 5.6).

Only half-transform pixels with shell ``1 <= round(|k|)`` and ``|k| < size/2`` are used: the
image is "windowed" to the current (or coarse) size, and shell 0 is left out so that the
likelihood ignores additive offsets.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from numpy.typing import NDArray

__all__ = ["FrequencySet", "frequency_set", "frequency_set_3d"]


@dataclass(frozen=True, eq=False)
class FrequencySet:
    """Flat list of half-transform pixels of an ``ori``-box image used at image ``size``.

    flat: (K,) indices into the flattened ``(ori, ori//2+1)`` (or ``(ori, ori, ori//2+1)``)
    array; kx, ky (, kz): (K,) float64 frequencies in pixels; shell: (K,) int ``round(|k|)``.
    """

    ori: int
    size: int
    flat: NDArray[np.int64]
    kx: NDArray[np.float64]
    ky: NDArray[np.float64]
    kz: NDArray[np.float64] | None
    shell: NDArray[np.int64]

    @property
    def n(self) -> int:
        return int(self.flat.size)

    @cached_property
    def radius_max(self) -> float:
        """Largest |k| in the set (px)."""
        k2 = self.kx**2 + self.ky**2 + (0.0 if self.kz is None else self.kz**2)
        return float(np.sqrt(k2.max())) if self.n else 0.0

    @cached_property
    def kx32(self) -> NDArray[np.float32]:
        return self.kx.astype(np.float32)

    @cached_property
    def ky32(self) -> NDArray[np.float32]:
        return self.ky.astype(np.float32)


def _logical(n: int) -> NDArray[np.int64]:
    i = np.arange(n)
    return np.where(i <= n // 2, i, i - n)


@lru_cache(maxsize=64)
def frequency_set(ori: int, size: int) -> FrequencySet:
    """Pixels of a 2D half transform of box ``ori`` inside radius ``size/2`` (shell >= 1)."""
    ky = _logical(ori)[:, None].astype(np.float64)
    kx = np.arange(ori // 2 + 1, dtype=np.float64)[None, :]
    r = np.sqrt(kx * kx + ky * ky)
    shell = np.rint(r).astype(np.int64)
    keep = (r < size / 2.0) & (shell >= 1)
    flat = np.flatnonzero(keep)
    kxb, kyb = np.broadcast_arrays(kx, ky)
    return FrequencySet(ori, size, flat, kxb.ravel()[flat].copy(), kyb.ravel()[flat].copy(), None,
                        shell.ravel()[flat].copy())


@lru_cache(maxsize=64)
def frequency_set_3d(ori: int, size: int) -> FrequencySet:
    """As :func:`frequency_set` for a 3D half transform ``(ori, ori, ori//2+1)``."""
    kz = _logical(ori)[:, None, None].astype(np.float64)
    ky = _logical(ori)[None, :, None].astype(np.float64)
    kx = np.arange(ori // 2 + 1, dtype=np.float64)[None, None, :]
    r = np.sqrt(kx * kx + ky * ky + kz * kz)
    shell = np.rint(r).astype(np.int64)
    keep = (r < size / 2.0) & (shell >= 1)
    flat = np.flatnonzero(keep)
    kxb, kyb, kzb = np.broadcast_arrays(kx, ky, kz)
    return FrequencySet(ori, size, flat, kxb.ravel()[flat].copy(), kyb.ravel()[flat].copy(),
                        kzb.ravel()[flat].copy(), shell.ravel()[flat].copy())
