"""From Fourier sums to a map, with the rules of ``relion_tomo_reconstruct_particle``.

Steps (read in RELION 5 for their rules): inverse transform of the data sum with the origin
moved to the box centre, divided by sinc² of the voxel's radius (gridding correction of the
linear interpolation); forward transform, division by the CTF² sum (a floor at 0.001 of its
radial average, or ``+ 1/SNR``), inverse transform; centre crop and taper.

Greyscale: RELION's transforms here are unitary (``1/√N`` each way), so the real-space map is
``irfftn(data) · √N`` with ``N = box³``; the CTF division itself is scale-free.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["gridding_corrected", "divide_by_ctf2", "finish_map", "taper"]

#: Smallest sinc² of the gridding correction (RELION's ``eps``).
GRIDDING_FLOOR = 1e-2
#: Heuristic division floor, as a fraction of the CTF² sum's radial average.
WEIGHT_FRACTION = 1e-3


def _signed_indices(n: int) -> NDArray[np.float64]:
    """FFTW order frequencies of an axis of length ``n``: ``0 .. n/2-1, -n/2 .. -1``."""
    k = np.arange(n)
    return np.where(k >= n // 2, k - n, k).astype(np.float64)


def _fourier_radius(box: int) -> NDArray[np.float64]:
    """(box, box, box//2+1) |k| in grid units, FFTW half layout."""
    kz = _signed_indices(box)[:, None, None]
    ky = _signed_indices(box)[None, :, None]
    kx = np.arange(box // 2 + 1, dtype=np.float64)[None, None, :]
    return np.sqrt(kx * kx + ky * ky + kz * kz)


def gridding_corrected(data: NDArray[np.complex128], box: int) -> NDArray[np.float64]:
    """Real-space map of a Fourier data sum, origin at ``box//2``, divided by sinc²(r / box).

    Parameters
    ----------
    data
        (box, box, box//2+1) Fourier sum, origin at element 0.
    box
        Box size (even).

    Returns
    -------
    (box, box, box) float64: ``√N``-scaled inverse transform (unitary convention) divided by
    ``sinc²(r/box)``, floored at :data:`GRIDDING_FLOOR` (the centre voxel is left as is).
    """
    volume = np.fft.fftshift(np.fft.irfftn(data, s=(box,) * 3, axes=(0, 1, 2))) * box**1.5
    c = np.arange(box, dtype=np.float64) - box // 2
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        sinc = np.sin(np.pi * r / box) / (np.pi * r / box)
    sinc2 = np.where(r > 0, sinc * sinc, 1.0)
    return volume / np.where((sinc2 < GRIDDING_FLOOR) | (r / box > 1.0), GRIDDING_FLOOR, sinc2)


def _radial_average_linear(values: NDArray[np.float64], radius: NDArray[np.float64], n_bins: int) -> NDArray[np.float64]:
    """Average over shells with linear binning: each voxel shares itself between its two
    nearest integer radii by distance (RELION's radial average of the CTF² sum)."""
    r0 = np.floor(radius).astype(np.int64).ravel()
    w1 = radius.ravel() - r0
    v = values.ravel()
    total = np.zeros(n_bins)
    weight = np.zeros(n_bins)
    for shell, w in ((r0, 1.0 - w1), (r0 + 1, w1)):
        keep = shell < n_bins
        total += np.bincount(shell[keep], w[keep] * v[keep], minlength=n_bins)
        weight += np.bincount(shell[keep], w[keep], minlength=n_bins)
    return np.where(weight > 0, total / np.where(weight > 0, weight, 1.0), total)


def divide_by_ctf2(volume: NDArray[np.float64], ctf2: NDArray[np.float64], *, snr: float = 0.0) -> NDArray[np.float64]:
    """Divide a real-space map by a Fourier CTF² sum.

    Parameters
    ----------
    volume
        (box, box, box) gridding-corrected map.
    ctf2
        (box, box, box//2+1) CTF² sum, origin at element 0.
    snr
        > 0: Wiener division ``F / (ctf2 + 1/snr)``. Otherwise the heuristic: ``F / max(ctf2,
        0.001 · radial average of ctf2)``, frequencies beyond the last full shell (``|k| + 1 >=
        box/2 + 1``) set to 0, and voxels whose divisor is 0 left undivided.

    Returns
    -------
    (box, box, box) float64.
    """
    box = volume.shape[0]
    spectrum = np.fft.rfftn(volume)
    if snr > 0:
        return np.fft.irfftn(spectrum / (ctf2 + 1.0 / snr), s=volume.shape, axes=(0, 1, 2))
    n_bins = box // 2 + 1
    radius = _fourier_radius(box)
    average = _radial_average_linear(ctf2, radius, n_bins)
    r0 = np.floor(radius).astype(np.int64)
    inside = r0 + 1 < n_bins
    frac = radius - r0
    r0c = np.minimum(r0, n_bins - 2)
    local_average = frac * average[r0c + 1] + (1.0 - frac) * average[r0c]
    divisor = np.maximum(ctf2, local_average * WEIGHT_FRACTION)
    divided = np.where(divisor > 0, spectrum / np.where(divisor > 0, divisor, 1.0), spectrum)
    return np.fft.irfftn(np.where(inside, divided, 0.0), s=volume.shape, axes=(0, 1, 2))


def finish_map(
    data: NDArray[np.complex128], ctf2: NDArray[np.float64], *, box: int, crop: int, snr: float, taper_width: float
) -> NDArray[np.float64]:
    """Gridding correction, CTF² division, centre crop to ``crop`` (when smaller than the box)
    and a taper of ``taper_width`` voxels with the mean inside subtracted (the crop's or, without
    cropping, the box's).

    Returns
    -------
    (crop, crop, crop) float64 (``crop`` <= 0 or >= box: the whole box).
    """
    volume = divide_by_ctf2(gridding_corrected(data, box), ctf2, snr=snr)
    if 0 < crop < box:
        s = (box - crop) // 2
        volume = volume[s:s + crop, s:s + crop, s:s + crop]
    return taper(volume, width=taper_width)


def taper(volume: NDArray[np.float64], *, width: float) -> NDArray[np.float64]:
    """Soft spherical edge: weight 1 inside ``n/2 - width``, a raised cosine down to 0 at ``n/2``
    (radius from the point ``n/2`` in voxel units, also for odd ``n``), 0 beyond; the
    weighted mean inside is subtracted first.

    Parameters
    ----------
    volume
        (n, n, n) map.
    width
        Fall-off width (voxels).
    """
    n = volume.shape[0]
    m = n / 2.0
    c = np.arange(n, dtype=np.float64) - m
    r = np.sqrt(c[:, None, None] ** 2 + c[None, :, None] ** 2 + c[None, None, :] ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        edge = 0.5 - 0.5 * np.cos(np.pi * (m - r) / width)
    t = np.where(r < m - width, 1.0, np.where(r < m, edge, 0.0))
    mean = float((t * volume).sum() / t.sum()) if t.sum() > 0 else 0.0
    return np.where(r < m, t * (volume - mean), 0.0)
