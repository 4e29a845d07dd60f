"""numba kernels of the refinement: central-slice values and insertion at listed frequencies.

The refinement works with the half-plane pixels inside the current image radius only (a flat
list of (kx, ky)), so these kernels gather and scatter exactly those points on the centred,
padded 3D half grid of :mod:`processing.fourier._kernels` (whose trilinear helpers they use).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from processing.fourier._kernels import _trilinear_get, _trilinear_put


@njit(parallel=True, cache=True, fastmath=True)
def gather_points(grid, c, rot, pad, kx, ky, out):
    """out[m, j] = V(pad * A_m^T (kx_j, ky_j, 0)), trilinear, Hermitian for x < 0.

    grid: the complex64 centred half grid viewed as float32 ``(2c+1, 2c+1, c+1, 2)`` (real,
    imaginary); rot (n, 3, 3); kx, ky (K,) float32; out (n, K) complex64. Single precision
    throughout: this is the E-step's hottest gather.
    """
    n = rot.shape[0]
    k = kx.shape[0]
    nz = grid.shape[0]
    nx = grid.shape[2]
    one = np.float32(1.0)
    for m in prange(n):
        a00 = np.float32(rot[m, 0, 0] * pad)
        a01 = np.float32(rot[m, 0, 1] * pad)
        a02 = np.float32(rot[m, 0, 2] * pad)
        a10 = np.float32(rot[m, 1, 0] * pad)
        a11 = np.float32(rot[m, 1, 1] * pad)
        a12 = np.float32(rot[m, 1, 2] * pad)
        for j in range(k):
            x = kx[j]
            y = ky[j]
            xp = a00 * x + a10 * y
            yp = a01 * x + a11 * y
            zp = a02 * x + a12 * y
            sign = one
            if xp < 0:
                xp = -xp
                yp = -yp
                zp = -zp
                sign = -one
            x0 = int(math.floor(xp))
            y0 = int(math.floor(yp))
            z0 = int(math.floor(zp))
            fx = xp - x0
            fy = yp - y0
            fz = zp - z0
            y0 += c
            z0 += c
            if z0 < 0 or y0 < 0 or z0 + 1 >= nz or y0 + 1 >= nz or x0 + 1 >= nx:
                out[m, j] = 0
                continue
            re = np.float32(0.0)
            im = np.float32(0.0)
            for dz in range(2):
                wz = fz if dz == 1 else one - fz
                for dy in range(2):
                    wzy = wz * (fy if dy == 1 else one - fy)
                    w0 = wzy * (one - fx)
                    w1 = wzy * fx
                    re += grid[z0 + dz, y0 + dy, x0, 0] * w0 + grid[z0 + dz, y0 + dy, x0 + 1, 0] * w1
                    im += grid[z0 + dz, y0 + dy, x0, 1] * w0 + grid[z0 + dz, y0 + dy, x0 + 1, 1] * w1
            out[m, j] = complex(re, sign * im)


@njit(cache=True, fastmath=False, nogil=True)
def scatter_points(data, weight, c, rot, pad, kx, ky, values, weights):
    """Trilinear insertion of values (n, K) with real weights (n, K) at pad * A_m^T (kx, ky, 0)."""
    n = rot.shape[0]
    k = kx.shape[0]
    for m in range(n):
        a00 = rot[m, 0, 0] * pad
        a01 = rot[m, 0, 1] * pad
        a02 = rot[m, 0, 2] * pad
        a10 = rot[m, 1, 0] * pad
        a11 = rot[m, 1, 1] * pad
        a12 = rot[m, 1, 2] * pad
        for j in range(k):
            x = kx[j]
            y = ky[j]
            _trilinear_put(data, weight, c, a00 * x + a10 * y, a01 * x + a11 * y, a02 * x + a12 * y,
                           values[m, j], weights[m, j])


@njit(parallel=True, cache=True, fastmath=False)
def gather_points_3d(grid, c, rot, pad, kx, ky, kz, out):
    """out[m, j] = V(pad * A_m^T (kx_j, ky_j, kz_j)) for the 3D (pseudo-subtomogram) path."""
    n = rot.shape[0]
    k = kx.shape[0]
    for m in prange(n):
        a = rot[m]
        for j in range(k):
            x = kx[j]
            y = ky[j]
            z = kz[j]
            out[m, j] = _trilinear_get(
                grid, c,
                pad * (a[0, 0] * x + a[1, 0] * y + a[2, 0] * z),
                pad * (a[0, 1] * x + a[1, 1] * y + a[2, 1] * z),
                pad * (a[0, 2] * x + a[1, 2] * y + a[2, 2] * z),
            )


@njit(cache=True, fastmath=False, nogil=True)
def scatter_points_3d(data, weight, c, rot, pad, kx, ky, kz, values, weights):
    """3D-path insertion of values (n, K) with weights (n, K) at pad * A_m^T k."""
    n = rot.shape[0]
    k = kx.shape[0]
    for m in range(n):
        a = rot[m]
        for j in range(k):
            x = kx[j]
            y = ky[j]
            z = kz[j]
            _trilinear_put(
                data, weight, c,
                pad * (a[0, 0] * x + a[1, 0] * y + a[2, 0] * z),
                pad * (a[0, 1] * x + a[1, 1] * y + a[2, 1] * z),
                pad * (a[0, 2] * x + a[1, 2] * y + a[2, 2] * z),
                values[m, j], weights[m, j],
            )
