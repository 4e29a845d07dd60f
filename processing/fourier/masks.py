"""Real-space masks with raised-cosine edges (spec 5.5 item 1, 5.10).

All masks are centred at element ``N//2`` of every axis; radii and edge widths are in pixels
(voxels). The raised cosine runs from 1 at ``radius`` to 0 at ``radius + edge_width``:
``0.5 + 0.5*cos(pi*(r - radius)/edge_width)``.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "radius_grid",
    "soft_sphere_mask",
    "soft_circle_mask",
    "soft_mask_outside",
    "flatten_solvent",
]


def radius_grid(shape: tuple[int, ...]) -> NDArray[np.float64]:
    """Distance (pixels) of every element from the centre ``(n//2, ...)``, float64."""
    axes = [np.arange(n, dtype=np.float64) - n // 2 for n in shape]
    grids = np.meshgrid(*axes, indexing="ij", sparse=True)
    return np.sqrt(sum(g * g for g in grids))


def _raised_cosine(r: NDArray, radius: float, edge_width: float) -> NDArray[np.float64]:
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if edge_width < 0:
        raise ValueError(f"edge_width must be >= 0, got {edge_width}")
    if edge_width == 0:
        return (r <= radius).astype(np.float64)
    edge = 0.5 + 0.5 * np.cos(np.pi * (r - radius) / edge_width)
    return np.where(r <= radius, 1.0, np.where(r >= radius + edge_width, 0.0, edge))


def soft_sphere_mask(size: int, *, radius: float, edge_width: float = 5.0) -> NDArray[np.float64]:
    """3D spherical mask ``(N, N, N)``: 1 for ``r <= radius``, raised cosine to 0 at
    ``radius + edge_width`` (RELION's solvent sphere / ``relion_mask_create`` style)."""
    return _raised_cosine(radius_grid((size,) * 3), radius, edge_width)


def soft_circle_mask(size: int, *, radius: float, edge_width: float = 5.0) -> NDArray[np.float64]:
    """2D circular mask ``(N, N)``, as :func:`soft_sphere_mask`."""
    return _raised_cosine(radius_grid((size,) * 2), radius, edge_width)


def soft_mask_outside(
    images: ArrayLike,
    *,
    radius: float | None = None,
    edge_width: float = 5.0,
    ndim: int | None = None,
) -> NDArray[np.float64]:
    """RELION's "mask with zeros" of particle images/maps (``softMaskOutsideMap``).

    Inside ``radius`` the values are kept; beyond ``radius + edge_width`` they are replaced
    by the background value ``b``; in between ``(1 - t) v + t b`` with
    ``t = 0.5 - 0.5 cos(pi (r - radius)/edge_width)`` (0 at ``radius``, 1 at the outer edge).
    ``b`` is the ``t``-weighted mean of the array over ``r > radius`` (the soft-weighted
    background mean), computed per image.

    Parameters
    ----------
    images
        ``(..., N, N)`` stack of images (``ndim=2``) or ``(..., N, N, N)`` volumes
        (``ndim=3``); default: 2 for 2D input, 3 for 3D input, 2 for 3D input whose last
        two axes differ from the first (stacks must pass ``ndim``).
    radius
        Inner radius in pixels (default ``N/2``).
    edge_width
        Width of the raised cosine (RELION: ``--maskedge`` 5 for particles, 3 for the corner
        mask of a reconstruction).
    """
    arr = np.asarray(images, dtype=np.float64)
    if ndim is None:
        ndim = arr.ndim if arr.ndim in (2, 3) else 2
    if ndim not in (2, 3) or arr.ndim < ndim:
        raise ValueError(f"ndim must be 2 or 3 and <= images.ndim, got {ndim} for shape {arr.shape}")
    shape = arr.shape[-ndim:]
    n = shape[-1]
    rad = n / 2 if radius is None else float(radius)
    r = radius_grid(shape)
    t = 1.0 - _raised_cosine(r, rad, edge_width)
    axes = tuple(range(-ndim, 0))
    tsum = t.sum()
    if tsum <= 0:
        return arr.copy()
    bg = (arr * t).sum(axis=axes, keepdims=True) / tsum
    return (1.0 - t) * arr + t * bg


def flatten_solvent(
    volume: ArrayLike,
    *,
    radius: float | None = None,
    edge_width: float = 5.0,
    mask: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """Solvent flattening after the M-step (spec 5.10).

    Multiplies the map by ``mask`` (values in [0, 1], same box) when given, else by a soft
    sphere of ``radius`` pixels (particle diameter / (2 px)) with a raised-cosine edge of
    ``edge_width`` (RELION's ``--maskedge``, 5) pixels.
    """
    vol = np.asarray(volume, dtype=np.float64)
    if mask is not None:
        m = np.asarray(mask, dtype=np.float64)
        if m.shape != vol.shape:
            raise ValueError(f"mask shape {m.shape} differs from the map shape {vol.shape}")
        if m.min() < 0 or m.max() > 1:
            raise ValueError("solvent mask values must lie in [0, 1]")
        return vol * m
    if radius is None:
        raise ValueError("flatten_solvent needs a radius or a mask")
    return vol * _raised_cosine(radius_grid(vol.shape), float(radius), edge_width)
