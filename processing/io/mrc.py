"""MRC maps, images and stacks as RELION writes them (spec 2.8), through ``mrcfile``.

Array layout: volumes ``[z, y, x]``, 2D stacks ``[n, y, x]``, single images ``[y, x]``; the
box centre is element ``N//2`` on every axis.

Header conventions written here (those of RELION 5): mode 2 (float32) or, on request, mode 12
(float16); ``mx, my, mz = nx, ny, nz`` and ``cella = pixel * (nx, ny, nz)`` so that the pixel
size is ``cella.x / mx``; origin and ``nxstart..`` 0; ``mapc/mapr/maps = 1, 2, 3``. Stacks
(``.mrcs``) are written with ``ispg = 0``, ``mz = 1`` and ``cella.z = 1`` as RELION does;
volumes with ``ispg = 1``. The extension, not the header, says whether a 3D array is a stack.

Image references ``N@stack.mrcs`` (1-based ``N``) address one slice of a stack.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import mrcfile
import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InputError
from .atomic import atomic_path

__all__ = [
    "MrcData",
    "MrcHeader",
    "read_mrc",
    "read_mrc_header",
    "check_mrc_file",
    "check_finite",
    "map_image",
    "write_mrc",
    "parse_image_reference",
    "read_image",
    "read_stack_slice",
    "is_stack_path",
]

_READ_ERRORS = (ValueError, OSError, EOFError, IndexError, TypeError)

#: MRC modes tomodash reads, with their bytes per value: 0 int8, 1 int16, 2 float32, 6 uint16,
#: 12 float16. Modes 3 and 4 (complex) hold Fourier data, not images or maps.
_MODE_BYTES = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}
_COMPLEX_MODES = (3, 4)


@dataclass(frozen=True)
class MrcData:
    """An MRC file's data and pixel size.

    Attributes
    ----------
    data
        ``[z, y, x]`` volume, ``[n, y, x]`` stack or ``[y, x]`` image (float32/float16 or
        the file's integer type). Read-only when memory-mapped.
    pixel_size
        Å per pixel along x (``cella.x / mx``); 0.0 when the header does not set it.
    """

    data: NDArray
    pixel_size: float


@dataclass(frozen=True)
class MrcHeader:
    """Header facts of an MRC file, read without its data.

    Attributes
    ----------
    shape
        numpy shape of the data: ``(nz, ny, nx)``, or ``(ny, nx)`` when ``nz == 1``.
    pixel_size
        Å per pixel along x (0.0 when unset).
    mode
        MRC mode (2 float32, 12 float16, ...).
    """

    shape: tuple[int, ...]
    pixel_size: float
    mode: int

    @property
    def image_size(self) -> tuple[int, int]:
        """``(width, height)`` = ``(nx, ny)`` in pixels."""
        return int(self.shape[-1]), int(self.shape[-2])


def is_stack_path(path: str | PathLike) -> bool:
    """True when the file name says "stack of 2D images" (``.mrcs``)."""
    return str(path).lower().endswith(".mrcs")


def _pixel_size(header) -> float:
    mx = int(header.mx)
    cella = float(header.cella.x)
    if mx <= 0 or cella <= 0:
        return 0.0
    return cella / mx


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise InputError("file not found", file=path)
    if path.is_dir():
        raise InputError("expected an MRC file but found a directory", file=path)


def _open(path: Path, *, header_only: bool = False, mmap: bool = False):
    _check_exists(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            if mmap:
                return mrcfile.mmap(path, mode="r")
            return mrcfile.open(path, mode="r", header_only=header_only)
    except _READ_ERRORS as exc:
        if not header_only:
            _explain_unreadable(path)
        raise InputError(f"corrupt or truncated MRC file: {exc}", file=path) from None


def _explain_unreadable(path: Path) -> None:
    """When a file's data cannot be read but its header can, say what in the header is wrong
    (an unknown or complex mode) rather than mrcfile's generic message."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
                mode = int(mrc.header.mode)
    except _READ_ERRORS:
        return
    _check_mode(mode, path)


def _check_mode(mode: int, path: Path) -> None:
    if mode in _COMPLEX_MODES:
        raise InputError(f"MRC mode {mode} holds complex (Fourier) data; an image or map "
                         "(mode 0, 1, 2, 6 or 12) is needed", file=path)
    if mode not in _MODE_BYTES:
        raise InputError(f"unknown MRC mode {mode} (readable: 0, 1, 2, 6, 12)", file=path)


def check_mrc_file(path: str | PathLike) -> MrcHeader:
    """Read an MRC header and check that the file can hold the data it announces.

    Cheap (the header and the file size only): this is what jobs run on every input image
    before they write anything, so that a corrupt, truncated, header-only or unknown-mode
    file is refused up front rather than half-way through a run.

    Raises
    ------
    InputError
        Naming the file: missing, unreadable header, unknown or complex mode, zero or negative
        dimensions, or fewer data bytes than ``nx * ny * nz`` values of the mode.
    """
    path = Path(path)
    header = read_mrc_header(path)
    _check_mode(header.mode, path)
    if min(header.shape) <= 0:
        raise InputError(f"MRC header has an empty shape {header.shape}", file=path)
    with _open(path, header_only=True) as mrc:
        extended = int(mrc.header.nsymbt)
    expected = 1024 + extended + int(np.prod(header.shape)) * _MODE_BYTES[header.mode]
    size = path.stat().st_size
    if size < expected:
        raise InputError(f"truncated MRC file: {size} bytes, the header announces {expected} "
                         f"(shape {header.shape}, mode {header.mode})", file=path)
    return header


def check_finite(data: NDArray, path: str | PathLike, *, what: str = "") -> None:
    """Raise :class:`InputError` if ``data`` holds a NaN or an infinity.

    NaN or Inf pixels would spread through every Fourier transform and average they enter, so
    they are refused where the data are read. ``what`` names the part of the file (e.g.
    ``"tilt 3"``) for the message; for a stack or volume the first bad slice is named too.
    """
    if data.dtype.kind not in "fc":
        return  # integer modes cannot hold NaN or Inf
    finite = np.isfinite(data)
    if finite.all():
        return
    where = np.unravel_index(int(np.argmin(finite)), data.shape)
    place = f"{what}: " if what else ""
    if data.ndim == 3:
        place += f"slice {int(where[0]) + 1} (1-based) "
    raise InputError(f"{place}data contain NaN or infinite values "
                     f"({int(finite.size - finite.sum())} of {finite.size})", file=path)


def map_image(path: str | PathLike, *, shape: tuple[int, int] | None = None, what: str = "",
              finite: bool = True):
    """Memory-map an MRC image (or the first slice of a stack) after checking it is usable.

    Returns ``(handle, data)``: the open ``mrcfile`` handle (close it when done) and the
    ``[y, x]`` read-only array. Unlike a permissive map, which returns no data for a corrupt
    file, every problem is an :class:`InputError` naming the file (and ``what``, e.g. the
    tilt index).

    Parameters
    ----------
    shape
        Required ``(ny, nx)``, if known (the other tilts' size).
    what
        Which image this is, for messages.
    finite
        Scan the image once for NaN/Inf (reads the whole image through the page cache).
    """
    path = Path(path)
    label = f"{what}: " if what else ""
    check_mrc_file(path)
    handle = _open(path, mmap=True)
    try:
        data = handle.data
        if data is None:
            raise InputError(f"{label}MRC file has no readable data", file=path)
        image = data[0] if data.ndim == 3 else data
        if shape is not None and tuple(image.shape) != tuple(shape):
            raise InputError(f"{label}image is {image.shape[1]} x {image.shape[0]} px, expected "
                             f"{shape[1]} x {shape[0]} px (the size of the other tilt images)", file=path)
        if finite:
            check_finite(image, path, what=what)
    except InputError:
        handle.close()
        raise
    except _READ_ERRORS as exc:
        handle.close()
        raise InputError(f"{label}corrupt or truncated MRC file: {exc}", file=path) from None
    except BaseException:
        handle.close()
        raise
    return handle, image


def read_mrc_header(path: str | PathLike) -> MrcHeader:
    """Shape, pixel size and mode of an MRC file, without reading its data.

    Raises
    ------
    InputError
        Missing file or an invalid header.
    """
    path = Path(path)
    with _open(path, header_only=True) as mrc:
        h = mrc.header
        nx, ny, nz = int(h.nx), int(h.ny), int(h.nz)
        shape = (ny, nx) if nz == 1 else (nz, ny, nx)
        return MrcHeader(shape=shape, pixel_size=_pixel_size(h), mode=int(h.mode))


def read_mrc(path: str | PathLike, *, mmap: bool = False, finite: bool = True) -> MrcData:
    """Read an MRC map, image or stack.

    Parameters
    ----------
    path
        ``.mrc`` or ``.mrcs`` file.
    mmap
        Memory-map the data (read-only array) instead of reading it into memory.
    finite
        Refuse data holding NaN or Inf (checked on data read into memory, not on a map).

    Returns
    -------
    MrcData
        ``data`` indexed ``[z, y, x]`` / ``[n, y, x]`` / ``[y, x]`` and ``pixel_size`` (Å).

    Raises
    ------
    InputError
        Missing, corrupt or truncated file, a complex or unknown mode, or (``finite``)
        NaN/Inf values.
    """
    path = Path(path)
    mrc = _open(path, mmap=mmap)
    try:
        _check_mode(int(mrc.header.mode), path)
        data = mrc.data
        if data is None:
            raise InputError("MRC file has no data", file=path)
        if not mmap:
            data = np.array(data)  # own the memory; independent of the closed file
            if finite:
                check_finite(data, path)
        return MrcData(data=data, pixel_size=_pixel_size(mrc.header))
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(f"corrupt or truncated MRC file: {exc}", file=path) from None
    finally:
        mrc.close()


def write_mrc(
    path: str | PathLike,
    data: ArrayLike,
    pixel_size: float,
    *,
    float16: bool = False,
    stack: bool | None = None,
    label: str = "tomodash",
) -> None:
    """Write an MRC file atomically with RELION's header conventions.

    Parameters
    ----------
    path
        Output file; its directory must exist.
    data
        ``[y, x]`` image, ``[z, y, x]`` volume or ``[n, y, x]`` stack (real values).
    pixel_size
        Å per pixel (stored as ``cella = pixel * n``).
    float16
        Write mode 12 (IEEE half precision, RELION's ``--float16``) instead of mode 2.
    stack
        Write a 3D array as a stack of 2D images (``mz = 1``, ``cella.z = 1``, ``ispg = 0``).
        Default: true exactly when the file name ends in ``.mrcs``.
    label
        Text of the first header label.
    """
    path = Path(path)
    array = np.asarray(data)
    if array.ndim not in (2, 3):
        raise ValueError(f"MRC data must be 2D or 3D, got shape {array.shape}")
    if np.iscomplexobj(array):
        raise ValueError("complex data cannot be written with write_mrc")
    array = np.ascontiguousarray(array, dtype=np.float16 if float16 else np.float32)
    if stack is None:
        stack = is_stack_path(path)
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True) as mrc:
            mrc.set_data(array)
            h = mrc.header
            nx, ny = int(h.nx), int(h.ny)
            nz = int(h.nz)
            if stack and array.ndim == 3:
                mrc.set_image_stack()
                h.mx, h.my, h.mz = nx, ny, 1
                h.cella = (pixel_size * nx, pixel_size * ny, 1.0)
            else:
                if array.ndim == 3:
                    mrc.set_volume()
                h.mx, h.my, h.mz = nx, ny, nz
                h.cella = (pixel_size * nx, pixel_size * ny, pixel_size * nz)
            h.origin = (0.0, 0.0, 0.0)
            h.nxstart = h.nystart = h.nzstart = 0
            h.mapc, h.mapr, h.maps = 1, 2, 3
            mrc.update_header_stats()
            h.nlabl = 0
            h.label[:] = b""
            mrc.add_label(label[:80])


