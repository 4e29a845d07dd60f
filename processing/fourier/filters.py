"""Raised-cosine Fourier filters (RELION's low-pass forms).

Radii are in Fourier pixels of the box (shell ``i`` <-> ``i / (N*px)`` Å⁻¹), measured as the
un-rounded ``|k|`` of each half-transform element.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from processing.fourier.fft import half_radius, irfft_centered, rfft_centered

__all__ = [
    "raised_cosine_lowpass_weights",
    "lowpass_filter",
    "lowpass_filter_relion",
    "initial_lowpass_weights",
    "initial_lowpass",
]


def raised_cosine_lowpass_weights(
    size: int, *, ndim: int, radius: float, edge_width: float = 2.0
) -> NDArray[np.float64]:
    """Low-pass weights on a half transform.

    1 for ``|k| < radius - edge_width/2``, 0 for ``|k| > radius + edge_width/2``, and
    ``0.5 + 0.5*cos(pi*(|k| - lo)/edge_width)`` in between (``lo = radius - edge_width/2``).

    Returns ``(N, N//2+1)`` or ``(N, N, N//2+1)`` float64.
    """
    if edge_width < 0:
        raise ValueError(f"edge_width must be >= 0, got {edge_width}")
    r = half_radius(size, ndim=ndim)
    lo = radius - edge_width / 2
    hi = radius + edge_width / 2
    if edge_width == 0:
        return (r <= radius).astype(np.float64)
    w = 0.5 + 0.5 * np.cos(np.pi * (r - lo) / edge_width)
    return np.where(r < lo, 1.0, np.where(r > hi, 0.0, w))


def _apply(array: ArrayLike, weights_fn) -> NDArray[np.float64]:
    a = np.asarray(array, dtype=np.float64)
    if a.ndim not in (2, 3) or len(set(a.shape)) != 1:
        raise ValueError(f"expected a square image or cubic map, got shape {a.shape}")
    n, nd = a.shape[0], a.ndim
    f = rfft_centered(a, ndim=nd) * weights_fn(n, nd)
    return irfft_centered(f, size=n, ndim=nd)


def lowpass_filter(
    array: ArrayLike, *, radius: float, edge_width: float = 2.0
) -> NDArray[np.float64]:
    """Low-pass a square image or cubic map with :func:`raised_cosine_lowpass_weights`."""
    return _apply(array, lambda n, nd: raised_cosine_lowpass_weights(n, ndim=nd, radius=radius, edge_width=edge_width))


def lowpass_filter_relion(
    array: ArrayLike, *, resolution: float, pixel_size: float, edge_width: int = 2
) -> NDArray[np.float64]:
    """RELION's ``lowPassFilterMap`` of a square image or cubic map: shell
    ``i = round(N*px/resolution)``, a raised cosine from ``max(0, i - edge_width//2)`` to
    ``i + edge_width//2`` shells (the upper end is not clipped at Nyquist: RELION does not, and
    relion_mask_create's masks near Nyquist match only so; tests/test_maskcreate.py)."""
    if resolution <= 0 or pixel_size <= 0:
        raise ValueError("resolution and pixel_size must be > 0")

    def weights(n: int, nd: int) -> NDArray[np.float64]:
        i = int(np.floor(n * pixel_size / resolution + 0.5))
        lo = max(0.0, float(i - edge_width // 2))
        hi = float(i + edge_width // 2)
        return raised_cosine_lowpass_weights(n, ndim=nd, radius=(lo + hi) / 2, edge_width=hi - lo)

    return _apply(array, weights)


def initial_lowpass_weights(size: int, *, resolution: float, pixel_size: float, ndim: int = 3) -> NDArray[np.float64]:
    """relion_refine's initial low-pass of the reference (``--ini_high``).

    ``r0 = N*px/resolution - 1`` shells: weight 1 for ``|k| < r0``, 0 for ``|k| > r0 + 2``,
    ``0.5 - 0.5*cos(pi*(r0 + 2 - |k|)/2)`` in between. Half-transform shape.
    """
    if resolution <= 0 or pixel_size <= 0:
        raise ValueError("resolution and pixel_size must be > 0")
    r0 = size * pixel_size / resolution - 1.0
    return raised_cosine_lowpass_weights(size, ndim=ndim, radius=r0 + 1.0, edge_width=2.0)


def initial_lowpass(array: ArrayLike, *, resolution: float, pixel_size: float) -> NDArray[np.float64]:
    """Apply :func:`initial_lowpass_weights` to a map (or image)."""
    return _apply(
        array, lambda n, nd: initial_lowpass_weights(n, resolution=resolution, pixel_size=pixel_size, ndim=nd)
    )
