"""3D pseudo-subtomograms (RELION 4 layout, spec 3.6): premultiplied tilt slices inserted into
a 3D Fourier volume, with the CTF² and multiplicity volumes beside it.

The insertion follows ``relion_tomo_subtomo`` (read for its rules, ``FourierBackprojection::
backprojectSlice_forward_with_multiplicity``): each slice pixel ``(x, y)`` inside the box's
circle whose dose weight exceeds 1 % (``Tomogram::findDoseXRanges``; ``x >= 1`` on the rows
``y < 0``, so the ``x = 0`` column enters once) goes to ``scale · Pᵀ (x, y, 0)`` on the cropped
grid (``scale = crop / box``), trilinearly, with weight ``scale²`` times the interpolation
weight; contributions on the ``x = 0`` plane also go, conjugated, to their mirror. The grid
keeps frequencies ``-crop/2 .. crop/2 - 1`` in y and z. Greyscale: the real-space volume is
RELION's inverse transform (``√N³``-normalised) of the sums times ``box / (crop √binning)``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit
from numpy.typing import NDArray

from processing.fourier.fft import irfft2_centered, irfft3_centered, rfft2_centered

from .patches import soft_circle_crop

__all__ = ["pseudo_subtomogram", "DOSE_CUTOFF"]

#: Slice pixels whose dose weight is at most this are left out (``--cutoff_fract``).
DOSE_CUTOFF = 0.01


@njit(cache=True, fastmath=False, nogil=True)
def _insert_slices(spectra, weights, x_ranges, rotations, scale, data, ctf2, multiplicity):
    """Insert slices (f, s, s//2+1) into the FFTW half grids (c, c, c//2+1) in place."""
    n_frames, s, _ = spectra.shape
    c = data.shape[0]
    wh = data.shape[2]
    m_scale = scale * scale
    for f in range(n_frames):
        r = rotations[f]
        for y in range(s):
            yy = y if y < s // 2 else y - s
            x_first = 0 if y < s // 2 else 1
            for x in range(x_first, x_ranges[f, y]):
                px = scale * (r[0, 0] * x + r[1, 0] * yy)
                py = scale * (r[0, 1] * x + r[1, 1] * yy)
                pz = scale * (r[0, 2] * x + r[1, 2] * yy)
                value = spectra[f, y, x]
                if px < 0.0:
                    px, py, pz = -px, -py, -pz
                    value = np.conj(value)
                wgt = weights[f, y, x]
                x0 = int(math.floor(px))
                y0 = int(math.floor(py))
                z0 = int(math.floor(pz))
                for dz in range(2):
                    zg = z0 + dz
                    if zg < -(c // 2) or zg >= c // 2:
                        continue
                    fz = 1.0 - abs(pz - zg)
                    zi = zg if zg >= 0 else zg + c
                    for dy in range(2):
                        yg = y0 + dy
                        if yg < -(c // 2) or yg >= c // 2:
                            continue
                        fy = 1.0 - abs(py - yg)
                        yi = yg if yg >= 0 else yg + c
                        for dx in range(2):
                            xg = x0 + dx
                            if xg >= wh:
                                continue
                            m = m_scale * (1.0 - abs(px - xg)) * fy * fz
                            data[zi, yi, xg] += m * value
                            ctf2[zi, yi, xg] += m * wgt
                            multiplicity[zi, yi, xg] += m
                            if xg == 0:
                                ym = (c - yi) % c
                                zm = (c - zi) % c
                                data[zm, ym, 0] += m * np.conj(value)
                                ctf2[zm, ym, 0] += m * wgt
                                multiplicity[zm, ym, 0] += m


def dose_x_ranges(dose_weights: NDArray[np.float64], *, cutoff: float = DOSE_CUTOFF) -> NDArray[np.int64]:
    """(f, s) per slice and FFTW row: one past the last ``x`` inside the box's circle whose dose
    weight exceeds ``cutoff`` (0 when none does)."""
    n_frames, s, half = dose_weights.shape
    y = np.arange(s)
    yy = np.where(y < s // 2, y, y - s).astype(np.float64)
    x_max = np.sqrt(s * s // 4 - yy * yy, where=s * s // 4 >= yy * yy, out=np.full(s, -1.0))
    x = np.arange(half)
    inside = (x[None, :] <= x_max[:, None])[None] & (dose_weights > cutoff)
    last = np.where(inside, x[None, None, :] + 1, 0)
    return last.max(axis=2).astype(np.int64)


def pseudo_subtomogram(
    spectra: NDArray[np.complex128],
    weights: NDArray[np.float64],
    dose_weights: NDArray[np.float64],
    rotations: NDArray[np.float64],
    *,
    box: int,
    crop: int,
    binning: float,
    circle_crop: bool = True,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Build one particle's 3D pseudo-subtomogram and its weights volume.

    Parameters
    ----------
    spectra
        (f, box, box//2+1) premultiplied slices (±CTF·X, 2D-stack greyscale: RELION-normalised
        transform divided by the binning) of the usable tilts.
    weights
        (f, box, box//2+1) CTF² of each slice (with the dose weight).
    dose_weights
        (f, box, box//2+1) dose weight of each slice pixel (selects the inserted pixels).
    rotations
        (f, 3, 3) ``P_f[:3,:3] @ A_sub``: tilt-image coordinates from subtomogram coordinates.
    box, crop
        Binned box of the slices and cropped box of the output.
    binning
        Binning factor (enters the greyscale, as in RELION).
    circle_crop
        Soft circular mask (radius crop/2) of each slice in real space before insertion.

    Returns
    -------
    volume
        (crop, crop, crop) real-space data, origin at the centre.
    ctf2_multiplicity
        (2 crop, crop, crop//2+1): z < crop the CTF² sum, z >= crop the multiplicity, FFTW half
        layout with the origin at element 0 (RELION's ``_weights.mrc``).
    """
    if circle_crop:
        spectra = rfft2_centered(soft_circle_crop(irfft2_centered(spectra, box), crop=crop))
    shape = (crop, crop, crop // 2 + 1)
    data = np.zeros(shape, dtype=np.complex128)
    ctf2 = np.zeros(shape)
    multiplicity = np.zeros(shape)
    _insert_slices(
        np.ascontiguousarray(spectra, dtype=np.complex128), np.ascontiguousarray(weights, dtype=np.float64),
        dose_x_ranges(dose_weights), np.ascontiguousarray(rotations, dtype=np.float64), crop / box,
        data, ctf2, multiplicity,
    )
    # RELION's slices are √N-normalised and not divided by the binning (2D stacks are): times
    # binning · box against the stack greyscale; then box / (crop √binning) and the √N³-normalised
    # inverse transform.
    greyscale = binning * box * (box / (crop * math.sqrt(binning))) / crop**1.5
    volume = irfft3_centered(data * greyscale, crop)
    return volume, np.concatenate([ctf2, multiplicity], axis=0)
