"""RELION's ``autoMask`` (src/mask.cpp) and the helical Z cut (src/helix.cpp
``cutZCentralPartOfSoftMask``) on numpy arrays.

The steps, in RELION's order:

1. binarise: 1 where the map is ``>= threshold``, else 0;
2. extend (``extend > 0``): an outside voxel becomes 1 when an inside voxel lies at a squared
   distance ``< extend**2``; shrink (``extend < 0``): an inside voxel becomes 0 when an outside
   voxel of the box lies at a squared distance ``< extend**2``;
3. soft edge (``width > 0``): an outside voxel at squared distance ``d2 < width**2`` from the
   nearest inside voxel gets ``0.5 + 0.5 * cos(pi * sqrt(d2) / width)``.

Distances are Euclidean between voxel centres (whole voxels, so ``d2`` is an integer). RELION
searches a cube of ``ceil(|r|)`` voxels around each voxel; every voxel nearer than ``|r|`` lies
in that cube, so an exact Euclidean distance transform gives the same answer.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = ["binarise", "squared_distance_to", "extend_binary", "soft_edge", "auto_mask", "cut_helix_z"]


def binarise(volume: NDArray, *, threshold: float) -> NDArray[np.bool_]:
    """Voxels ``>= threshold`` (RELION's initial binary mask). Same shape as ``volume``."""
    return np.asarray(volume) >= threshold


def squared_distance_to(targets: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Squared Euclidean distance (voxels², exact integers) from every voxel to the nearest
    ``True`` voxel of ``targets``; 0 on the targets themselves.

    Parameters
    ----------
    targets
        Boolean array, any shape; at least one ``True``.

    Raises
    ------
    ValueError
        When ``targets`` holds no ``True`` voxel (no distance is defined).
    """
    targets = np.asarray(targets, dtype=bool)
    if not targets.any():
        raise ValueError("squared_distance_to needs at least one target voxel")
    # scipy measures the distance from each non-zero element to the nearest zero: the targets
    # are the zeros. Its distances are square roots of integers; rounding their squares
    # recovers the integers exactly (far below 2**52).
    distance = ndimage.distance_transform_edt(~targets)
    return np.rint(distance * distance).astype(np.int64)


def extend_binary(mask: NDArray[np.bool_], *, pixels: float) -> NDArray[np.bool_]:
    """Grow (``pixels > 0``) or shrink (``pixels < 0``) a binary mask by ``|pixels|`` voxels.

    Growing adds the outside voxels with an inside voxel at squared distance ``< pixels**2``;
    shrinking removes the inside voxels with an outside voxel of the box at squared distance
    ``< pixels**2`` (the region beyond the box does not count as outside). A mask with nothing
    to grow from (empty) or to shrink towards (full) is returned unchanged.
    """
    mask = np.asarray(mask, dtype=bool)
    if pixels == 0:
        return mask.copy()
    limit = float(pixels) * float(pixels)
    if pixels > 0:
        if not mask.any():
            return mask.copy()
        return mask | (squared_distance_to(mask) < limit)
    if mask.all():
        return mask.copy()
    return mask & ~(squared_distance_to(~mask) < limit)


def soft_edge(mask: NDArray[np.bool_], *, width: float) -> NDArray[np.float64]:
    """A raised-cosine edge of ``width`` voxels outside a binary mask.

    Returns float64 in [0, 1] (same shape): 1 inside, ``0.5 + 0.5*cos(pi*d/width)`` at distance
    ``d < width`` outside, 0 beyond.
    """
    mask = np.asarray(mask, dtype=bool)
    out = mask.astype(np.float64)
    if width <= 0 or not mask.any():
        return out
    d2 = squared_distance_to(mask)
    edge = ~mask & (d2 < float(width) * float(width))
    out[edge] = 0.5 + 0.5 * np.cos(np.pi * np.sqrt(d2[edge].astype(np.float64)) / float(width))
    return out


def auto_mask(volume: NDArray, *, threshold: float, extend: float = 0.0, width: float = 0.0) -> NDArray[np.float64]:
    """RELION's ``autoMask``: binarise at ``threshold``, extend/shrink by ``extend`` voxels,
    add a soft edge of ``width`` voxels.

    Parameters
    ----------
    volume
        ``[z, y, x]`` map (any real dtype).
    threshold
        Initial binarisation threshold (map units).
    extend
        Voxels to grow (> 0) or shrink (< 0) the binary mask.
    width
        Width of the raised-cosine soft edge (voxels, >= 0).

    Returns
    -------
    ndarray
        float64 ``[z, y, x]`` mask in [0, 1].
    """
    if width < 0:
        raise ValueError(f"soft edge width must be >= 0, got {width:g}")
    binary = extend_binary(binarise(volume, threshold=threshold), pixels=extend)
    return soft_edge(binary, width=width)


def cut_helix_z(mask: NDArray, *, z_fraction: float, width: float) -> NDArray[np.float64]:
    """Keep the central ``z_fraction`` of the box along Z, with a raised-cosine fall-off of
    ``width`` voxels on both sides (RELION's ``--helix --z_percentage``).

    The logical Z coordinate of slice ``k`` is ``k - nz//2``; slices with ``|z| < nz*z_fraction/2``
    are kept, those beyond ``nz*z_fraction/2 + width`` are zeroed, and those between are
    multiplied by ``0.5 + 0.5*cos(pi*(|z| - nz*z_fraction/2)/width)``.

    Raises
    ------
    ValueError
        For a non-3D mask, fewer than 5 slices, ``z_fraction`` outside [0.1, 0.9] or
        ``width < 0.001`` (RELION's limits).
    """
    out = np.array(mask, dtype=np.float64)
    if out.ndim != 3:
        raise ValueError(f"the helical Z cut needs a 3D mask, got shape {out.shape}")
    nz = out.shape[0]
    if nz < 5:
        raise ValueError(f"the helical Z cut needs at least 5 slices along Z, got {nz}")
    if not 0.1 <= z_fraction <= 0.9:
        raise ValueError(f"the central Z length must be 10% to 90% of the box, got {100 * z_fraction:g}%")
    if width < 0.001:
        raise ValueError("the helical Z cut needs a soft edge width > 0")
    end = nz * z_fraction * 0.5
    start = -end
    z = np.arange(nz, dtype=np.float64) - nz // 2
    factor = np.ones(nz)
    keep = (z > start) & (z < end)
    factor[~keep & ((z < start - width) | (z > end + width))] = 0.0
    below = ~keep & (z >= start - width) & (z < start)
    above = ~keep & (z <= end + width) & (z > end)
    factor[below] = 0.5 + 0.5 * np.cos(np.pi * (start - z[below]) / width)
    factor[above] = 0.5 + 0.5 * np.cos(np.pi * (z[above] - end) / width)
    return out * factor[:, None, None]
