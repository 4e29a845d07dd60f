"""Gather-style Fourier backprojection of tilt-image slices and Fourier-space symmetrisation,
with the rules of ``relion_tomo_reconstruct_particle`` (read for its rules, not translated).

The 3D grid is the binned box itself (no padding, no oversampling): FFTW half layout
``(box, box, box//2+1)`` indexed ``[z, y, x]``, rows and planes ``y, z >= box/2`` standing for
``y - box`` and ``z - box`` (so the Nyquist planes are read as ``-box/2``).

Backprojection visits the voxels within one voxel of each slice's plane: a voxel ``k`` (grid
frequency units) lies at ``q = M k`` with ``M = A⁻ᵀ`` (``A`` = ``P_f[:3,:3] @ R_particle``); it
receives ``(1 - |q_z|)`` times the slice's bilinear interpolation at ``(q_x, q_y)`` (Friedel
mate conjugated when ``q_x < 0``), the CTF² grid the same weight times the interpolated CTF².
Only voxels with ``|k| <= x_max`` (the slice's dose cut-off on its ``y = 0`` row) are touched.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

__all__ = ["backproject_slices", "symmetrise_fourier"]


@njit(cache=True, nogil=True)
def _x_neighbours(xd, w):
    """Lower and upper x neighbours and the fraction on an FFTW half axis of ``w`` columns:
    beyond the last column RELION's interpolators read column ``w - 2``."""
    x0 = int(xd)
    xf = xd - x0
    if x0 >= w:
        x0 = w - 1
    x1 = x0 + 1
    if x1 >= w:
        x1 = w - 2
    return x0, x1, xf


@njit(cache=True, nogil=True)
def _wrapped_neighbours(d, n):
    """Lower and upper neighbours (wrapping) and the fraction on a full FFTW axis of ``n``."""
    i0 = int(d)
    f = d - i0
    if i0 < 0:
        i0 = 0
    elif i0 >= n:
        i0 = n - 1
    return i0, (i0 + 1) % n, f


@njit(cache=True, nogil=True)
def _bilinear_half_pair(image, weight, xs, ys):
    """Bilinear values of a 2D FFTW half image (h, w), complex, and of its real weight image
    (same shape) at signed frequency (xs, ys), the neighbours found once for both.

    RELION's clipping rules, kept because they decide the values near the edges: the Friedel
    mate (conjugated) is read for ``xs < 0``; the upper x neighbour beyond the last column is
    column ``w - 2``; rows wrap.
    """
    h, w = image.shape
    if xs >= 0.0:
        xd, yd, conj = xs, ys, False
    else:
        xd, yd, conj = -xs, -ys, True
    if yd < 0.0:
        yd += h
    x0, x1, xf = _x_neighbours(xd, w)
    y0, y1, yf = _wrapped_neighbours(yd, h)
    v0 = (1.0 - xf) * image[y0, x0] + xf * image[y0, x1]
    v1 = (1.0 - xf) * image[y1, x0] + xf * image[y1, x1]
    v = (1.0 - yf) * v0 + yf * v1
    u0 = (1.0 - xf) * weight[y0, x0] + xf * weight[y0, x1]
    u1 = (1.0 - xf) * weight[y1, x0] + xf * weight[y1, x1]
    u = (1.0 - yf) * u0 + yf * u1
    return (np.conj(v) if conj else v), u


@njit(cache=True, nogil=True)
def _trilinear_half(volume, xs, ys, zs):
    """Trilinear value of a 3D FFTW half volume (d, h, w) at signed frequency (xs, ys, zs).

    Same clipping rules as :func:`_bilinear_half_pair`, except that the mate is read for ``xs <= 0``
    (RELION's 3D interpolator tests ``xs > 0``).
    """
    d, h, w = volume.shape
    if xs > 0.0:
        xd, yd, zd, conj = xs, ys, zs, False
    else:
        xd, yd, zd, conj = -xs, -ys, -zs, True
    if yd < 0.0:
        yd += h
    if zd < 0.0:
        zd += d
    x0, x1, xf = _x_neighbours(xd, w)
    y0, y1, yf = _wrapped_neighbours(yd, h)
    z0, z1, zf = _wrapped_neighbours(zd, d)
    v00 = (1.0 - xf) * volume[z0, y0, x0] + xf * volume[z0, y0, x1]
    v10 = (1.0 - xf) * volume[z0, y1, x0] + xf * volume[z0, y1, x1]
    v01 = (1.0 - xf) * volume[z1, y0, x0] + xf * volume[z1, y0, x1]
    v11 = (1.0 - xf) * volume[z1, y1, x0] + xf * volume[z1, y1, x1]
    v0 = (1.0 - yf) * v00 + yf * v10
    v1 = (1.0 - yf) * v01 + yf * v11
    v = (1.0 - zf) * v0 + zf * v1
    return np.conj(v) if conj else v


