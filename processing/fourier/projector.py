"""Fourier-space projector: central slices and 3D rotations of a reference (spec 2.1, 2.5).

Normalisation (the contract the refinement relies on)
----------------------------------------------------
For a map ``v`` of box ``N`` (indexed ``[z, y, x]``, origin at voxel ``N//2``) and a RELION
rotation matrix ``A`` (``x_image = A @ x_ref``), :meth:`Projector.project` returns

    P_A(kx, ky) = V(A^T (kx, ky, 0)),

which equals ``rfft2(ifftshift(p)) / N**2`` -- the RELION-normalised, centred 2D half
transform (:func:`processing.fourier.fft.rfft2_centered`) -- of the sum-projection
``p(x, y) = sum_z v_A(x, y, z)`` of the rotated map ``v_A(x) = v(A^T x)`` (voxel units), up
to trilinear-interpolation error. The image in real space is
``irfft2_centered(P, N)`` (unnormalised inverse). Values do not depend on ``size``: a
projection at ``size < N`` is the Fourier-cropped (binned) version of the full one.

:meth:`Projector.rotate` returns ``V(A^T k)`` for 3D ``k``, equal to
``rfftn(ifftshift(v_A)) / N**3`` (:func:`~processing.fourier.fft.rfft3_centered` of the
rotated map), for the 3D pseudo-subtomogram path.

Internally the map is gridding pre-corrected (divided by ``sinc^2(r / (pad*N))``), zero
padded to ``M = pad*N`` (rounded to even), transformed, and kept as a centred padded half
grid (``grid[kz + c, ky + c, kx]``, see ``_kernels.py``) up to the padded radius
``round(r_max*pad)``. Frequencies with ``kx^2 + ky^2 <= r_max^2`` are computed (RELION's
inclusive rule); the y/z Nyquist index ``s/2`` of the output counts as ``+s/2``.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from processing.fourier import _kernels as K
from processing.fourier.fft import ifftshift, rfftn

__all__ = [
    "Projector",
    "padded_size",
    "gridding_correction",
    "fourier_grid_from_volume",
    "project_slices",
    "rotate_volume_fourier",
]


def padded_size(ori_size: int, padding_factor: float) -> int:
    """RELION's padded box: ``round(pad * ori)``, made even (spec 2.5)."""
    m = int(round(padding_factor * ori_size))
    return m + (m % 2)


def gridding_correction(size: int, *, padding_factor: float, ndim: int = 3) -> NDArray[np.float64]:
    """``sinc^2(r / (pad * size))`` over a real-space box centred at ``size//2``.

    The real-space footprint of trilinear interpolation on the padded Fourier grid. Shape
    ``(size,)*ndim``; 1 at the centre. Divide a map by it before projecting (pre-correction)
    or after reconstructing (post-correction).
    """
    ax = np.arange(size) - size // 2
    grids = np.meshgrid(*([ax] * ndim), indexing="ij")
    r = np.sqrt(sum(g.astype(np.float64) ** 2 for g in grids))
    return np.sinc(r / (padding_factor * size)) ** 2


def _check_rotations(rotations: ArrayLike) -> NDArray[np.float64]:
    rot = np.ascontiguousarray(rotations, dtype=np.float64)
    if rot.ndim == 2:
        rot = rot[None]
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise ValueError(f"rotations must have shape (n, 3, 3) or (3, 3), got {rot.shape}")
    return rot


