"""Fourier shell correlation and resolution, as relion_postprocess / relion_refine compute
them (spec 5.6; conformance README section 6).

* Shell ``i`` = ``round(|k|)`` over the half transform (``kx >= 0`` including the whole
  ``kx = 0`` plane, i.e. both Friedel mates there), ``i = 0 .. N/2``; ``FSC(0) = 1``.
* ``FSC(i) = sum Re(F1 conj F2) / sqrt(sum |F1|^2 sum |F2|^2)``.
* Resolution: ``N*px/i`` for the last shell ``i`` before the first shell whose FSC drops
  below the threshold (scanning up from shell 0), no interpolation.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from processing.fourier.fft import rfftn, shell_index

__all__ = [
    "fsc_from_transforms",
    "fsc",
    "resolution_shell",
    "resolution_from_fsc",
    "randomize_from_shell",
    "corrected_fsc",
    "particle_mask_fraction",
    "particle_mask_fraction_fsc",
]


def fsc_from_transforms(
    f1: ArrayLike, f2: ArrayLike, shells: NDArray[np.int64], *, n_shells: int
) -> NDArray[np.float64]:
    """FSC per shell of two half transforms of identical shape.

    Parameters
    ----------
    f1, f2
        Complex half transforms (any normalisation, same for both).
    shells
        Shell index of every element (e.g. :func:`~processing.fourier.fft.shell_index`);
        elements with ``shells >= n_shells`` are ignored.
    n_shells
        Number of shells returned (``N//2 + 1`` for a full FSC).

    Returns
    -------
    ``(n_shells,)`` float64; ``FSC[0] = 1``; 0 where a shell has no power.
    """
    a = np.asarray(f1)
    b = np.asarray(f2)
    sel = shells < n_shells
    s = shells[sel]
    av, bv = a[sel], b[sel]
    num = np.bincount(s, (av * np.conj(bv)).real, minlength=n_shells)
    p1 = np.bincount(s, (av.real**2 + av.imag**2), minlength=n_shells)
    p2 = np.bincount(s, (bv.real**2 + bv.imag**2), minlength=n_shells)
    den = np.sqrt(p1 * p2)
    out = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    out[0] = 1.0
    return out


def fsc(map1: ArrayLike, map2: ArrayLike, *, mask: ArrayLike | None = None) -> NDArray[np.float64]:
    """FSC of two cubic maps ``(N, N, N)``, shells 0 .. N//2 (``(N//2+1,)``).

    ``mask`` (same shape) multiplies both maps in real space first (masked FSC).
    """
    m1 = np.asarray(map1, dtype=np.float64)
    m2 = np.asarray(map2, dtype=np.float64)
    if m1.shape != m2.shape or m1.ndim != 3 or len(set(m1.shape)) != 1:
        raise ValueError(f"maps must be cubic and of equal shape, got {m1.shape} and {m2.shape}")
    if mask is not None:
        mk = np.asarray(mask, dtype=np.float64)
        if mk.shape != m1.shape:
            raise ValueError(f"mask shape {mk.shape} differs from the map shape {m1.shape}")
        m1 = m1 * mk
        m2 = m2 * mk
    n = m1.shape[0]
    # The real-space origin does not change the FSC: no centring needed.
    f1 = rfftn(m1, ndim=3)
    f2 = rfftn(m2, ndim=3)
    return fsc_from_transforms(f1, f2, shell_index(n, ndim=3), n_shells=n // 2 + 1)


def resolution_shell(curve: ArrayLike, *, threshold: float = 0.143) -> int:
    """Last shell before the first shell (from 0 up) with ``curve < threshold``.

    Returns the last shell index if the curve never drops below the threshold.
    """
    c = np.asarray(curve, dtype=np.float64)
    below = np.nonzero(c < threshold)[0]
    if below.size == 0:
        return int(c.size - 1)
    return int(max(below[0] - 1, 0))


def resolution_from_fsc(
    curve: ArrayLike, *, box_size: int, pixel_size: float, threshold: float = 0.143
) -> float:
    """Resolution in Å: ``box_size * pixel_size / i`` with ``i`` from :func:`resolution_shell`
    (``inf`` if ``i`` is 0)."""
    i = resolution_shell(curve, threshold=threshold)
    return float("inf") if i == 0 else box_size * pixel_size / i


def randomize_from_shell(fsc_unmasked: ArrayLike, *, threshold: float = 0.8) -> int:
    """relion_postprocess's ``randomize_at``: the first shell ``i > 0`` with FSC < threshold
    (the last shell if none)."""
    c = np.asarray(fsc_unmasked, dtype=np.float64)
    idx = np.nonzero(c[1:] < threshold)[0]
    return int(idx[0] + 1) if idx.size else int(c.size - 1)


def corrected_fsc(
    fsc_masked: ArrayLike, fsc_randomized: ArrayLike, *, randomize_at: int, zero_where_noise_exceeds: bool = False
) -> NDArray[np.float64]:
    """Solvent-corrected FSC: masked FSC below ``randomize_at + 2``, then
    ``(masked - rand) / (1 - rand)``.

    ``zero_where_noise_exceeds``: 0 where the randomised curve exceeds the masked one, as
    relion_refine's "solvent-flattened FSC" does (relion_postprocess does not).
    """
    fm = np.asarray(fsc_masked, dtype=np.float64)
    fr = np.asarray(fsc_randomized, dtype=np.float64)
    out = fm.copy()
    i = np.arange(fm.size) >= randomize_at + 2
    with np.errstate(divide="ignore", invalid="ignore"):
        out[i] = (fm[i] - fr[i]) / (1.0 - fr[i])
    if zero_where_noise_exceeds:
        out[i & (fr > fm)] = 0.0
    return out


def particle_mask_fraction(mask: ArrayLike) -> float:
    """relion_postprocess's ``f`` = 0.476 / (fraction of mask voxels > 0.5)."""
    m = np.asarray(mask)
    frac = float((m > 0.5).mean())
    if frac <= 0:
        raise ValueError("the mask has no voxel above 0.5")
    return 0.476 / frac


def particle_mask_fraction_fsc(fsc_unmasked: ArrayLike, f: float) -> NDArray[np.float64]:
    """``f * FSC / (1 + (f - 1) * FSC)`` (``rlnFourierShellCorrelationParticleMaskFraction``)."""
    c = np.asarray(fsc_unmasked, dtype=np.float64)
    return f * c / (1.0 + (f - 1.0) * c)