@njit(cache=True, nogil=True)
def _gather_slice(spectrum, weight, m, max_freq, data, ctf2):
    """Add one slice (h2, w2) into ``data`` / ``ctf2`` (d, h, w) in place; ``m`` = A⁻ᵀ (3, 3)."""
    d3, h3, wh3 = data.shape
    h2, wh2 = spectrum.shape
    nx, ny, nz = m[2, 0], m[2, 1], m[2, 2]
    for z in range(d3):
        zz = float(z - d3) if z >= d3 // 2 else float(z)
        for y in range(h3):
            yy = float(y - h3) if y >= h3 // 2 else float(y)
            # x range where the plane |q_z| < 1 crosses this row.
            yz = ny * yy + nz * zz
            if nx == 0.0:
                if yz <= -1.0 or yz >= 1.0:
                    continue
                x0, x1 = 0, wh3 - 1
            else:
                a0 = (-yz - 1.0) / nx
                a1 = (-yz + 1.0) / nx
                lo, hi = (a0, a1) if a0 < a1 else (a1, a0)
                x0 = int(max(math.ceil(lo), 0.0))
                x1 = int(min(math.floor(hi), wh3 - 1.0))
            # Dose cut-off: a sphere of radius max_freq (integer part of the row's extent).
            r2 = float(max_freq * max_freq) - yy * yy - zz * zz
            if r2 < 0.0:
                continue
            x1 = min(x1, int(math.sqrt(r2)))
            for x in range(x0, x1 + 1):
                qx = m[0, 0] * x + m[0, 1] * yy + m[0, 2] * zz
                qy = m[1, 0] * x + m[1, 1] * yy + m[1, 2] * zz
                qz = m[2, 0] * x + m[2, 1] * yy + m[2, 2] * zz
                if -1.0 < qz < 1.0 and abs(qx) < wh2 and abs(qy) < h2 // 2 + 1:
                    c = 1.0 - abs(qz)
                    value, ctf2_value = _bilinear_half_pair(spectrum, weight, qx, qy)
                    data[z, y, x] += c * value
                    ctf2[z, y, x] += c * ctf2_value


@njit(cache=True, nogil=True)
def _gather_all(spectra, weights, matrices, max_freqs, targets, data, ctf2):
    for i in range(spectra.shape[0]):
        t = targets[i]
        _gather_slice(spectra[i], weights[i], matrices[i], max_freqs[i], data[t], ctf2[t])


def backproject_slices(
    spectra: NDArray[np.complex128],
    weights: NDArray[np.float64],
    rotations: NDArray[np.float64],
    max_freqs: NDArray[np.int64],
    targets: NDArray[np.int64],
    data: NDArray[np.complex128],
    ctf2: NDArray[np.float64],
) -> None:
    """Backproject premultiplied slices into per-half Fourier sums, in place.

    Parameters
    ----------
    spectra
        (m, box, box//2+1) premultiplied slices (FFTW half layout, origin at element 0).
    weights
        (m, box, box//2+1) their CTF² (dose-weighted).
    rotations
        (m, 3, 3) ``A = P_f[:3,:3] @ R_particle``: tilt-image axes from particle axes.
    max_freqs
        (m,) dose cut-off of each slice: one past the last kept ``x`` on its row ``y = 0``.
    targets
        (m,) which sum (half set) each slice goes to.
    data, ctf2
        (halves, box, box, box//2+1) complex and real sums.
    """
    matrices = np.ascontiguousarray(np.swapaxes(np.linalg.inv(rotations), -1, -2), dtype=np.float64)
    _gather_all(np.ascontiguousarray(spectra, dtype=np.complex128), np.ascontiguousarray(weights, dtype=np.float64),
                matrices, np.ascontiguousarray(max_freqs, dtype=np.int64),
                np.ascontiguousarray(targets, dtype=np.int64), data, ctf2)


@njit(cache=True, nogil=True)
def _symmetrise(volume, operators, out):
    d, h, w = volume.shape
    n_ops = operators.shape[0]
    for z in range(d):
        zz = float(z - d) if z >= d // 2 else float(z)
        for y in range(h):
            yy = float(y - h) if y >= h // 2 else float(y)
            for x in range(w):
                xx = float(x)
                acc = volume[z, y, x]
                for k in range(n_ops):
                    r = operators[k]
                    acc += _trilinear_half(volume,
                                           r[0, 0] * xx + r[0, 1] * yy + r[0, 2] * zz,
                                           r[1, 0] * xx + r[1, 1] * yy + r[1, 2] * zz,
                                           r[2, 0] * xx + r[2, 1] * yy + r[2, 2] * zz)
                out[z, y, x] = acc / (n_ops + 1)


def symmetrise_fourier(volume: NDArray, operators: NDArray[np.float64]) -> NDArray:
    """Average a Fourier half volume over a point group, as reconstruct_particle does.

    Parameters
    ----------
    volume
        (box, box, box//2+1) complex data sum or real CTF² sum.
    operators
        (order, 3, 3) the group's matrices, identity first (it is the voxel itself).

    Returns
    -------
    The mean of the volume and its trilinearly interpolated copies at ``R k`` (same dtype):
    an average, not a sum, so a Wiener constant meets data and weights divided by the order.
    """
    others = np.ascontiguousarray(operators[1:], dtype=np.float64)
    if len(others) == 0:
        return volume
    is_real = not np.iscomplexobj(volume)
    source = np.ascontiguousarray(volume, dtype=np.complex128)
    out = np.empty_like(source)
    _symmetrise(source, others, out)
    return out.real.copy() if is_real else out
