"""numba gather/scatter kernels on a centred, padded 3D half transform.

Grid layout (shared by the projector and the back-projector): ``grid[kz + c, ky + c, kx]``
for logical padded frequencies ``-c <= kz, ky <= c`` and ``0 <= kx <= c``; shape
``(2c+1, 2c+1, c+1)``. Points with ``kx < 0`` are read/written through Hermitian symmetry
(``F(-k) = conj F(k)``). ``c`` = stored radius + 2 so that trilinear neighbours never leave
the array for any point inside the stored radius.

All kernels are private; see projector.py / backprojector.py for the public API.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange


@njit(cache=True, fastmath=False, inline="always")
def trilinear_get(grid, c, xp, yp, zp):
    """Trilinear sample at padded coordinates (xp, yp, zp); Hermitian for xp < 0."""
    conj = False
    if xp < 0.0:
        xp = -xp
        yp = -yp
        zp = -zp
        conj = True
    x0 = int(math.floor(xp))
    y0 = int(math.floor(yp))
    z0 = int(math.floor(zp))
    fx = xp - x0
    fy = yp - y0
    fz = zp - z0
    y0 += c
    z0 += c
    nz = grid.shape[0]
    nx = grid.shape[2]
    if z0 < 0 or y0 < 0 or z0 + 1 >= nz or y0 + 1 >= nz or x0 + 1 >= nx:
        return grid[0, 0, 0] * 0.0
    d000 = grid[z0, y0, x0]
    d001 = grid[z0, y0, x0 + 1]
    d010 = grid[z0, y0 + 1, x0]
    d011 = grid[z0, y0 + 1, x0 + 1]
    d100 = grid[z0 + 1, y0, x0]
    d101 = grid[z0 + 1, y0, x0 + 1]
    d110 = grid[z0 + 1, y0 + 1, x0]
    d111 = grid[z0 + 1, y0 + 1, x0 + 1]
    dx00 = d000 + (d001 - d000) * fx
    dx01 = d100 + (d101 - d100) * fx
    dx10 = d010 + (d011 - d010) * fx
    dx11 = d110 + (d111 - d110) * fx
    dxy0 = dx00 + (dx10 - dx00) * fy
    dxy1 = dx01 + (dx11 - dx01) * fy
    v = dxy0 + (dxy1 - dxy0) * fz
    if conj:
        return v.conjugate()
    return v


@njit(parallel=True, cache=True, fastmath=False)
def project_kernel(grid, c, rot, pad, r_max2, scale, out):
    """Central slices: out[m, iy, kx] = scale * V(pad * A_m^T (kx, ky, 0)).

    grid: (2c+1, 2c+1, c+1) complex; rot: (n, 3, 3) float64; out: (n, s, s//2+1) complex,
    fully overwritten (zero where kx^2 + ky^2 > r_max2).
    """
    n = rot.shape[0]
    s = out.shape[1]
    sx = out.shape[2]
    half = s // 2
    for m in prange(n):
        a00 = rot[m, 0, 0] * pad
        a01 = rot[m, 0, 1] * pad
        a02 = rot[m, 0, 2] * pad
        a10 = rot[m, 1, 0] * pad
        a11 = rot[m, 1, 1] * pad
        a12 = rot[m, 1, 2] * pad
        for i in range(s):
            ky = i if i <= half else i - s
            for kx in range(sx):
                if kx * kx + ky * ky > r_max2:
                    out[m, i, kx] = 0.0
                    continue
                xp = a00 * kx + a10 * ky
                yp = a01 * kx + a11 * ky
                zp = a02 * kx + a12 * ky
                out[m, i, kx] = trilinear_get(grid, c, xp, yp, zp) * scale


@njit(parallel=True, cache=True, fastmath=False)
def rotate3d_kernel(grid, c, rot, pad, r_max2, scale, out):
    """Rotated 3D half transforms: out[m, iz, iy, kx] = scale * V(pad * A_m^T k).

    out: (n, s, s, s//2+1) complex (FFTW layout), fully overwritten.
    """
    n = rot.shape[0]
    s = out.shape[1]
    sx = out.shape[3]
    half = s // 2
    for mi in prange(n * s):
        m = mi // s
        j = mi % s
        kz = j if j <= half else j - s
        a = rot[m]
        for i in range(s):
            ky = i if i <= half else i - s
            for kx in range(sx):
                if kx * kx + ky * ky + kz * kz > r_max2:
                    out[m, j, i, kx] = 0.0
                    continue
                xp = pad * (a[0, 0] * kx + a[1, 0] * ky + a[2, 0] * kz)
                yp = pad * (a[0, 1] * kx + a[1, 1] * ky + a[2, 1] * kz)
                zp = pad * (a[0, 2] * kx + a[1, 2] * ky + a[2, 2] * kz)
                out[m, j, i, kx] = trilinear_get(grid, c, xp, yp, zp) * scale


@njit(cache=True, fastmath=False, inline="always")
def trilinear_put(data, weight, c, xp, yp, zp, val, wgt):
    """Scatter (val, wgt) at padded coordinates; Hermitian mirror for xp < 0."""
    if xp < 0.0:
        xp = -xp
        yp = -yp
        zp = -zp
        val = val.conjugate()
    x0 = int(math.floor(xp))
    y0 = int(math.floor(yp))
    z0 = int(math.floor(zp))
    fx = xp - x0
    fy = yp - y0
    fz = zp - z0
    y0 += c
    z0 += c
    nz = data.shape[0]
    nx = data.shape[2]
    if z0 < 0 or y0 < 0 or z0 + 1 >= nz or y0 + 1 >= nz or x0 + 1 >= nx:
        return
    mx = 1.0 - fx
    my = 1.0 - fy
    mz = 1.0 - fz
    for dz in range(2):
        wz = fz if dz == 1 else mz
        for dy in range(2):
            wy = fy if dy == 1 else my
            wzy = wz * wy
            w0 = wzy * mx
            w1 = wzy * fx
            data[z0 + dz, y0 + dy, x0] += val * w0
            weight[z0 + dz, y0 + dy, x0] += wgt * w0
            data[z0 + dz, y0 + dy, x0 + 1] += val * w1
            weight[z0 + dz, y0 + dy, x0 + 1] += wgt * w1


@njit(parallel=True, cache=True, fastmath=False)
def backproject2d_kernel(data, weight, c, slices, wslices, rot, pad, r_max2):
    """Insert 2D half-transform slices into per-thread grids.

    data: (T, 2c+1, 2c+1, c+1) complex, weight: same shape, float64; slices: (n, s, s//2+1)
    complex; wslices: (n, s, s//2+1) float64; rot: (n, 3, 3). Slice ``m`` goes into buffer
    ``m % T``; the caller sums the buffers.
    """
    n = rot.shape[0]
    nthreads = data.shape[0]
    s = slices.shape[1]
    sx = slices.shape[2]
    half = s // 2
    for t in prange(nthreads):
        dat = data[t]
        wgt = weight[t]
        for m in range(t, n, nthreads):
            a00 = rot[m, 0, 0] * pad
            a01 = rot[m, 0, 1] * pad
            a02 = rot[m, 0, 2] * pad
            a10 = rot[m, 1, 0] * pad
            a11 = rot[m, 1, 1] * pad
            a12 = rot[m, 1, 2] * pad
            for i in range(s):
                ky = i if i <= half else i - s
                for kx in range(sx):
                    if kx * kx + ky * ky > r_max2:
                        continue
                    xp = a00 * kx + a10 * ky
                    yp = a01 * kx + a11 * ky
                    zp = a02 * kx + a12 * ky
                    trilinear_put(dat, wgt, c, xp, yp, zp, slices[m, i, kx], wslices[m, i, kx])


@njit(parallel=True, cache=True, fastmath=False)
def backproject3d_kernel(data, weight, c, vols, wvols, rot, pad, r_max2):
    """Insert 3D half transforms (n, s, s, s//2+1) at pad * A_m^T k into per-thread grids."""
    n = rot.shape[0]
    nthreads = data.shape[0]
    s = vols.shape[1]
    sx = vols.shape[3]
    half = s // 2
    for t in prange(nthreads):
        dat = data[t]
        wgt = weight[t]
        for m in range(t, n, nthreads):
            a = rot[m]
            for j in range(s):
                kz = j if j <= half else j - s
                for i in range(s):
                    ky = i if i <= half else i - s
                    for kx in range(sx):
                        if kx * kx + ky * ky + kz * kz > r_max2:
                            continue
                        # The kx = 0 plane holds both Friedel mates: insert one of each pair.
                        if kx == 0 and (ky < 0 or (ky == 0 and kz < 0)):
                            continue
                        xp = pad * (a[0, 0] * kx + a[1, 0] * ky + a[2, 0] * kz)
                        yp = pad * (a[0, 1] * kx + a[1, 1] * ky + a[2, 1] * kz)
                        zp = pad * (a[0, 2] * kx + a[1, 2] * ky + a[2, 2] * kz)
                        trilinear_put(dat, wgt, c, xp, yp, zp, vols[m, j, i, kx], wvols[m, j, i, kx])


@njit(parallel=True, cache=True, fastmath=False)
def symmetrise_kernel(data, weight, c, ops, r_max2, out_data, out_weight):
    """out(K) = sum_R in(R K) over the operators, for |K|^2 <= r_max2 (padded units)."""
    n_ops = ops.shape[0]
    nz = data.shape[0]
    nx = data.shape[2]
    for zi in prange(nz):
        kz = zi - c
        for yi in range(nz):
            ky = yi - c
            for kx in range(nx):
                if kx * kx + ky * ky + kz * kz > r_max2:
                    out_data[zi, yi, kx] = 0.0
                    out_weight[zi, yi, kx] = 0.0
                    continue
                acc = data[0, 0, 0] * 0.0
                accw = 0.0
                for o in range(n_ops):
                    r = ops[o]
                    xp = r[0, 0] * kx + r[0, 1] * ky + r[0, 2] * kz
                    yp = r[1, 0] * kx + r[1, 1] * ky + r[1, 2] * kz
                    zp = r[2, 0] * kx + r[2, 1] * ky + r[2, 2] * kz
                    acc += trilinear_get(data, c, xp, yp, zp)
                    accw += trilinear_get(weight, c, xp, yp, zp).real
                out_data[zi, yi, kx] = acc
                out_weight[zi, yi, kx] = accw


def empty_grid(c: int, dtype: np.dtype) -> np.ndarray:
    """A zero centred half grid of radius ``c``: shape (2c+1, 2c+1, c+1)."""
    return np.zeros((2 * c + 1, 2 * c + 1, c + 1), dtype=dtype)
