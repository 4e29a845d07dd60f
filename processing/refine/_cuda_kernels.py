"""CUDA kernels of the refinement, for the E-step on the GPU (CuPy ``RawKernel``).

The central-slice gather is the E-step's hottest loop. Written as whole-array operations
(:mod:`._array_kernels`) it makes eight passes over ``(n, K)`` temporaries for the eight
corners; here it is one thread per sample that reads its eight corners and writes one
complex64, so the device spends its memory bandwidth on the grid and the output only.

The arithmetic is the numba kernel's (:func:`._kernels.gather_points`): single precision,
coordinates ``pad · A_m^T (kx, ky, 0)``, the Hermitian mirror for ``x < 0``, y and z shifted
by ``c`` so that truncation is the floor; and the array kernels' bounds rule (a sample whose
2x2x2 cell leaves the grid reads zero). The per-sample function (:data:`SAMPLE_SOURCE`)
compiles as CUDA and, with the shims of :data:`HOST_SHIMS` in front, as plain C++: the tests
run the same per-sample code on the CPU against the numba kernel, and compile the whole
kernel with ``nvcc`` where the CUDA toolkit is installed.
"""
from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from ._array_kernels import weighted_power

__all__ = ["GATHER_SOURCE", "HOST_SHIMS", "SAMPLE_SOURCE", "gather_points", "scaled_rows"]

#: One sample's trilinear value. ``a`` holds the rotation's six used matrix entries times
#: ``pad`` (float32, row-major a00 a01 a02 a10 a11 a12), so that every thread computes exactly
#: what the numba kernel does.
SAMPLE_SOURCE = r"""
__device__ __forceinline__ float2 gather_sample(
    const float2* __restrict__ grid, int c, const float* __restrict__ a, float x, float y)
{
    const int size = 2 * c + 1;                 /* z and y extent; x extent is c + 1 */
    const float centre = (float)c;
    float xp = a[0] * x + a[3] * y;
    const float sign = xp >= 0.0f ? 1.0f : -1.0f;
    xp = xp * sign;
    const float yp = (a[1] * x + a[4] * y) * sign + centre;
    const float zp = (a[2] * x + a[5] * y) * sign + centre;
    float2 value;
    value.x = 0.0f;
    value.y = 0.0f;
    if (yp < 0.0f || zp < 0.0f) return value;  /* truncation is the floor only for >= 0 */
    const int xi = (int)xp;
    const int yi = (int)yp;
    const int zi = (int)zp;
    if (xi + 1 > c || yi + 1 >= size || zi + 1 >= size) return value;
    const float fx = xp - (float)xi;
    const float fy = yp - (float)yi;
    const float fz = zp - (float)zi;
    const float gx = 1.0f - fx;
    const float w00 = (1.0f - fz) * (1.0f - fy);
    const float w01 = (1.0f - fz) * fy;
    const float w10 = fz * (1.0f - fy);
    const float w11 = fz * fy;
    const long long step_y = c + 1;
    const long long step_z = (long long)(c + 1) * size;
    const long long i00 = zi * step_z + yi * step_y + xi;
    const long long i01 = i00 + step_y;
    const long long i10 = i00 + step_z;
    const long long i11 = i10 + step_y;
    const float2 v0 = grid[i00], v1 = grid[i00 + 1], v2 = grid[i01], v3 = grid[i01 + 1];
    const float2 v4 = grid[i10], v5 = grid[i10 + 1], v6 = grid[i11], v7 = grid[i11 + 1];
    value.x = (v0.x * gx + v1.x * fx) * w00 + (v2.x * gx + v3.x * fx) * w01
            + (v4.x * gx + v5.x * fx) * w10 + (v6.x * gx + v7.x * fx) * w11;
    value.y = ((v0.y * gx + v1.y * fx) * w00 + (v2.y * gx + v3.y * fx) * w01
             + (v4.y * gx + v5.y * fx) * w10 + (v6.y * gx + v7.y * fx) * w11) * sign;
    return value;
}
"""

#: The kernel: one thread per (rotation m, point j), rows of ``out`` ordered like ``rot``.
GATHER_SOURCE = SAMPLE_SOURCE + r"""
extern "C" __global__ void gather_points(
    const float2* __restrict__ grid, int c, const float* __restrict__ a,
    const float* __restrict__ kx, const float* __restrict__ ky, long long n, long long k,
    float2* __restrict__ out)
{
    const long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n * k) return;
    const long long m = t / k;
    const long long j = t - m * k;
    out[t] = gather_sample(grid, c, a + 6 * m, kx[j], ky[j]);
}
"""

#: What :data:`GATHER_SOURCE` needs to compile as host C++ (tests only).
HOST_SHIMS = r"""
struct float2 { float x, y; };
#define __device__
#define __forceinline__ inline
#define __restrict__
"""

_THREADS = 256


@cache
def _kernel() -> Any:
    """The kernel (CuPy compiles it on first use on each device and keeps the binaries)."""
    import cupy

    return cupy.RawKernel(GATHER_SOURCE, "gather_points", options=("-std=c++14",))


def scaled_rows(rot: Any, pad: float, xp) -> Any:
    """(n, 6) float32: the first two rows of each rotation times ``pad`` (the kernel's ``a``)."""
    a = xp.asarray(rot, dtype=np.float64)[:, :2, :] * pad
    return xp.ascontiguousarray(a.reshape(-1, 6).astype(np.float32))


def gather_points(grid: Any, c: int, rot: Any, pad: float, kx: Any, ky: Any, power_weights: Any) -> tuple[Any, Any]:
    """Central-slice values at the 2D points (kx, ky) of every rotation, and their weighted
    power, on the GPU that holds ``grid`` (the signature of :func:`._array_kernels.gather_points`).

    Parameters
    ----------
    grid
        (2c+1, 2c+1, c+1) complex64 centred half grid (a cupy array).
    rot
        (n, 3, 3) rotation matrices (host or device).
    kx, ky
        (K,) float32 image frequencies (px of the unpadded box), on the device.
    power_weights
        (F, K) float32 weights of the power, on the device.

    Returns
    -------
    values : (n, K) complex64
    power : (n,) float32, ``Σ_j |values[m, j]|² power_weights[m % F, j]``
    """
    import cupy

    a = scaled_rows(rot, pad, cupy)
    n, k = a.shape[0], int(kx.shape[0])
    out = cupy.empty((n, k), dtype=np.complex64)
    total = n * k
    if total:
        blocks = (total + _THREADS - 1) // _THREADS
        _kernel()((blocks,), (_THREADS,), (
            cupy.ascontiguousarray(grid, dtype=np.complex64), np.int32(c), a,
            cupy.ascontiguousarray(kx, dtype=np.float32), cupy.ascontiguousarray(ky, dtype=np.float32),
            np.int64(n), np.int64(k), out))
    return out, weighted_power(cupy, out, power_weights).astype(np.float32)
