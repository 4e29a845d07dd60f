"""Array-module version of :mod:`._backproject`'s slab backprojection: the same rules
(``relion_tomo_reconstruct_particle``'s), written as whole-array operations of ``xp`` (numpy or
cupy), so that Reconstruct particle runs its insertion on the GPU through CuPy and, with numpy,
can be checked on any machine against the numba kernel it replaces there.

A batch of slices is handled at once: every ``(slice, z, y)`` row of the grid gets the x range
where the slice's plane passes within one voxel (``|q_z| < 1``) and inside the dose cut-off
(exactly the numba kernel's row arithmetic), the rows are expanded into voxels, each voxel
reads the slice's bilinear value (RELION's clipping rules, Friedel mate for ``q_x < 0``), and
the values are scatter-added into the half sums (slices of a batch can meet at a voxel).
"""
from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from processing.backend import get_array_module, scatter_add

__all__ = ["backproject_slices_array"]

#: Grid rows (slice x z x y) per batch: bounds the temporaries (a dozen arrays of this length,
#: and the voxels, a few per row).
ROWS_PER_BATCH = 1 << 21


def _logical(n: int, xp: ModuleType) -> Any:
    """Signed frequency of each FFTW index of a full axis of ``n`` (``>= n//2`` read as negative)."""
    i = xp.arange(n, dtype=np.float64)
    return xp.where(i >= n // 2, i - n, i)


def _row_ranges(xp: ModuleType, m: Any, max_freq: Any, shape: tuple[int, int, int]) -> tuple[Any, Any]:
    """First x and voxel count of every (slice, z, y) row, flattened: the plane's slab ``|q_z| < 1``
    crossed with ``x**2 + y**2 + z**2 <= max_freq**2`` (the numba kernel's arithmetic)."""
    d3, h3, wh3 = shape
    zz = _logical(d3, xp)[None, :, None]
    yy = _logical(h3, xp)[None, None, :]
    nx, ny, nz = (m[:, 2, k][:, None, None] for k in range(3))
    yz = ny * yy + nz * zz
    flat_plane = nx == 0.0
    safe_nx = xp.where(flat_plane, 1.0, nx)
    a0 = (-yz - 1.0) / safe_nx
    a1 = (-yz + 1.0) / safe_nx
    lo, hi = xp.minimum(a0, a1), xp.maximum(a0, a1)
    first = xp.maximum(xp.ceil(lo), 0.0)
    last = xp.minimum(xp.floor(hi), wh3 - 1.0)
    first = xp.where(flat_plane, 0.0, first)
    last = xp.where(flat_plane, wh3 - 1.0, last)
    crossed = ~flat_plane | ((yz > -1.0) & (yz < 1.0))
    r2 = (max_freq.astype(np.float64) ** 2)[:, None, None] - yy * yy - zz * zz
    inside = r2 >= 0.0
    last = xp.minimum(last, xp.floor(xp.sqrt(xp.maximum(r2, 0.0))))
    count = xp.where(crossed & inside, xp.maximum(last - first + 1.0, 0.0), 0.0)
    # rows without voxels can have first ~ 1e300 (a plane almost parallel to x): bounded before the cast
    first = xp.minimum(first, float(wh3))
    return first.astype(np.int64).reshape(-1), count.astype(np.int64).reshape(-1)


def _bilinear_pair(xp: ModuleType, image: Any, weight: Any, b: Any, xs: Any, ys: Any) -> tuple[Any, Any]:
    """Bilinear values of slices ``image[b]`` (complex) and ``weight[b]`` (real) at signed
    frequencies (xs, ys): RELION's clipping rules (see ``_bilinear_half_pair``)."""
    _, h, w = image.shape
    conj = xs < 0.0
    xd = xp.where(conj, -xs, xs)
    yd = xp.where(conj, -ys, ys)
    yd = xp.where(yd < 0.0, yd + h, yd)
    x0 = xd.astype(np.int64)
    xf = xd - x0
    x0 = xp.where(x0 >= w, w - 1, x0)
    x1 = x0 + 1
    x1 = xp.where(x1 >= w, w - 2, x1)
    y0 = yd.astype(np.int64)
    yf = yd - y0
    y0 = xp.clip(y0, 0, h - 1)
    y1 = (y0 + 1) % h

    def at(grid: Any) -> Any:
        v0 = (1.0 - xf) * grid[b, y0, x0] + xf * grid[b, y0, x1]
        v1 = (1.0 - xf) * grid[b, y1, x0] + xf * grid[b, y1, x1]
        return (1.0 - yf) * v0 + yf * v1

    value = at(image)
    return xp.where(conj, xp.conj(value), value), at(weight)


def _insert_batch(xp: ModuleType, spectra: Any, weights: Any, m: Any, max_freqs: Any, targets: Any,
                  data: Any, ctf2: Any) -> None:
    """Backproject one batch of slices (see :func:`backproject_slices_array`)."""
    _, d3, h3, wh3 = data.shape
    _, h2, wh2 = spectra.shape
    first, count = _row_ranges(xp, m, max_freqs, (d3, h3, wh3))
    end = xp.cumsum(count)
    total = int(end[-1]) if end.size else 0
    if total == 0:
        return
    voxel = xp.arange(total, dtype=np.int64)
    row = xp.searchsorted(end, voxel, side="right")
    x = first[row] + (voxel - (end[row] - count[row]))
    b = row // (d3 * h3)
    z = (row // h3) % d3
    y = row % h3
    zz = _logical(d3, xp)[z]
    yy = _logical(h3, xp)[y]
    xf = x.astype(np.float64)
    mb = m[b]
    qx = mb[:, 0, 0] * xf + mb[:, 0, 1] * yy + mb[:, 0, 2] * zz
    qy = mb[:, 1, 0] * xf + mb[:, 1, 1] * yy + mb[:, 1, 2] * zz
    qz = mb[:, 2, 0] * xf + mb[:, 2, 1] * yy + mb[:, 2, 2] * zz
    keep = (qz > -1.0) & (qz < 1.0) & (xp.abs(qx) < wh2) & (xp.abs(qy) < h2 // 2 + 1)
    b, x, y, z, qx, qy, qz = (a[keep] for a in (b, x, y, z, qx, qy, qz))
    value, ctf2_value = _bilinear_pair(xp, spectra, weights, b, qx, qy)
    c = 1.0 - xp.abs(qz)
    index = ((targets[b] * d3 + z) * h3 + y) * wh3 + x
    data_ri = data.reshape(-1).view(np.float64)
    scatter_add(data_ri, 2 * index, c * value.real)
    scatter_add(data_ri, 2 * index + 1, c * value.imag)
    scatter_add(ctf2.reshape(-1), index, c * ctf2_value)


def backproject_slices_array(
    spectra: Any, weights: Any, rotations: Any, max_freqs: Any, targets: Any, data: Any, ctf2: Any,
) -> None:
    """:func:`processing.reconstruct._backproject.backproject_slices` in ``data``'s array module
    (the GPU for cupy sums): the same arguments and shapes, the sums added to in place.

    ``data`` (halves, box, box, box//2+1) complex128 and ``ctf2`` float64 must be C-contiguous;
    the slices and their parameters are moved to ``data``'s memory.
    """
    xp = get_array_module(data)
    matrices = np.swapaxes(np.linalg.inv(np.asarray(rotations, dtype=np.float64)), -1, -2)
    spectra = xp.asarray(spectra, dtype=np.complex128)
    weights = xp.asarray(weights, dtype=np.float64)
    m_all = xp.asarray(np.ascontiguousarray(matrices))
    freq_all = xp.asarray(np.asarray(max_freqs, dtype=np.int64))
    target_all = xp.asarray(np.asarray(targets, dtype=np.int64))
    rows_per_slice = data.shape[1] * data.shape[2]
    batch = max(1, ROWS_PER_BATCH // rows_per_slice)
    for start in range(0, spectra.shape[0], batch):
        part = slice(start, start + batch)
        _insert_batch(xp, spectra[part], weights[part], m_all[part], freq_all[part], target_all[part], data, ctf2)
