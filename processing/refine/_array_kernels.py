"""Array-module versions of the refinement's kernels (:mod:`processing.refine._kernels`): the
same central-slice gathers and trilinear insertions, written as whole-array operations of
``xp`` (numpy or cupy), so that one function runs on the GPU through CuPy and, with numpy,
can be checked on any machine against the numba kernels it replaces there.

The signatures follow the numba kernels', less the output arguments: the gathers return
``(values, power)``; the insertions add into ``data`` and ``weight`` in place. Coordinates
and conventions are those of :mod:`processing.fourier._kernels`: the centred half grid
``(2c+1, 2c+1, c+1)`` indexed ``[z + c, y + c, x]``, trilinear interpolation, and the
Hermitian mirror (conjugate at ``-p``) for ``x < 0``. Samples whose 2x2x2 neighbourhood
leaves the grid read zero and insert nothing (the numba kernels' bounds rule).
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from processing.backend import get_array_module, scatter_add

__all__ = ["gather_points", "gather_points_3d", "scatter_points", "scatter_points_3d", "weighted_power"]

#: the eight corners of a trilinear cell, (dz, dy, dx)
_CORNERS = tuple((dz, dy, dx) for dz in (0, 1) for dy in (0, 1) for dx in (0, 1))


def _coordinates(rot: Any, pad: float, kx: Any, ky: Any, kz: Any | None) -> tuple[Any, Any, Any]:
    """Padded grid coordinates ``pad · A_m^T k`` of every (rotation m, point j): three (n, K) arrays."""
    a = rot * pad
    px = a[:, 0, 0, None] * kx[None] + a[:, 1, 0, None] * ky[None]
    py = a[:, 0, 1, None] * kx[None] + a[:, 1, 1, None] * ky[None]
    pz = a[:, 0, 2, None] * kx[None] + a[:, 1, 2, None] * ky[None]
    if kz is not None:
        px = px + a[:, 2, 0, None] * kz[None]
        py = py + a[:, 2, 1, None] * kz[None]
        pz = pz + a[:, 2, 2, None] * kz[None]
    return px, py, pz


def _cells(xp: ModuleType, shape: tuple[int, int, int], c: int, px: Any, py: Any, pz: Any):
    """Mirror to x >= 0, then the flat index of each cell's (0, 0, 0) corner, the fractions
    (fx, fy, fz), which samples were mirrored, and which lie inside the grid."""
    mirrored = px < 0
    sign = xp.where(mirrored, -1.0, 1.0).astype(px.dtype)
    px, py, pz = px * sign, py * sign, pz * sign
    x0, y0, z0 = xp.floor(px), xp.floor(py), xp.floor(pz)
    fx, fy, fz = px - x0, py - y0, pz - z0
    x0 = x0.astype(np.int64)
    y0 = y0.astype(np.int64) + c
    z0 = z0.astype(np.int64) + c
    nz, ny, nx = shape
    inside = (z0 >= 0) & (y0 >= 0) & (z0 + 1 < nz) & (y0 + 1 < ny) & (x0 + 1 < nx)
    base = xp.where(inside, (z0 * ny + y0) * nx + x0, 0)
    return base, (fx, fy, fz), mirrored, inside


def _corner_weights(fx: Any, fy: Any, fz: Any, corner: tuple[int, int, int]) -> Any:
    dz, dy, dx = corner
    return (fz if dz else 1 - fz) * (fy if dy else 1 - fy) * (fx if dx else 1 - fx)


def _corner_offset(shape: tuple[int, int, int], corner: tuple[int, int, int]) -> int:
    dz, dy, dx = corner
    return (dz * shape[1] + dy) * shape[2] + dx


def _gather(xp: ModuleType, grid: Any, c: int, px: Any, py: Any, pz: Any) -> Any:
    """Trilinear samples (n, K) of the complex grid at padded coordinates."""
    shape = grid.shape
    flat = grid.reshape(-1)
    base, (fx, fy, fz), mirrored, inside = _cells(xp, shape, c, px, py, pz)
    out = xp.zeros(px.shape, dtype=grid.dtype)
    for corner in _CORNERS:
        out += flat[base + _corner_offset(shape, corner)] * _corner_weights(fx, fy, fz, corner)
    out = xp.where(mirrored, xp.conj(out), out)
    return xp.where(inside, out, 0)


def weighted_power(xp: ModuleType, values: Any, power_weights: Any) -> Any:
    """(n,) Σ_j |values[m, j]|² power_weights[m % F, j]."""
    n, k = values.shape
    n_images = power_weights.shape[0]
    power = values.real ** 2 + values.imag ** 2
    if n % n_images == 0:
        return (power.reshape(n // n_images, n_images, k) * power_weights[None]).sum(axis=2).reshape(n)
    return (power * power_weights[xp.arange(n) % n_images]).sum(axis=1)


def gather_points(grid: Any, c: int, rot: Any, pad: float, kx: Any, ky: Any, power_weights: Any) -> tuple[Any, Any]:
    """Central-slice values at the 2D points (kx, ky) of every rotation, and their weighted power.

    Parameters
    ----------
    grid
        (2c+1, 2c+1, c+1) complex64 centred half grid.
    rot
        (n, 3, 3) rotation matrices, rows (rotation, image) with the F images fastest.
    kx, ky
        (K,) float32 image frequencies (px of the unpadded box).
    power_weights
        (F, K) float32 weights of the power.

    Returns
    -------
    values : (n, K) complex64
    power : (n,) float32, ``Σ_j |values[m, j]|² power_weights[m % F, j]``
    """
    xp = get_array_module(grid)
    px, py, pz = _coordinates(xp.asarray(rot, dtype=np.float32), pad, kx, ky, None)
    values = _gather(xp, grid, c, px, py, pz).astype(np.complex64)
    return values, weighted_power(xp, values, power_weights).astype(np.float32)


def gather_points_3d(grid: Any, c: int, rot: Any, pad: float, kx: Any, ky: Any, kz: Any,
                     power_weights: Any) -> tuple[Any, Any]:
    """:func:`gather_points` for 3D points (the pseudo-subtomogram path), in the grid's precision;
    the power takes ``power_weights[0]`` for every rotation."""
    xp = get_array_module(grid)
    px, py, pz = _coordinates(xp.asarray(rot, dtype=np.float64), pad, kx, ky, kz)
    values = _gather(xp, grid, c, px, py, pz)
    return values, weighted_power(xp, values, power_weights[:1])


def _scatter(xp: ModuleType, data: Any, weight: Any, c: int, px: Any, py: Any, pz: Any, values: Any,
             weights: Any, keep: Any | None = None) -> None:
    shape = data.shape
    base, (fx, fy, fz), mirrored, inside = _cells(xp, shape, c, px, py, pz)
    if keep is not None:
        inside = inside & keep
    values = xp.where(mirrored, xp.conj(values), values)[inside]
    weights = weights[inside]
    base, fx, fy, fz = base[inside], fx[inside], fy[inside], fz[inside]
    # complex sums as interleaved (re, im) float64, which every scatter-add supports
    data_ri = data.reshape(-1).view(np.float64)
    weight_flat = weight.reshape(-1)
    for corner in _CORNERS:
        w = _corner_weights(fx, fy, fz, corner)
        index = base + _corner_offset(shape, corner)
        scatter_add(data_ri, 2 * index, (values.real * w).astype(np.float64))
        scatter_add(data_ri, 2 * index + 1, (values.imag * w).astype(np.float64))
        scatter_add(weight_flat, index, (weights * w).astype(np.float64))


def scatter_points(data: Any, weight: Any, c: int, rot: Any, pad: float, kx: Any, ky: Any, values: Any,
                   weights: Any) -> None:
    """Trilinear insertion of ``values`` (n, K) with real ``weights`` (n, K) at ``pad · A_m^T (kx, ky, 0)``.

    ``data`` (2c+1, 2c+1, c+1) complex128 and ``weight`` (same shape) float64 are added to in place.
    """
    xp = get_array_module(data)
    px, py, pz = _coordinates(xp.asarray(rot, dtype=np.float64), pad, kx, ky, None)
    _scatter(xp, data, weight, c, px, py, pz, values, weights)


def scatter_points_3d(data: Any, weight: Any, c: int, rot: Any, pad: float, kx: Any, ky: Any, kz: Any,
                      values: Any, weights: Any, limit: float) -> None:
    """3D-path insertion (``backrotate3D``): points whose ``|p|²``, truncated to an integer,
    exceeds ``limit`` are skipped."""
    xp = get_array_module(data)
    px, py, pz = _coordinates(xp.asarray(rot, dtype=np.float64), pad, kx, ky, kz)
    keep = xp.trunc(px * px + py * py + pz * pz) <= limit
    _scatter(xp, data, weight, c, px, py, pz, values, weights, keep)
