"""``relion_mask_create --i map.mrc --o mask.mrc``: read the map, optionally low-pass filter it,
make RELION's automatic mask from it (:mod:`.automask`), optionally invert it, and write it.

Order (RELION's ``mask_create``): pixel size (``--angpix``, else the map header) -> low-pass
(``--lowpass``, RELION's ``lowPassFilterMap``) -> binarise / extend / soft edge -> helical Z
cut (``--helix``) -> invert (``--invert``: ``1 - mask``) -> write float32 with the pixel size.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from processing.errors import InputError
from processing.fourier.filters import lowpass_filter_relion
from processing.io.mrc import MrcHeader, check_mrc_file, read_mrc, write_mrc

from .automask import binarise, cut_helix_z, extend_binary, soft_edge

__all__ = ["MaskSettings", "MaskResult", "relion_lowpass", "check_input_map", "make_mask", "create_mask"]

#: RELION's ``lowPassFilterMap`` default edge: a raised cosine over 2 shells.
LOWPASS_EDGE_SHELLS = 2


@dataclass(frozen=True)
class MaskSettings:
    """What ``relion_mask_create`` is asked to do.

    Attributes
    ----------
    threshold
        ``--ini_threshold``: initial binarisation threshold (map units).
    extend
        ``--extend_inimask``: voxels to grow (> 0) or shrink (< 0) the binary mask.
    width
        ``--width_soft_edge``: raised-cosine soft edge (voxels, >= 0).
    lowpass
        ``--lowpass``: resolution (Å) of the low-pass applied first; <= 0: none.
    pixel_size
        ``--angpix`` (Å); <= 0: the input map's header.
    invert
        ``--invert``: write ``1 - mask``.
    helix_z_fraction
        ``--helix --z_percentage``: keep this central fraction along Z; ``None``: no cut.
    """

    threshold: float = 0.01
    extend: float = 0.0
    width: float = 0.0
    lowpass: float = -1.0
    pixel_size: float = -1.0
    invert: bool = False
    helix_z_fraction: float | None = None


@dataclass(frozen=True)
class MaskResult:
    """What was written: the file, its pixel size, and how much of the box the mask covers.

    Attributes
    ----------
    path
        The mask file.
    pixel_size
        Å per voxel written in its header.
    shape
        ``(nz, ny, nx)`` voxels.
    inside
        Voxels of value 1 (> 0.999, RELION's test) in the written mask.
    edge
        Voxels strictly between 0 and 1 (0.001 .. 0.999).
    volume_fraction
        Sum of the mask over the number of voxels (soft voxels count by their value).
    """

    path: Path
    pixel_size: float
    shape: tuple[int, int, int]
    inside: int
    edge: int
    volume_fraction: float


def relion_lowpass(volume: NDArray, *, resolution: float, pixel_size: float) -> NDArray[np.float64]:
    """RELION's ``lowPassFilterMap`` of a cubic ``[N, N, N]`` map (2-shell raised-cosine edge at
    shell ``round(N * pixel_size / resolution)``; resolution and pixel size in Å); see
    :func:`processing.fourier.filters.lowpass_filter_relion`."""
    a = np.asarray(volume, dtype=np.float64)
    if a.ndim != 3 or len(set(a.shape)) != 1:
        raise ValueError(f"relion_lowpass needs a cubic map, got shape {a.shape}")
    return lowpass_filter_relion(a, resolution=resolution, pixel_size=pixel_size, edge_width=LOWPASS_EDGE_SHELLS)


def check_input_map(path: str | os.PathLike, settings: MaskSettings) -> MrcHeader:
    """Everything that can be checked from the header: the map exists, is a readable cubic 3D
    map, and has a pixel size when the low-pass needs one and ``--angpix`` gives none.

    Raises
    ------
    InputError
        Naming the file and, for a setting, the job.star field.
    """
    path = Path(path)
    header = check_mrc_file(path)
    if len(header.shape) != 3:
        raise InputError(f"a 3D map is needed, this is a {header.shape[1]} x {header.shape[0]} px image",
                         file=path)
    nz, ny, nx = header.shape
    if not nx == ny == nz:
        raise InputError(f"the map is {nx} x {ny} x {nz} px; mask creation needs a cubic map "
                         "(RELION's low-pass filter refuses others)", file=path)
    if nx < 5 and settings.helix_z_fraction is not None:
        raise InputError(f"the helical Z cut needs at least 5 slices along Z, the map has {nz}", file=path)
    if settings.lowpass > 0 and settings.pixel_size <= 0 and header.pixel_size <= 0:
        raise InputError("the map's header has no pixel size: give one (Pixel size, --angpix) for the "
                         "low-pass filter", file=path, column="angpix")
    return header


def make_mask(volume: NDArray, settings: MaskSettings, *, pixel_size: float,
              source: str | os.PathLike | None = None) -> NDArray[np.float64]:
    """The mask of a map, in memory (no files).

    Parameters
    ----------
    volume
        ``[N, N, N]`` map.
    settings
        What to do (``settings.pixel_size`` is ignored: ``pixel_size`` is the one used).
    pixel_size
        Å per voxel, for the low-pass.
    source
        The map's file, named in errors.

    Returns
    -------
    ndarray
        float64 ``[N, N, N]`` in [0, 1].

    Raises
    ------
    InputError
        When no voxel reaches the threshold, or the extended mask is empty (a mask of nothing
        would silently remove the whole map wherever it is used).
    """
    work = np.asarray(volume, dtype=np.float64)
    if settings.lowpass > 0:
        work = relion_lowpass(work, resolution=settings.lowpass, pixel_size=pixel_size)
    binary = binarise(work, threshold=settings.threshold)
    what = f"the map low-pass filtered to {settings.lowpass:g} Å" if settings.lowpass > 0 else "the map"
    if not binary.any():
        raise InputError(f"no voxel of {what} reaches the initial binarisation threshold "
                         f"{settings.threshold:g} (its maximum is {float(work.max()):.6g}): the mask "
                         "would be empty; lower the threshold", file=source, column="inimask_threshold")
    extended = extend_binary(binary, pixels=settings.extend)
    if not extended.any():
        raise InputError(f"shrinking by {-settings.extend:g} px removes every voxel of the binary mask "
                         f"({int(binary.sum())} voxels): the mask would be empty", file=source,
                         column="extend_inimask")
    if settings.width < 0:
        raise InputError(f"the soft edge width must be >= 0 (got {settings.width:g})", column="width_mask_edge")
    mask = soft_edge(extended, width=settings.width)  # RELION's autoMask, step by step
    if settings.helix_z_fraction is not None:
        mask = cut_helix_z(mask, z_fraction=settings.helix_z_fraction, width=settings.width)
    if settings.invert:
        mask = 1.0 - mask
    return mask


def create_mask(input_map: str | os.PathLike, output: str | os.PathLike, settings: MaskSettings, *,
                log: Callable[[str], None] = print) -> MaskResult:
    """``relion_mask_create``: read ``input_map``, make the mask, write ``output`` atomically
    (float32, the pixel size in the header).

    Raises
    ------
    InputError
        Bad input map or settings (see :func:`check_input_map`, :func:`make_mask`); nothing is
        written then.
    """
    header = check_input_map(input_map, settings)
    pixel_size = settings.pixel_size if settings.pixel_size > 0 else header.pixel_size
    if settings.pixel_size <= 0:
        log(f"Pixel size (--angpix) not given: using the map header's {pixel_size:g} A")
    volume = read_mrc(input_map).data
    log(f"Creating a mask from {input_map} ({volume.shape[2]} x {volume.shape[1]} x {volume.shape[0]} px)")
    mask = make_mask(volume, settings, pixel_size=pixel_size, source=input_map)
    write_mrc(output, mask.astype(np.float32), pixel_size, label="tomodash maskcreate")
    written = mask.astype(np.float32)
    result = MaskResult(
        path=Path(output), pixel_size=float(pixel_size), shape=tuple(int(n) for n in mask.shape),
        inside=int(np.count_nonzero(written > 0.999)),
        edge=int(np.count_nonzero((written > 0.001) & (written < 0.999))),
        volume_fraction=float(written.astype(np.float64).mean()),
    )
    log(f"Done creating mask! Written out: {output} ({result.inside} voxels inside, {result.edge} in the soft "
        f"edge, {100 * result.volume_fraction:.2f}% of the box)")
    return result
