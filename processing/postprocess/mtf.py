"""The detector MTF as relion_postprocess reads and divides by it (``divideByMtf``).

The STAR file's first table has ``rlnResolutionInversePixel`` (1/detector pixel) and
``rlnMtfValue`` (> 0). Resolutions become 1/Å by dividing by ``--mtf_angpix``. For an element
at ``s = |k| / (N px)`` below Nyquist, RELION takes ``i0 = floor(s / step)`` with
``step = (s_last - s_first) / n_points`` (the number of points, not intervals), uses the first
value for ``i0 <= 0``, the last for ``i0 >= n - 1``, and otherwise interpolates linearly between
points ``i0`` and ``i0 + 1``.
"""
from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from processing.errors import InputError
from processing.fourier.fft import half_radius
from processing.io.star import read_star

__all__ = ["MtfCurve", "read_mtf", "mtf_weights"]

RES_LABEL = "rlnResolutionInversePixel"
VALUE_LABEL = "rlnMtfValue"


@dataclass(frozen=True)
class MtfCurve:
    """``resolution`` (1/detector pixel) and ``value`` (> 0), both ``(n,)``."""

    resolution: NDArray[np.float64]
    value: NDArray[np.float64]


def read_mtf(path: str | PathLike) -> MtfCurve:
    """Read an MTF STAR file; :class:`InputError` naming the file/table/column/row on bad data."""
    path = Path(path)
    if path.suffix != ".star":
        raise InputError("the MTF file is not a STAR file (expected a .star name)", file=path)
    blocks = read_star(path)
    name, table = next(iter(blocks.items()))
    if not isinstance(table, pd.DataFrame):
        raise InputError("the first table is not a loop of MTF points", file=path, table=name)
    for column in (RES_LABEL, VALUE_LABEL):
        if column not in table.columns:
            raise InputError("column missing", file=path, table=name, column=column)
    if len(table) < 2:
        raise InputError("the MTF needs at least two points", file=path, table=name)
    res = pd.to_numeric(table[RES_LABEL], errors="coerce").to_numpy(dtype=np.float64)
    val = pd.to_numeric(table[VALUE_LABEL], errors="coerce").to_numpy(dtype=np.float64)
    for column, values in ((RES_LABEL, res), (VALUE_LABEL, val)):
        bad = np.nonzero(~np.isfinite(values))[0]
        if bad.size:
            raise InputError("not a number", file=path, table=name, column=column, row=int(bad[0]) + 1)
    bad = np.nonzero(val < 1e-10)[0]
    if bad.size:
        raise InputError(f"zero or negative MTF value {val[bad[0]]:g}", file=path, table=name,
                         column=VALUE_LABEL, row=int(bad[0]) + 1)
    if (res[-1] - res[0]) / res.size < 1e-10:
        raise InputError("the resolution does not go up", file=path, table=name, column=RES_LABEL)
    return MtfCurve(res, val)


def mtf_weights(mtf: MtfCurve, *, box: int, pixel_size: float, mtf_pixel_size: float) -> NDArray[np.float64]:
    """The MTF at every element of an ``(N, N, N//2+1)`` half transform (1 at and beyond
    Nyquist, where RELION leaves the data alone)."""
    if mtf_pixel_size <= 0:
        raise ValueError(f"mtf_pixel_size must be > 0, got {mtf_pixel_size}")
    res = mtf.resolution / mtf_pixel_size
    val = mtf.value
    step = (res[-1] - res[0]) / res.size
    s = half_radius(box, ndim=3) / (box * pixel_size)
    i0 = np.floor(s / step).astype(np.int64)
    inner = np.clip(i0, 0, res.size - 2)
    x0, x1 = res[inner], res[inner + 1]
    y0, y1 = val[inner], val[inner + 1]
    out = y0 + (y1 - y0) * (s - x0) / (x1 - x0)
    out = np.where(i0 <= 0, val[0], out)
    out = np.where(i0 >= res.size - 1, val[-1], out)
    return np.where(s < 1.0 / (2.0 * pixel_size), out, 1.0)
