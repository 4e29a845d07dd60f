"""Fourier-space back-projection and reconstruction (spec 4.2, 4.3, 5.6, 5.11).

Normalisation (matches :mod:`processing.fourier.projector`)
------------------------------------------------------------
Slices are RELION-normalised centred 2D half transforms (``rfft2(ifftshift(img)) / N**2``,
:func:`~processing.fourier.fft.rfft2_centered`), and 3D inserts are ``/N**3`` transforms
(:func:`~processing.fourier.fft.rfft3_centered`). With these, back-projecting the slices of
:meth:`Projector.project` with weight 1 and calling :meth:`BackProjector.reconstruct` returns
the original map (up to interpolation), in the same real-space grey scale: ``data / weight``
on the padded grid is ``V / N**2`` (2D data) or ``V / N**3`` (3D data) and the inverse FFT
multiplies by ``N**data_dim / M**3``.

The accumulators are centred padded half grids ``grid[kz + c, ky + c, kx]``, shape
``(2c+1, 2c+1, c+1)`` with ``c = round(r_max*pad) + 2``, ``kx >= 0``; points with ``kx < 0``
are inserted as their Hermitian mirror (negated coordinates, conjugated value). Weights are
real (e.g. ``CTF^2`` or ``CTF^2/sigma^2``).
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from processing.fourier import _kernels as K
from processing.fourier.fft import (
    fftshift,
    half_radius,
    ifftshift,
    irfftn,
    rfftn,
)
from processing.fourier.masks import soft_mask_outside
from processing.fourier.projector import gridding_correction, padded_size

__all__ = [
    "BackProjector",
    "backproject_slices",
    "backproject_volumes",
    "enforce_hermitian",
    "symmetrise",
    "grid_shell_index",
    "reconstruct",
    "reference_sigma2",
    "tau2_from_fsc",
    "divide_by_gridding_sinc2",
    "ctf_divide",
    "taper",
]


def _rot(rotations: ArrayLike) -> NDArray[np.float64]:
    rot = np.ascontiguousarray(rotations, dtype=np.float64)
    if rot.ndim == 2:
        rot = rot[None]
    if rot.ndim != 3 or rot.shape[1:] != (3, 3):
        raise ValueError(f"rotations must have shape (n, 3, 3) or (3, 3), got {rot.shape}")
    return rot


def _n_buffers(n_items: int, grid_bytes: int, max_bytes: float = 2e9) -> int:
    """Per-thread accumulation buffers: no more than threads, items or the memory cap."""
    t = min(numba.get_num_threads(), max(n_items, 1))
    return max(1, min(t, int(max_bytes // max(grid_bytes, 1))))


def backproject_slices(
    data: NDArray[np.complexfloating],
    weight: NDArray[np.floating],
    c: int,
    slices: ArrayLike,
    rotations: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    padding_factor: float = 2.0,
    r_max: float | None = None,
) -> None:
    """Trilinear insertion of 2D half-transform slices, in place (numba).

    Parameters
    ----------
    data, weight
        Accumulators ``(2c+1, 2c+1, c+1)``: complex and float64.
    c
        Centre index of the accumulators.
    slices
        ``(n, s, s//2+1)`` complex half transforms (FFTW layout, RELION-normalised).
    rotations
        ``(n, 3, 3)`` RELION matrices ``A``: point ``(kx, ky)`` goes to ``pad * A^T (kx, ky, 0)``.
    weights
        ``(n, s, s//2+1)`` real weights (e.g. ``CTF^2``); default 1. Broadcastable.
    padding_factor
        The accumulators' padding factor.
    r_max
        Only points with ``kx^2 + ky^2 <= r_max^2`` are inserted (default ``s/2``; never
        beyond the accumulator radius).
    """
    rot = _rot(rotations)
    sl = np.asarray(slices)
    if sl.ndim == 2:
        sl = sl[None]
    n, s = sl.shape[0], sl.shape[1]
    if sl.shape != (n, s, s // 2 + 1) or n != rot.shape[0]:
        raise ValueError(
            f"slices must have shape (n, s, s//2+1) matching {rot.shape[0]} rotations, got {sl.shape}"
        )
    sl = np.ascontiguousarray(sl, dtype=data.dtype)
    w = np.ones(sl.shape) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), sl.shape)
    w = np.ascontiguousarray(w, dtype=np.float64)
    r = s / 2 if r_max is None else min(float(r_max), s / 2)
    r = min(r, (c - 2) / padding_factor)
    nb = _n_buffers(n, data.nbytes + weight.nbytes)
    if nb == 1:
        K.backproject2d_kernel(data[None], weight[None], c, sl, w, rot, float(padding_factor), r * r)
        return
    bd = np.zeros((nb,) + data.shape, dtype=data.dtype)
    bw = np.zeros((nb,) + weight.shape, dtype=np.float64)
    K.backproject2d_kernel(bd, bw, c, sl, w, rot, float(padding_factor), r * r)
    data += bd.sum(axis=0)
    weight += bw.sum(axis=0)


def backproject_volumes(
    data: NDArray[np.complexfloating],
    weight: NDArray[np.floating],
    c: int,
    volumes: ArrayLike,
    rotations: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    padding_factor: float = 2.0,
    r_max: float | None = None,
) -> None:
    """Trilinear insertion of 3D half transforms ``(n, s, s, s//2+1)`` at ``pad * A^T k``.

    As :func:`backproject_slices` for the 3D pseudo-subtomogram path; ``weights`` (e.g. the
    CTF^2 volume) has the shape of ``volumes``. Of the Friedel pairs inside the ``kx = 0``
    plane only one member (``ky > 0``, or ``ky = 0`` and ``kz >= 0``) is inserted, so every
    frequency counts once. (2D slices insert their whole ``kx = 0`` column, as RELION does;
    that doubles data and weight there alike.)
    """
    rot = _rot(rotations)
    v = np.asarray(volumes)
    if v.ndim == 3:
        v = v[None]
    n, s = v.shape[0], v.shape[1]
    if v.shape != (n, s, s, s // 2 + 1) or n != rot.shape[0]:
        raise ValueError(
            f"volumes must have shape (n, s, s, s//2+1) matching {rot.shape[0]} rotations, got {v.shape}"
        )
    v = np.ascontiguousarray(v, dtype=data.dtype)
    w = np.ones(v.shape) if weights is None else np.broadcast_to(np.asarray(weights, np.float64), v.shape)
    w = np.ascontiguousarray(w, dtype=np.float64)
    r = s / 2 if r_max is None else min(float(r_max), s / 2)
    r = min(r, (c - 2) / padding_factor)
    nb = _n_buffers(n, data.nbytes + weight.nbytes)
    if nb == 1:
        K.backproject3d_kernel(data[None], weight[None], c, v, w, rot, float(padding_factor), r * r)
        return
    bd = np.zeros((nb,) + data.shape, dtype=data.dtype)
    bw = np.zeros((nb,) + weight.shape, dtype=np.float64)
    K.backproject3d_kernel(bd, bw, c, v, w, rot, float(padding_factor), r * r)
    data += bd.sum(axis=0)
    weight += bw.sum(axis=0)


def enforce_hermitian(data: NDArray[np.complexfloating], weight: NDArray[np.floating]) -> None:
    """Make the ``kx = 0`` plane Hermitian, in place: ``F(0,y,z) <- F(0,y,z) + conj F(0,-y,-z)``.

    Contributions inserted near ``kx = 0`` from the mirrored side land on the other half of
    the plane; summing both halves (weights likewise) restores the full-grid sums. The origin,
    its own mirror, is left as it is (RELION's ``enforceHermitianSymmetry`` pairs every other
    point once). Call it once, after all insertions (it is part of :func:`symmetrise`).
    """
    c = data.shape[0] // 2
    origin_data, origin_weight = data[c, c, 0], weight[c, c, 0]
    p = data[:, :, 0]
    data[:, :, 0] = p + np.conj(p[::-1, ::-1])
    q = weight[:, :, 0]
    weight[:, :, 0] = q + q[::-1, ::-1]
    data[c, c, 0], weight[c, c, 0] = origin_data, origin_weight


def symmetrise(
    data: NDArray[np.complexfloating],
    weight: NDArray[np.floating],
    c: int,
    operators: ArrayLike,
    *,
    radius: float | None = None,
) -> tuple[NDArray[np.complexfloating], NDArray[np.float64]]:
    """Point-group symmetrisation: ``sum_R F(R k)`` over the operators (trilinear, numba).

    Parameters
    ----------
    data, weight
        Accumulators (Hermitian already enforced, see :func:`enforce_hermitian`).
    c
        Centre index.
    operators
        ``(n_ops, 3, 3)`` rotation matrices as stored by
        :mod:`processing.geometry.symmetry` (RELION's list, identity included); the sum runs
        over all of them. The set is closed under transposition, so ``R`` vs ``R^T`` does not
        matter.
    radius
        Padded radius beyond which the output is zero (default ``c - 2``).

    Returns
    -------
    New ``(data, weight)`` arrays.
    """
    ops = _rot(operators)
    r = float(c - 2) if radius is None else float(radius)
    out_d = np.empty_like(data)
    out_w = np.empty(weight.shape, dtype=np.float64)
    K.symmetrise_kernel(data, np.ascontiguousarray(weight, np.float64), c, ops, r * r, out_d, out_w)
    return out_d, out_w


def grid_shell_index(c: int, padding_factor: float) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Radius ``|K|`` (padded Fourier pixels) and shell ``round(|K|/pad)`` of every grid voxel."""
    lk = np.arange(-c, c + 1, dtype=np.float64)
    kx = np.arange(c + 1, dtype=np.float64)
    r = np.sqrt(lk[:, None, None] ** 2 + lk[None, :, None] ** 2 + kx[None, None, :] ** 2)
    return r, np.floor(r / padding_factor + 0.5).astype(np.int64)


def reference_sigma2(
    weight: NDArray[np.floating], c: int, *, padding_factor: float, n_shells: int, r_max: float | None = None,
) -> NDArray[np.float64]:
    """RELION's ``sigma2_ref(shell) = 1 / (pad^3 * <weight>_shell)`` (spec 5.6), ``(n_shells,)``.

    Shells with zero mean weight get 0. The mean runs over grid voxels with
    ``round(|K|/pad) = shell`` and ``|K|^2 < round(r_max*pad)^2`` (``BackProjector::
    updateSSNRarrays``; ``r_max`` in un-padded pixels, default: the stored radius ``c - 2``).
    """
    r, sh = grid_shell_index(c, padding_factor)
    limit = c - 2 if r_max is None else math.floor(r_max * padding_factor + 0.5)
    sel = (r * r < limit * limit - 1e-9) & (sh < n_shells)
    cnt = np.bincount(sh[sel], minlength=n_shells)
    tot = np.bincount(sh[sel], weight[sel].astype(np.float64), minlength=n_shells)
    mean = np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)
    with np.errstate(divide="ignore"):
        return np.where(mean > 0, 1.0 / (padding_factor**3 * mean), 0.0)


def tau2_from_fsc(
    sigma2_ref: ArrayLike,
    fsc: ArrayLike,
    *,
    tau2_fudge: float = 1.0,
    joined: bool = False,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """SSNR and tau^2 per shell from the half-map FSC (spec 5.6).

    ``FSC' = clamp(FSC, 0.001, 0.999)`` (or ``sqrt(2 FSC/(FSC+1))`` of the clamped value for
    the final joined iteration); ``SSNR = T * FSC'/(1 - FSC')``; ``tau2 = SSNR * sigma2_ref``.

    Returns
    -------
    ssnr, tau2 : ``(n_shells,)`` float64.
    """
    f = np.clip(np.asarray(fsc, dtype=np.float64), 0.001, 0.999)
    if joined:
        f = np.sqrt(2.0 * f / (f + 1.0))
    ssnr = tau2_fudge * f / (1.0 - f)
    return ssnr, ssnr * np.asarray(sigma2_ref, dtype=np.float64)


def reconstruct(
    data: NDArray[np.complexfloating],
    weight: NDArray[np.floating],
    c: int,
    *,
    ori_size: int,
    padding_factor: float = 2.0,
    r_max: float | None = None,
    tau2: ArrayLike | None = None,
    tau2_fudge: float = 1.0,
    minres_map: int = 5,
    data_dim: int = 2,
    gridding: bool = True,
    weight_floor: float = 1e-3,
    mask_corners: bool = True,
) -> NDArray[np.float64]:
    """RELION's M-step map from the summed data and weights (spec 5.6).

    ``F(K) = data(K) / max(weight(K) + R(K), <weight + R>_shell * weight_floor)`` for
    ``|K| < round(r_max*pad)`` (zero elsewhere), where the shell of a voxel is
    ``round(|K|/pad)`` and

    * no ``tau2``: ``R = 0`` (relion_reconstruct, unregularised half maps);
    * with ``tau2``: for shells ``>= minres_map``, ``R = 1/(pad^3 * T * tau2)`` where
      ``tau2 > 0`` and ``R = 1/(0.001*weight)`` where ``tau2 = 0``; ``R = 0`` below.

    Then the inverse FFT of the padded grid, the central ``ori_size`` box, RELION's corner
    mask (:func:`~processing.fourier.masks.soft_mask_outside` with radius ``N/2`` and a
    3-pixel edge: beyond ``N/2 + 3`` the map is set to the soft-weighted background mean),
    and division by ``sinc^2(r/(pad*N))`` (trilinear gridding correction).

    Parameters
    ----------
    data, weight, c
        Accumulators (after :func:`enforce_hermitian` / :func:`symmetrise`) and centre index.
    ori_size
        Output box ``N``.
    padding_factor
        The accumulators' padding factor.
    r_max
        Fourier radius in un-padded pixels (default: ``N/2``, capped by the grid).
    tau2
        ``(n_shells,)`` prior power per shell (None for no regularisation).
    tau2_fudge
        RELION's ``--tau2_fudge`` T.
    minres_map
        First shell regularised.
    data_dim
        2 for inserted 2D slices (``/N**2``), 3 for 3D volumes (``/N**3``).
    gridding
        Apply the sinc^2 post-correction.
    weight_floor
        Fraction of the shell-mean weight used as the floor (RELION: 1/1000).
    mask_corners
        Apply the corner mask (RELION does; needed to reproduce ``relion_reconstruct``).

    Returns
    -------
    ``(N, N, N)`` float64 map, origin at voxel ``N//2``.
    """
    if data.shape != weight.shape or data.shape != (2 * c + 1, 2 * c + 1, c + 1):
        raise ValueError(f"data and weight must have shape {(2 * c + 1, 2 * c + 1, c + 1)}")
    if data_dim not in (2, 3):
        raise ValueError(f"data_dim must be 2 or 3, got {data_dim}")
    n = int(ori_size)
    m = padded_size(n, padding_factor)
    rm = n / 2 if r_max is None else float(r_max)
    rp = min(int(round(rm * padding_factor)), c - 2, m // 2)
    lk = np.arange(-c, c + 1)
    r2 = lk[:, None, None] ** 2 + lk[None, :, None] ** 2 + np.arange(c + 1)[None, None, :] ** 2
    r = np.sqrt(r2.astype(np.float64))
    sh = np.floor(r / padding_factor + 0.5).astype(np.int64)
    # RELION keeps the sums on the sphere |K| = rp itself (Projector::decenter tests <=) but
    # regularises only strictly inside it, so those voxels are divided by their bare weight.
    kept = r2 <= rp * rp
    inside = r2 < rp * rp
    w = weight.astype(np.float64)
    if tau2 is not None:
        t2 = np.asarray(tau2, dtype=np.float64)
        t2v = t2[np.minimum(sh, t2.size - 1)]
        with np.errstate(divide="ignore", invalid="ignore"):
            reg = np.where(t2v > 0, 1.0 / (padding_factor**3 * tau2_fudge * t2v), 1.0 / (0.001 * w))
        reg = np.where(inside & (sh >= minres_map) & np.isfinite(reg), reg, 0.0)
        w = w + reg
    # The division's floor is a fraction of the mean weight over floor(|K|/pad) shells inside
    # round((r_max*pad)^2); the sphere and beyond take the last shell's floor.
    n_floor = max(int(rm), 1)
    floor_shell = np.minimum(np.floor(r / padding_factor).astype(np.int64), n_floor - 1)
    averaged = r2 < int(round(rm * padding_factor * rm * padding_factor))
    cnt = np.bincount(floor_shell[averaged], minlength=n_floor)
    tot = np.bincount(floor_shell[averaged], w[averaged], minlength=n_floor)
    mean = np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)
    denom = np.maximum(w, mean[floor_shell] * weight_floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(kept & (denom > 0), data / denom, 0.0)
    # Centred grid -> FFTW layout of the padded box.
    full = np.zeros((m, m, m // 2 + 1), dtype=np.complex128)
    lk = np.arange(-rp, rp + 1)
    idx = np.mod(lk, m)
    sub = f[c + lk[:, None, None], c + lk[None, :, None], np.arange(rp + 1)[None, None, :]]
    full[idx[:, None, None], idx[None, :, None], np.arange(rp + 1)[None, None, :]] = sub
    vol = fftshift(irfftn(full, size=m, ndim=3, norm="backward"), ndim=3)
    vol *= float(n) ** data_dim
    o = m // 2 - n // 2
    vol = vol[o : o + n, o : o + n, o : o + n]
    if mask_corners:
        vol = soft_mask_outside(vol, radius=n / 2, edge_width=3.0, ndim=3)
    if gridding:
        vol = vol / gridding_correction(n, padding_factor=padding_factor)
    return np.ascontiguousarray(vol)


class BackProjector:
    """Accumulates weighted Fourier slices (or volumes) of one half set and reconstructs.

    Parameters
    ----------
    ori_size
        Box ``N`` of the reconstruction.
    padding_factor
        Fourier oversampling (default 2; 1 = no padding).
    r_max
        Largest frequency accumulated, un-padded Fourier pixels (default ``N/2``).
    dtype
        Complex dtype of the data accumulator (default complex128; weights are float64).

    Attributes
    ----------
    data : ndarray ``(2c+1, 2c+1, c+1)`` complex
    weight : ndarray ``(2c+1, 2c+1, c+1)`` float64
    c : int
    data_dim : int or None
        2 or 3 once something was inserted.
    """

    def __init__(
        self,
        ori_size: int,
        *,
        padding_factor: float = 2.0,
        r_max: float | None = None,
        dtype: type = np.complex128,
    ) -> None:
        if padding_factor < 1:
            raise ValueError(f"padding_factor must be >= 1, got {padding_factor}")
        self.ori_size = int(ori_size)
        self.padding_factor = float(padding_factor)
        self.pad_size = padded_size(self.ori_size, padding_factor)
        rm = self.ori_size / 2 if r_max is None else float(r_max)
        if not 0 < rm <= self.ori_size / 2:
            raise ValueError(f"r_max must be in (0, {self.ori_size / 2}], got {r_max}")
        self.r_max = rm
        self.stored_radius = min(int(round(rm * self.padding_factor)), self.pad_size // 2)
        self.c = self.stored_radius + 2
        self.data = K.empty_grid(self.c, np.dtype(dtype))
        self.weight = K.empty_grid(self.c, np.dtype(np.float64))
        self.data_dim: int | None = None
        self._hermitian_done = False

    def _set_dim(self, d: int) -> None:
        if self.data_dim not in (None, d):
            raise ValueError("cannot mix 2D slices and 3D volumes in one BackProjector")
        self.data_dim = d

    def insert_slices(
        self,
        slices: ArrayLike,
        rotations: ArrayLike,
        *,
        weights: ArrayLike | None = None,
        r_max: float | None = None,
    ) -> None:
        """Insert 2D half transforms ``(n, s, s//2+1)`` with real ``weights`` (see
        :func:`backproject_slices`)."""
        self._set_dim(2)
        r = self.r_max if r_max is None else min(float(r_max), self.r_max)
        backproject_slices(
            self.data, self.weight, self.c, slices, rotations, weights=weights,
            padding_factor=self.padding_factor, r_max=r,
        )

    def insert_volumes(
        self,
        volumes: ArrayLike,
        rotations: ArrayLike,
        *,
        weights: ArrayLike | None = None,
        r_max: float | None = None,
    ) -> None:
        """Insert 3D half transforms ``(n, s, s, s//2+1)`` (see :func:`backproject_volumes`)."""
        self._set_dim(3)
        r = self.r_max if r_max is None else min(float(r_max), self.r_max)
        backproject_volumes(
            self.data, self.weight, self.c, volumes, rotations, weights=weights,
            padding_factor=self.padding_factor, r_max=r,
        )

    def add(self, other: "BackProjector") -> None:
        """Add another accumulator of the same geometry (e.g. from another MPI rank)."""
        if other.data.shape != self.data.shape or other.padding_factor != self.padding_factor:
            raise ValueError("BackProjector geometries differ")
        self.data += other.data
        self.weight += other.weight
        if other.data_dim is not None:
            self._set_dim(other.data_dim)

    def symmetrise(self, operators: ArrayLike | None = None) -> None:
        """Enforce Hermitian symmetry of the ``kx = 0`` plane (once), then, if operators
        ``(n, 3, 3)`` are given (identity included), replace the sums by ``sum_R F(R k)``."""
        if not self._hermitian_done:
            enforce_hermitian(self.data, self.weight)
            self._hermitian_done = True
        if operators is not None and len(operators) > 1:
            self.data, self.weight = symmetrise(
                self.data, self.weight, self.c, operators, radius=float(self.stored_radius)
            )

    def reconstruct(
        self,
        *,
        tau2: ArrayLike | None = None,
        tau2_fudge: float = 1.0,
        minres_map: int = 5,
        r_max: float | None = None,
        gridding: bool = True,
        mask_corners: bool = True,
    ) -> NDArray[np.float64]:
        """The map (see :func:`reconstruct`); enforces Hermitian symmetry first if
        :meth:`symmetrise` was not called."""
        if not self._hermitian_done:
            self.symmetrise(None)
        return reconstruct(
            self.data, self.weight, self.c, ori_size=self.ori_size,
            padding_factor=self.padding_factor, r_max=self.r_max if r_max is None else r_max,
            tau2=tau2, tau2_fudge=tau2_fudge, minres_map=minres_map,
            data_dim=self.data_dim or 2, gridding=gridding, mask_corners=mask_corners,
        )


# --------------------------------------------------------------------------------------
# relion_tomo_reconstruct_particle (spec 4.2 item 8, 4.3)


def divide_by_gridding_sinc2(volume: ArrayLike, *, floor: float = 0.01) -> NDArray[np.float64]:
    """Divide a (non-padded) map by ``sinc^2(r/N)``, using ``floor`` where it is smaller.

    Spec 4.2 8a: the gridding correction of reconstruct_particle's backward insertion.
    ``volume`` is ``(N, N, N)`` with the origin at ``N//2``.
    """
    vol = np.asarray(volume, dtype=np.float64)
    g = gridding_correction(vol.shape[0], padding_factor=1.0, ndim=vol.ndim)
    return vol / np.maximum(g, floor)


def ctf_divide(
    volume: ArrayLike,
    weight: ArrayLike,
    *,
    snr: float | None = None,
    floor_fraction: float = 0.001,
) -> NDArray[np.float64]:
    """Heuristic or Wiener division by the summed CTF^2 (spec 4.3).

    ``out = IFFT(FFT(volume) / D)`` with ``D = w + 1/snr`` (Wiener, ``snr > 0``) or
    ``D = max(w, floor_fraction * <w>(|k|))``, ``<w>(r)`` the radial mean of ``w`` over shells
    ``round(|k|)``, linearly interpolated at ``r`` and zero beyond the last shell
    (``N/2``); where ``D = 0`` the output is 0.

    Parameters
    ----------
    volume
        ``(N, N, N)`` real map (origin at ``N//2``), e.g. the output of
        :func:`divide_by_gridding_sinc2`.
    weight
        ``(N, N, N//2+1)`` summed CTF^2 in FFTW half layout.
    snr
        Wiener SNR constant; None or <= 0 for the heuristic.
    """
    vol = np.asarray(volume, dtype=np.float64)
    n = vol.shape[0]
    w = np.asarray(weight, dtype=np.float64)
    if w.shape != (n, n, n // 2 + 1):
        raise ValueError(f"weight must have shape {(n, n, n // 2 + 1)}, got {w.shape}")
    f = rfftn(ifftshift(vol, ndim=3), ndim=3)
    if snr is not None and snr > 0:
        d = w + 1.0 / snr
    else:
        r = half_radius(n, ndim=3)
        sh = np.floor(r + 0.5).astype(np.int64)
        nsh = n // 2 + 1
        cnt = np.bincount(sh[sh < nsh], minlength=nsh)
        tot = np.bincount(sh[sh < nsh], w[sh < nsh], minlength=nsh)
        avg = np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)
        avg_r = np.interp(r, np.arange(nsh), avg, right=0.0)
        d = np.maximum(w, floor_fraction * avg_r)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(d > 0, f / d, 0.0)
    return fftshift(irfftn(f, size=n, ndim=3), ndim=3)


def taper(volume: ArrayLike, *, width: float = 10.0, radius: float | None = None) -> NDArray[np.float64]:
    """reconstruct_particle's taper (spec 4.2 8c).

    Weight ``t(r) = 1`` for ``r < R - width``, ``0.5 + 0.5 cos(pi (r - R + width)/width)``
    up to ``R``, 0 beyond (``R`` = ``radius``, default ``N/2``); the ``t``-weighted mean is
    subtracted and the result multiplied by ``t``. Works for 2D and 3D arrays.
    """
    vol = np.asarray(volume, dtype=np.float64)
    n = vol.shape[0]
    rad = n / 2 if radius is None else float(radius)
    if width < 0:
        raise ValueError(f"taper width must be >= 0, got {width}")
    ax = np.arange(n) - n // 2
    grids = np.meshgrid(*([ax] * vol.ndim), indexing="ij")
    r = np.sqrt(sum(g.astype(np.float64) ** 2 for g in grids))
    inner = rad - width
    if width > 0:
        t = np.where(r < inner, 1.0, np.where(r < rad, 0.5 + 0.5 * np.cos(np.pi * (r - inner) / width), 0.0))
    else:
        t = (r < rad).astype(np.float64)
    mean = float((t * vol).sum() / t.sum()) if t.sum() > 0 else 0.0
    return (vol - mean) * t