def fourier_grid_from_volume(
    volume: ArrayLike,
    *,
    padding_factor: float = 2.0,
    r_max: float | None = None,
    gridding: bool = True,
    dtype: type = np.complex128,
    data_dim: int = 2,
) -> tuple[NDArray[np.complexfloating], int, int]:
    """Centred padded half grid of a map, scaled for 2D projection (values / ``N**2``) or, with
    ``data_dim=3``, for comparison with 3D volumes (values / ``N**3``; RELION's projector drops
    its extra factor ``N`` for 3D data).

    Parameters
    ----------
    volume
        Real map ``(N, N, N)`` indexed ``[z, y, x]``, origin at voxel ``N//2``.
    padding_factor
        Oversampling of the Fourier grid (RELION ``--pad``; 1 = no padding).
    r_max
        Largest stored frequency in Fourier pixels of the un-padded box (default ``N/2``).
    gridding
        Divide by ``sinc^2(r/(pad*N))`` before the FFT (trilinear pre-correction).
    dtype
        ``complex128`` (default) or ``complex64``.
    data_dim
        2 (images) or 3 (volumes): the dimension of the data the grid is compared with.

    Returns
    -------
    grid
        ``(2c+1, 2c+1, c+1)`` complex: ``grid[kz+c, ky+c, kx] = F(kx, ky, kz) / N**data_dim`` with
        ``F`` the unnormalised FFT of the padded map at padded frequency ``K``; zero for
        ``|K| > round(r_max*pad)``.
    c
        Centre index (stored padded radius + 2).
    stored_radius
        ``round(r_max * pad)`` in padded Fourier pixels.
    """
    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise ValueError(f"volume must be a cubic 3D array, got shape {vol.shape}")
    if padding_factor < 1:
        raise ValueError(f"padding_factor must be >= 1, got {padding_factor}")
    n = vol.shape[0]
    if r_max is None:
        r_max = n / 2
    if not 0 < r_max <= n / 2:
        raise ValueError(f"r_max must be in (0, {n / 2}], got {r_max}")
    m = padded_size(n, padding_factor)
    if gridding:
        vol = vol / gridding_correction(n, padding_factor=padding_factor)
    padded = np.zeros((m, m, m))
    o = m // 2 - n // 2
    padded[o : o + n, o : o + n, o : o + n] = vol
    if data_dim not in (2, 3):
        raise ValueError(f"data_dim must be 2 or 3, got {data_dim}")
    f = rfftn(ifftshift(padded, ndim=3), ndim=3, norm="backward") / float(n) ** data_dim
    stored = int(round(r_max * padding_factor))
    stored = min(stored, m // 2)
    c = stored + 2
    # Logical frequencies -c..c for y/z, 0..c for x, read from the FFTW layout.
    lk = np.arange(-c, c + 1)
    idx = np.mod(lk, m)
    sub = f[idx[:, None, None], idx[None, :, None], np.arange(c + 1)[None, None, :] % (m // 2 + 1)]
    r2 = lk[:, None, None] ** 2 + lk[None, :, None] ** 2 + np.arange(c + 1)[None, None, :] ** 2
    sub = np.where(r2 <= stored * stored, sub, 0.0)
    return np.ascontiguousarray(sub, dtype=dtype), c, stored


def _r_max2(size: int, r_max: float | None, limit: float) -> float:
    r = size / 2 if r_max is None else float(r_max)
    if r < 0:
        raise ValueError(f"r_max must be >= 0, got {r_max}")
    r = min(r, size / 2, limit)
    return r * r


def project_slices(
    grid: NDArray[np.complexfloating],
    c: int,
    rotations: ArrayLike,
    *,
    padding_factor: float,
    size: int,
    r_max: float | None = None,
    scale: float = 1.0,
    out: NDArray[np.complexfloating] | None = None,
) -> NDArray[np.complexfloating]:
    """Central slices of a centred padded half grid (numba, parallel over rotations).

    Parameters
    ----------
    grid, c
        From :func:`fourier_grid_from_volume`.
    rotations
        ``(n, 3, 3)`` RELION matrices ``A``; slice ``m`` samples ``pad * A_m^T (kx, ky, 0)``.
    padding_factor
        The grid's padding factor.
    size
        Output box ``s`` (Fourier-cropped image size, ``<= N``).
    r_max
        Only ``kx^2 + ky^2 <= r_max^2`` are computed (default and upper bound ``s/2``).
    scale
        Factor applied to every value.
    out
        Optional output array ``(n, s, s//2+1)`` of the grid's dtype.

    Returns
    -------
    ``(n, s, s//2+1)`` complex half transforms (FFTW layout).
    """
    rot = _check_rotations(rotations)
    if size < 2:
        raise ValueError(f"size must be >= 2, got {size}")
    shape = (rot.shape[0], size, size // 2 + 1)
    if out is None:
        out = np.empty(shape, dtype=grid.dtype)
    elif out.shape != shape or out.dtype != grid.dtype:
        raise ValueError(f"out must have shape {shape} and dtype {grid.dtype}")
    limit = (c - 2) / padding_factor
    K.project_kernel(grid, c, rot, float(padding_factor), _r_max2(size, r_max, limit), scale, out)
    return out


def rotate_volume_fourier(
    grid: NDArray[np.complexfloating],
    c: int,
    rotations: ArrayLike,
    *,
    padding_factor: float,
    size: int,
    r_max: float | None = None,
    scale: float = 1.0,
) -> NDArray[np.complexfloating]:
    """3D half transforms of the rotated reference, ``V(pad * A^T k)`` (numba).

    Returns ``(n, s, s, s//2+1)`` complex (FFTW layout), zero where ``|k| > r_max``
    (default ``s/2``).
    """
    rot = _check_rotations(rotations)
    out = np.empty((rot.shape[0], size, size, size // 2 + 1), dtype=grid.dtype)
    limit = (c - 2) / padding_factor
    K.rotate3d_kernel(grid, c, rot, float(padding_factor), _r_max2(size, r_max, limit), scale, out)
    return out


class Projector:
    """A reference map prepared for Fourier-space projection.

    Parameters
    ----------
    volume
        Real map ``(N, N, N)``, ``[z, y, x]``, origin at voxel ``N//2``.
    padding_factor
        Fourier oversampling (default 2; 1 = skip padding).
    r_max
        Largest frequency kept, Fourier pixels of the un-padded box (default ``N/2``).
    gridding
        Apply the ``sinc^2`` gridding pre-correction (default True, RELION's behaviour).
    dtype
        ``np.complex128`` (default) or ``np.complex64`` (faster, half the memory).

    Attributes
    ----------
    ori_size : int
        ``N``.
    padding_factor : float
    pad_size : int
        ``M``, the padded box.
    r_max : float
    grid : ndarray
        Centred padded half grid ``(2c+1, 2c+1, c+1)`` scaled by ``1/N**2``.
    c : int
        Index of the Fourier origin along z and y in ``grid``.
    """

    def __init__(
        self,
        volume: ArrayLike,
        *,
        padding_factor: float = 2.0,
        r_max: float | None = None,
        gridding: bool = True,
        dtype: type = np.complex128,
    ) -> None:
        vol = np.asarray(volume)
        self.ori_size = int(vol.shape[0])
        self.padding_factor = float(padding_factor)
        self.pad_size = padded_size(self.ori_size, padding_factor)
        self.grid, self.c, self.stored_radius = fourier_grid_from_volume(
            vol, padding_factor=padding_factor, r_max=r_max, gridding=gridding, dtype=dtype
        )
        self.r_max = self.stored_radius / self.padding_factor

    def project(
        self,
        rotations: ArrayLike,
        *,
        size: int | None = None,
        r_max: float | None = None,
        out: NDArray[np.complexfloating] | None = None,
    ) -> NDArray[np.complexfloating]:
        """Central slices ``(n, s, s//2+1)`` for rotations ``(n, 3, 3)`` (see module doc).

        ``size`` defaults to ``N``; ``r_max`` (Fourier pixels) to ``min(s/2, self.r_max)``.
        """
        s = self.ori_size if size is None else int(size)
        if s > self.ori_size:
            raise ValueError(f"size {s} exceeds the map box {self.ori_size}")
        return project_slices(
            self.grid, self.c, rotations, padding_factor=self.padding_factor, size=s,
            r_max=r_max, out=out,
        )

    def rotate(
        self, rotations: ArrayLike, *, size: int | None = None, r_max: float | None = None
    ) -> NDArray[np.complexfloating]:
        """Rotated 3D half transforms ``(n, s, s, s//2+1)``, RELION-normalised (``/N**3``)."""
        s = self.ori_size if size is None else int(size)
        if s > self.ori_size:
            raise ValueError(f"size {s} exceeds the map box {self.ori_size}")
        return rotate_volume_fourier(
            self.grid, self.c, rotations, padding_factor=self.padding_factor, size=s,
            r_max=r_max, scale=1.0 / self.ori_size,
        )
