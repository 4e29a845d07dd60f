"""The Fourier pixels a refinement iteration works with (spec 5.5, 5.6).

RELION windows each image's half transform to the current (or coarse) size ``s``: rows
``ky`` in ``[-s/2+1, s/2]`` (and planes ``kz`` likewise for 3D data), columns ``kx`` in
``[0, s/2]``. Of those it uses the pixels of ``Mresol``: shell ``round(|k|) <= s/2``, without
the half of the ``kx = 0`` column (``ky < 0``) that FFTW stores twice
(``MlOptimiser::updateImageSizeAndResolutionPointers``). Shell 0 stays in the set for the noise
sums; the likelihood gives it no weight (``1/sigma^2 = 0`` there), which makes it invariant to
additive offsets. The reference projection fills only the pixels with ``|k| <= s/2``
(``Projector::project``), so the rest of shell ``s/2`` is scored against zero
(``EStepContext.projected``). Back-projection inserts the window's pixels that land within
the model's current radius (``BackProjector::backproject2Dto3D``), flagged by
:attr:`FrequencySet.inserted`:
``|k| <= s/2`` on the model's own grid; an optics group with another box or pixel size adds the
window's corners that map inside it, which only back-projection uses (``measured`` is False).
3D data also leave out the ``kz < 0`` half of the ``kx = 0`` plane from back-projection
(``BackProjector::backrotate3D``). RELION's accelerated code on the CPU (``--cpu``) inserts
fewer pixels of 2D images: those with ``(kx + 1)² + ky² <= (s/2)²`` (``trim_rows``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
from numpy.typing import NDArray

__all__ = ["FrequencySet", "frequency_set", "frequency_set_3d", "pixels_per_shell", "highres_pixels",
           "cross_correlation_pixels"]


@dataclass(frozen=True, eq=False)
class FrequencySet:
    """Flat list of half-transform pixels of an ``ori``-box image used at image ``size``.

    flat: (K,) indices into the flattened ``(ori, ori//2+1)`` (or ``(ori, ori, ori//2+1)``)
    array; kx, ky (, kz): (K,) float64 frequencies in pixels; shell: (K,) int ``round(|k|)``
    (``0 .. size/2`` for the measured pixels); inserted: (K,) bool, the back-projected pixels;
    measured: (K,) bool, the pixels of RELION's ``Mresol`` (shell ``<= size/2``), which the
    likelihood and the noise, scale and multiplicity sums use.
    """

    ori: int
    size: int
    flat: NDArray[np.int64]
    kx: NDArray[np.float64]
    ky: NDArray[np.float64]
    kz: NDArray[np.float64] | None
    shell: NDArray[np.int64]
    inserted: NDArray[np.bool_]
    measured: NDArray[np.bool_]

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

    @cached_property
    def axis_values(self) -> tuple[tuple[NDArray[np.float64], NDArray[np.int64]], ...]:
        """Per axis (x, y, and z for 3D): the distinct integer frequencies (a few dozen) and
        each pixel's index among them, so that a separable function of k (a phase shift) is
        computed once per distinct value and gathered."""
        axes = (self.kx, self.ky) if self.kz is None else (self.kx, self.ky, self.kz)
        return tuple(np.unique(k, return_inverse=True) for k in axes)

    @cached_property
    def scored(self) -> NDArray[np.bool_]:
        """(K,) pixels that enter the likelihood (measured, shell >= 1)."""
        return (self.shell >= 1) & self.measured


def _logical(n: int) -> NDArray[np.int64]:
    """FFTW's logical frequencies of an axis of length ``n``: 0 .. n/2, then -n/2+1 .. -1."""
    i = np.arange(n)
    return np.where(i <= n // 2, i, i - n)


@dataclass(frozen=True, eq=False)
class _HalfGrid:
    """Every pixel of a full half transform (``ori`` box, 2D or 3D), flattened: logical
    frequencies ``k`` (kz, ky, kx or ky, kx), radius, RELION shell ``round(|k|)`` and the
    mask without the redundant half (``kx == 0, ky < 0``) of the x = 0 column."""

    k: tuple[NDArray[np.int64], ...]
    radius: NDArray[np.float64]
    shell: NDArray[np.int64]
    non_redundant: NDArray[np.bool_]


@lru_cache(maxsize=16)
def _half_grid(ori: int, ndim: int) -> _HalfGrid:
    axes = [_logical(ori)] * (ndim - 1) + [np.arange(ori // 2 + 1)]
    k = tuple(a.ravel() for a in np.meshgrid(*axes, indexing="ij"))
    radius = np.sqrt(sum(a.astype(np.float64) ** 2 for a in k))
    return _HalfGrid(k, radius, np.floor(radius + 0.5).astype(np.int64), ~((k[-1] == 0) & (k[-2] < 0)))


def _window(grid: _HalfGrid, size: int) -> NDArray[np.bool_]:
    """The pixels of ``grid`` in RELION's window of image size ``size``: ``kx`` in
    ``[0, size/2]``, the other axes in ``[-size/2+1, size/2]``."""
    half = size // 2
    window = grid.k[-1] <= half
    for a in grid.k[:-1]:
        window &= (a > -half) & (a <= half)
    return window


def _build(ori: int, size: int, ndim: int, insert_radius: float | None, trim_rows: bool = False) -> FrequencySet:
    grid = _half_grid(ori, ndim)
    half = size // 2
    window = grid.non_redundant & _window(grid, size)
    measured = grid.shell <= half
    inserted = grid.radius <= (half if insert_radius is None else insert_radius)
    if trim_rows:
        # RELION's accelerated CPU kernel (backprojectRef3D) runs x over [0, int(sqrt(h² - y²))).
        # (It implies |k| < s/2, so every such pixel is also scored.)
        inserted &= (grid.k[-1] + 1) ** 2 + grid.k[-2] ** 2 <= half * half
    if ndim == 3:
        # RELION's backrotate3D also skips the kz < 0 half of the kx = 0 plane, so with the
        # ky < 0 half gone too, a quarter of that plane is never back-projected.
        inserted &= ~((grid.k[-1] == 0) & (grid.k[0] < 0))
    flat = np.flatnonzero(window & (measured | inserted))
    kf = [a[flat].astype(np.float64) for a in grid.k]
    return FrequencySet(
        ori, size, flat, kf[-1], kf[-2], kf[0] if ndim == 3 else None, grid.shell[flat], inserted[flat],
        measured[flat],
    )


@lru_cache(maxsize=64)
def frequency_set(ori: int, size: int, insert_radius: float | None = None, *, trim_rows: bool = False
                  ) -> FrequencySet:
    """Pixels of a 2D half transform of box ``ori`` windowed to image size ``size`` (even);
    back-projection inserts those with ``|k| <= insert_radius`` (default ``size/2``), and with
    ``trim_rows`` only those with ``(kx + 1)² + ky² <= (size/2)²`` among them (RELION's
    accelerated code on the CPU, ``--cpu``)."""
    return _build(ori, size, 2, insert_radius, trim_rows)


@lru_cache(maxsize=64)
def frequency_set_3d(ori: int, size: int, insert_radius: float | None = None) -> FrequencySet:
    """As :func:`frequency_set` for a 3D half transform ``(ori, ori, ori//2+1)``."""
    return _build(ori, size, 3, insert_radius)


@lru_cache(maxsize=32)
def cross_correlation_pixels(ori: int, size: int, ndim: int) -> tuple[FrequencySet, NDArray[np.int64]]:
    """The pixels of RELION's first-iteration cross-correlation at image size ``size``
    (``MlOptimiser::getAllSquaredDifferences``): the reference projection's, ``|k| <= size/2``
    in the window with the origin and both halves of the ``kx = 0`` column (every element of
    the projected array), and, for each image's norm, every pixel of the window (flat indices
    into the ``ori`` half transform)."""
    grid = _half_grid(ori, ndim)
    window = _window(grid, size)
    flat = np.flatnonzero(window & (grid.radius <= size // 2))
    kf = [a[flat].astype(np.float64) for a in grid.k]
    ones = np.ones(flat.size, dtype=bool)
    pixels = FrequencySet(ori, size, flat, kf[-1], kf[-2], kf[0] if ndim == 3 else None, grid.shell[flat],
                          ~ones, ones)
    return pixels, np.flatnonzero(window)


@lru_cache(maxsize=16)
def pixels_per_shell(ori: int, ndim: int) -> NDArray[np.float64]:
    """RELION's ``Npix_per_shell`` ``(ori//2+1,)``: non-redundant pixels of the full half
    transform per shell ``round(|k|) <= ori/2`` (no window)."""
    grid = _half_grid(ori, ndim)
    keep = (grid.shell <= ori // 2) & grid.non_redundant
    return np.bincount(grid.shell[keep], minlength=ori // 2 + 1).astype(np.float64)


@lru_cache(maxsize=64)
def highres_pixels(ori: int, size: int, ndim: int) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Flat indices and shells of the full half transform's pixels beyond image size ``size``:
    shells ``size/2+1 .. ori/2``, non-redundant; their power fills the noise sums there."""
    grid = _half_grid(ori, ndim)
    keep = (grid.shell >= size // 2 + 1) & (grid.shell <= ori // 2) & grid.non_redundant
    flat = np.flatnonzero(keep)
    return flat, grid.shell[flat]
