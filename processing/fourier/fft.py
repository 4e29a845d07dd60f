"""FFT backend and RELION's Fourier conventions (spec 2.5).

Conventions used everywhere in tomodash
---------------------------------------
* Real-space arrays are indexed ``[z, y, x]`` (volumes) or ``[y, x]`` (images); the box
  centre, i.e. the real-space origin, is element ``N//2`` on every axis.
* Half transforms use the FFTW / numpy ``rfftn`` layout: shape ``(N, N//2+1)`` in 2D,
  ``(N, N, N//2+1)`` in 3D, Fourier origin at element 0. The *logical* frequency of index
  ``i`` along y or z is ``i`` if ``i <= N//2`` else ``i - N`` (RELION's rule: the Nyquist row
  ``N/2`` of an even box counts as ``+N/2``); along x it is ``i`` (0..N//2).
* Normalisation ("RELION" normalisation): the forward transform is divided by the number of
  real-space samples ``N**d``; the inverse is unnormalised. With this convention
  ``F[0] = mean(x)``, and Fourier cropping/padding of a half transform keeps real-space grey
  values (binning does not change the density scale).
* :func:`rfft_centered` / :func:`irfft_centered` put the real-space origin at the box centre
  (``ifftshift`` before, ``fftshift`` after), which equals RELION's ``CenterFFT`` /
  ``CenterFFTbySign`` for even boxes.

On the CPU the transforms are ``scipy.fft`` with ``workers`` threads (see
:func:`set_fft_workers`); on the cupy backend they are ``cupy.fft``.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import scipy.fft as sfft
from numpy.typing import NDArray

from processing.backend import get_array_module

__all__ = [
    "set_fft_workers",
    "get_fft_workers",
    "rfftn",
    "irfftn",
    "fftshift",
    "ifftshift",
    "rfft_centered",
    "irfft_centered",
    "rfft2_centered",
    "rfft2_centered_cropped",
    "irfft2_centered",
    "rfft3_centered",
    "irfft3_centered",
    "checkerboard",
    "half_frequencies",
    "half_radius",
    "shell_index",
    "radial_sum",
    "radial_average",
    "crop_half",
    "pad_half",
]

_workers: int = int(os.environ.get("TOMODASH_FFT_WORKERS", "0")) or (os.cpu_count() or 1)


def set_fft_workers(n: int) -> None:
    """Set the number of threads scipy.fft uses (``n >= 1``; ignored on the GPU)."""
    global _workers
    if int(n) < 1:
        raise ValueError(f"number of FFT workers must be >= 1, got {n}")
    _workers = int(n)


def get_fft_workers() -> int:
    """The number of threads scipy.fft uses."""
    return _workers


def _is_numpy(a: Any) -> bool:
    return get_array_module(a) is np


def rfftn(x: Any, *, ndim: int, norm: str = "relion") -> Any:
    """Real-to-half FFT over the last ``ndim`` axes (origin at element 0, no centring).

    Parameters
    ----------
    x
        Real array ``(..., N, N)`` or ``(..., N, N, N)``.
    ndim
        Number of transformed (trailing) axes, 2 or 3.
    norm
        ``"relion"``: divided by the number of samples of the transformed axes (RELION's
        forward convention); ``"backward"``: unnormalised; ``"ortho"``: unitary.
    """
    axes = tuple(range(-ndim, 0))
    snorm = "forward" if norm == "relion" else norm
    if _is_numpy(x):
        return sfft.rfftn(x, axes=axes, norm=snorm, workers=_workers)
    xp = get_array_module(x)
    return xp.fft.rfftn(x, axes=axes, norm=snorm)


def irfftn(f: Any, *, size: int | tuple[int, ...], ndim: int, norm: str = "relion") -> Any:
    """Inverse of :func:`rfftn` (same ``norm``): half transform to real array.

    Parameters
    ----------
    f
        Half transform ``(..., N, N//2+1)`` or ``(..., N, N, N//2+1)``.
    size
        Real-space size ``N`` (or a tuple of the ``ndim`` sizes).
    ndim
        2 or 3.
    norm
        As in :func:`rfftn`; ``"relion"`` means an unnormalised inverse.
    """
    axes = tuple(range(-ndim, 0))
    s = (int(size),) * ndim if np.isscalar(size) else tuple(int(v) for v in size)
    snorm = "forward" if norm == "relion" else norm
    if _is_numpy(f):
        return sfft.irfftn(f, s=s, axes=axes, norm=snorm, workers=_workers)
    xp = get_array_module(f)
    return xp.fft.irfftn(f, s=s, axes=axes, norm=snorm)


def fftshift(x: Any, *, ndim: int) -> Any:
    """``fftshift`` over the last ``ndim`` axes (element 0 moves to ``N//2``)."""
    xp = get_array_module(x)
    return xp.fft.fftshift(x, axes=tuple(range(-ndim, 0)))


def ifftshift(x: Any, *, ndim: int) -> Any:
    """``ifftshift`` over the last ``ndim`` axes (element ``N//2`` moves to 0)."""
    xp = get_array_module(x)
    return xp.fft.ifftshift(x, axes=tuple(range(-ndim, 0)))


def rfft_centered(x: Any, *, ndim: int) -> Any:
    """RELION-normalised half transform with the real-space origin at the box centre.

    ``F = rfftn(ifftshift(x)) / N**ndim``. Shape ``(..., N, N//2+1)`` or
    ``(..., N, N, N//2+1)``, complex.
    """
    return rfftn(ifftshift(x, ndim=ndim), ndim=ndim, norm="relion")


def irfft_centered(f: Any, *, size: int, ndim: int) -> Any:
    """Inverse of :func:`rfft_centered`: ``fftshift(irfftn(f) * N**ndim)`` (real)."""
    return fftshift(irfftn(f, size=size, ndim=ndim, norm="relion"), ndim=ndim)


def rfft2_centered(image: Any) -> Any:
    """:func:`rfft_centered` of images ``(..., N, N)`` -> ``(..., N, N//2+1)``."""
    return rfft_centered(image, ndim=2)


def rfft2_centered_cropped(images: NDArray, rows: NDArray, n_columns: int) -> NDArray[np.complex128]:
    """The rows ``rows`` and first ``n_columns`` columns of :func:`rfft2_centered` of
    ``(..., N, N)`` images: ``(..., len(rows), n_columns)``, RELION-normalised.

    A Fourier crop taken during the transform: the x transform of every row,
    then the y transform of the kept columns only (a third of them for a 3x crop), instead
    of both of every column. For even ``N`` the centring is a sign (-1)^(i+j) on the kept
    elements, which spares the ``ifftshift`` copy; odd ``N`` shifts first. Cupy images are
    transformed on the GPU.
    """
    n = images.shape[-1]
    if n % 2:
        images = ifftshift(images, ndim=2)
    rows = np.asarray(rows)
    if _is_numpy(images):
        half_rows = sfft.rfft(images, axis=-1, workers=_workers)[..., :n_columns]
        spectra = sfft.fft(half_rows, axis=-2, workers=_workers)[..., rows, :]
    else:
        xp = get_array_module(images)
        half_rows = xp.fft.rfft(images, axis=-1)[..., :n_columns]
        spectra = xp.fft.fft(half_rows, axis=-2)[..., xp.asarray(rows), :]
    scale = 1.0 / float(n * n)
    if n % 2 == 0:
        parity = (rows[:, None] + np.arange(n_columns)[None, :]) % 2
        return spectra * get_array_module(spectra).asarray(np.where(parity == 1, -scale, scale))
    return spectra * scale


def irfft2_centered(f: Any, size: int) -> Any:
    """:func:`irfft_centered` of half transforms ``(..., N, N//2+1)`` -> ``(..., N, N)``."""
    return irfft_centered(f, size=size, ndim=2)


def rfft3_centered(volume: Any) -> Any:
    """:func:`rfft_centered` of volumes ``(..., N, N, N)`` -> ``(..., N, N, N//2+1)``."""
    return rfft_centered(volume, ndim=3)


def irfft3_centered(f: Any, size: int) -> Any:
    """:func:`irfft_centered` of half transforms ``(..., N, N, N//2+1)`` -> ``(..., N, N, N)``."""
    return irfft_centered(f, size=size, ndim=3)


def checkerboard(size: int, *, ndim: int, half: bool = True, dtype: Any = np.float64) -> NDArray:
    """Sign array ``(-1)**(i+j(+k))`` over array indices.

    Multiplying a half transform of an even box by it moves the real-space origin between
    element 0 and the box centre (RELION's ``CenterFFTbySign``); multiplying a real array by
    it moves the Fourier origin to the centre.

    Returns
    -------
    Array of shape ``(N,)*ndim`` or, with ``half``, ``(N,)*(ndim-1) + (N//2+1,)``.
    """
    shape = (size,) * (ndim - 1) + ((size // 2 + 1) if half else size,)
    idx = np.indices(shape).sum(axis=0)
    return (1 - 2 * (idx % 2)).astype(dtype)


def half_frequencies(size: int, *, ndim: int) -> tuple[NDArray[np.int64], ...]:
    """Logical integer frequencies of a half transform, broadcastable.

    Returns
    -------
    ``(ky, kx)`` of shapes ``(N, 1)``, ``(1, N//2+1)`` in 2D or ``(kz, ky, kx)`` of shapes
    ``(N,1,1)``, ``(1,N,1)``, ``(1,1,N//2+1)`` in 3D. ``k = i`` for ``i <= N//2``, else
    ``i - N`` (RELION's FFTW indexing).
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    i = np.arange(size)
    full = np.where(i <= size // 2, i, i - size)
    kx = np.arange(size // 2 + 1)
    if ndim == 2:
        return full[:, None], kx[None, :]
    return full[:, None, None], full[None, :, None], kx[None, None, :]


def half_radius(size: int, *, ndim: int) -> NDArray[np.float64]:
    """|k| in Fourier voxels for every element of a half transform (float64)."""
    ks = half_frequencies(size, ndim=ndim)
    r2 = sum(k.astype(np.float64) ** 2 for k in ks)
    return np.sqrt(r2)


def shell_index(size: int, *, ndim: int) -> NDArray[np.int64]:
    """RELION's shell of each half-transform element: ``round(|k|)`` (half rounded up).

    Shape ``(N, N//2+1)`` or ``(N, N, N//2+1)``; values 0 .. about ``sqrt(ndim)*N/2``.
    """
    return np.floor(half_radius(size, ndim=ndim) + 0.5).astype(np.int64)


def radial_sum(values: Any, shells: NDArray[np.int64], *, n_shells: int) -> NDArray:
    """Sum of ``values`` per shell for shells ``0 .. n_shells-1`` (others ignored).

    ``values`` has the shape of ``shells`` (real or complex); returns ``(n_shells,)``.
    """
    values = np.asarray(values)
    sel = shells < n_shells
    s = shells[sel]
    v = values[sel]
    if np.iscomplexobj(v):
        return np.bincount(s, v.real, minlength=n_shells) + 1j * np.bincount(
            s, v.imag, minlength=n_shells
        )
    return np.bincount(s, v.astype(np.float64), minlength=n_shells)


def radial_average(values: Any, shells: NDArray[np.int64], *, n_shells: int) -> NDArray:
    """Mean of ``values`` per shell ``0 .. n_shells-1`` (0 for empty shells), ``(n_shells,)``."""
    counts = np.bincount(shells[shells < n_shells], minlength=n_shells)
    sums = radial_sum(values, shells, n_shells=n_shells)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def _window_indices(old: int, new: int) -> NDArray[np.int64]:
    """Indices into an axis of length ``old`` for the logical frequencies of length ``new``."""
    i = np.arange(new)
    k = np.where(i <= new // 2, i, i - new)
    return np.where(k >= 0, k, k + old)


def crop_half(f: Any, size: int, *, ndim: int) -> Any:
    """Fourier-crop a half transform to a smaller box (binning), values unchanged.

    Parameters
    ----------
    f
        Half transform ``(..., N, N//2+1)`` / ``(..., N, N, N//2+1)`` (RELION normalised).
    size
        New box ``n <= N``.

    Returns
    -------
    ``(..., n, n//2+1)`` / ``(..., n, n, n//2+1)``: the logical frequencies of the new box
    (Nyquist row ``n/2`` taken from ``+n/2``). With RELION normalisation the inverse
    transform keeps grey values; the pixel size becomes ``px*N/n``.
    """
    old = f.shape[-2]
    if size > old:
        raise ValueError(f"crop size {size} is larger than the transform size {old}")
    xp = get_array_module(f)
    idx = xp.asarray(_window_indices(old, size))
    out = f[..., : size // 2 + 1]
    out = xp.take(out, idx, axis=-2)
    if ndim == 3:
        out = xp.take(out, idx, axis=-3)
    return out


def pad_half(f: Any, size: int, *, ndim: int) -> Any:
    """Zero-pad a half transform to a larger box (Fourier interpolation), values unchanged.

    Inverse of :func:`crop_half`; shapes as there with ``size >= N``.
    """
    old = f.shape[-2]
    if size < old:
        raise ValueError(f"pad size {size} is smaller than the transform size {old}")
    xp = get_array_module(f)
    lead = f.shape[:-ndim]
    out = xp.zeros(lead + (size,) * (ndim - 1) + (size // 2 + 1,), dtype=f.dtype)
    idx = _window_indices(size, old)
    if ndim == 2:
        out[..., idx, : old // 2 + 1] = f
    else:
        out[..., idx[:, None], idx[None, :], : old // 2 + 1] = f
    return out


def resample_and_window(x: NDArray, *, new_size: int, box: int, ndim: int) -> NDArray[np.float64]:
    """RELION's ``resizeMap`` then ``window``: Fourier crop or zero-pad ``x`` (``(..., N, N)``
    or ``(..., N, N, N)``, real) to ``new_size`` px, which keeps the grey values and changes the
    pixel size by ``N / new_size``; then crop or zero-pad the real-space box, about its centre,
    to ``box`` px. Zero-padding keeps only the frequencies within the old Nyquist radius
    (RELION's ``windowFourierTransform`` drops the corners, which would make the larger
    transform asymmetric)."""
    n = x.shape[-1]
    f = rfft_centered(np.asarray(x, dtype=np.float64), ndim=ndim)
    if new_size < n:
        f = crop_half(f, new_size, ndim=ndim)
    elif new_size > n:
        f = pad_half(np.where(half_radius(n, ndim=ndim) <= n // 2, f, 0), new_size, ndim=ndim)
    resized = irfft_centered(f, size=new_size, ndim=ndim)
    lead = resized.shape[:-ndim]
    if new_size >= box:
        s = slice(new_size // 2 - box // 2, new_size // 2 - box // 2 + box)
        return np.ascontiguousarray(resized[(..., *([s] * ndim))])
    out = np.zeros(lead + (box,) * ndim)
    s = slice(box // 2 - new_size // 2, box // 2 - new_size // 2 + new_size)
    out[(..., *([s] * ndim))] = resized
    return out