def parse_image_reference(reference: str) -> tuple[int | None, str]:
    """Split an image reference into ``(index, path)``.

    ``"12@Subtomograms/a.mrcs"`` -> ``(12, "Subtomograms/a.mrcs")`` (1-based index);
    ``"a_stack2d.mrcs"`` -> ``(None, "a_stack2d.mrcs")`` (the whole file).

    Raises
    ------
    InputError
        When the part before ``@`` is not a positive integer.
    """
    if "@" not in reference:
        return None, reference
    number, path = reference.split("@", 1)
    try:
        index = int(number)
    except ValueError:
        raise InputError(f"bad image reference {reference!r}: expected N@file with integer N") from None
    if index < 1:
        raise InputError(f"bad image reference {reference!r}: slice numbers start at 1")
    return index, path


def _resolve(path: str, root: str | PathLike | None) -> Path:
    p = Path(path)
    if root is not None and not p.is_absolute():
        return Path(root) / p
    return p


def read_stack_slice(path: str | PathLike, index: int) -> NDArray:
    """Slice ``index`` (1-based, as in ``N@stack.mrcs``) of a stack, shape (y, x).

    The stack is memory-mapped, so only that slice is read.

    Raises
    ------
    InputError
        Missing/corrupt file or an index outside ``1..n``.
    """
    path = Path(path)
    mrc = _open(path, mmap=True)
    try:
        _check_mode(int(mrc.header.mode), path)
        data = mrc.data
        if data is None:
            raise InputError("MRC file has no data", file=path)
        n = 1 if data.ndim == 2 else data.shape[0]
        if not 1 <= index <= n:
            raise InputError(f"image {index}@ requested but the stack holds {n} image(s)", file=path)
        out = np.array(data if data.ndim == 2 else data[index - 1])
        check_finite(out, path, what=f"image {index}")
        return out
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(f"corrupt or truncated MRC file: {exc}", file=path) from None
    finally:
        mrc.close()


def read_image(reference: str, *, root: str | PathLike | None = None) -> MrcData:
    """Read the data an image reference points to: ``N@stack.mrcs`` (one slice) or a file.

    Parameters
    ----------
    reference
        ``rlnImageName``-style reference.
    root
        Directory relative paths are resolved against (the project directory); default CWD.
    """
    index, name = parse_image_reference(reference)
    path = _resolve(name, root)
    if index is None:
        return read_mrc(path)
    pixel = read_mrc_header(path).pixel_size
    return MrcData(data=read_stack_slice(path, index), pixel_size=pixel)
