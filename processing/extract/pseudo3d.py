"""3D pseudo-subtomograms (RELION 4 layout, spec 3.6): premultiplied tilt slices inserted into
a 3D Fourier volume, with the CTF² and multiplicity volumes beside it.

Greyscale: the returned volume's RELION-normalised transform is ``Σ_f CTF_f·X_f`` resampled
on the cropped grid, so that data / CTF² estimates the map's transform at the cropped box
(what 3D auto-refine's 3D path compares with the reference).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from processing.fourier.backprojector import backproject_slices, enforce_hermitian
from processing.fourier.fft import irfft2_centered, irfft3_centered, rfft2_centered

from .patches import soft_circle_crop

__all__ = ["pseudo_subtomogram", "centred_grid_to_half"]


def centred_grid_to_half(grid: NDArray, c: int, size: int) -> NDArray:
    """Centred accumulator ``(2c+1, 2c+1, c+1)`` -> FFTW half layout ``(size, size, size//2+1)``."""
    i = np.arange(size)
    k = np.where(i <= size // 2, i, i - size) + c
    return grid[k[:, None], k[None, :], : size // 2 + 1]


def pseudo_subtomogram(
    spectra: NDArray[np.complex128],
    weights: NDArray[np.float64],
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
        (f, box, box//2+1) premultiplied slices (±CTF·X) of the usable tilts.
    weights
        (f, box, box//2+1) CTF² of each slice.
    rotations
        (f, 3, 3) ``P_f[:3,:3] @ A_sub``: tilt-image coordinates from subtomogram coordinates.
    box, crop
        Binned box of the slices and cropped box of the output.
    binning
        Binning factor (recorded for symmetry with RELION; the scale uses box and crop).
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
    scale = crop / box
    c = crop // 2 + 2
    shape = (2 * c + 1, 2 * c + 1, c + 1)
    data = np.zeros(shape, dtype=np.complex128)
    ctf2 = np.zeros(shape)
    multi_data = np.zeros(shape, dtype=np.complex128)
    multi = np.zeros(shape)
    backproject_slices(data, ctf2, c, spectra, rotations, weights=weights, padding_factor=scale, r_max=box / 2)
    backproject_slices(multi_data, multi, c, np.zeros_like(spectra), rotations, padding_factor=scale,
                       r_max=box / 2)
    enforce_hermitian(data, ctf2)
    enforce_hermitian(multi_data, multi)
    half = centred_grid_to_half(data, c, crop)
    # A slice at box b samples the map's transform times b (sum projection); resampled on the
    # cropped grid the RELION-normalised transform scales by (b/crop)^3.
    volume = irfft3_centered(half * (box**2 / crop**3), crop)
    weights_volume = np.concatenate(
        [centred_grid_to_half(ctf2, c, crop), centred_grid_to_half(multi, c, crop)], axis=0
    )
    return volume, weights_volume
