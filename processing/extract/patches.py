"""Tilt-image patches of particles: window, Fourier crop, sub-pixel recentre, CTF premultiply.

The steps of RELION's pseudo-subtomogram extraction (spec 3.3-3.5), batched over the particles
visible in one tilt image. Fourier arrays are half transforms in RELION normalisation (forward
divided by the number of pixels, see :mod:`processing.fourier.fft`) with the real-space origin
at the box centre ``N//2``.
"""
from __future__ import annotations

from functools import lru_cache
from types import ModuleType

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from processing.backend import get_array_module
from processing.fourier.ctf import CtfParameters, ctf_value, dose_weight, fourier_frequency_grid
from processing.fourier.fft import irfft2_centered, rfft2_centered_cropped
from processing.fourier.masks import radius_grid

__all__ = [
    "window_size",
    "extract_windows",
    "circle_precrop",
    "windows_to_fourier",
    "ctf_dose_weights",
    "finalise_2d",
    "soft_circle_crop",
    "tilt_dose_weights",
    "premultiplied_patches",
]

#: fall-off width (pixels) of RELION's raised-cosine circle masks in extraction.
MASK_FALLOFF = 5.0


def window_size(binning: float, box: int) -> tuple[int, int]:
    """Unbinned window ``s0 = round(bin * box)`` and binned box ``sb = round(s0 / bin)``."""
    s0 = int(round(binning * box))
    sb = int(round(s0 / binning))
    return s0, sb


def extract_windows(
    image: NDArray, centres: ArrayLike, size: int
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Cut ``size`` x ``size`` windows around sub-pixel centres; edges are replicated.

    Parameters
    ----------
    image
        (H, W) tilt image.
    centres
        (m, 2) projected particle centres (x, y) in image pixels.
    size
        Window size ``s0`` (pixels).

    Returns
    -------
    windows
        (m, size, size) float64.
    corners
        (m, 2) integer (x, y) of each window's first pixel: ``round(centre) - size//2``.
    """
    c = np.atleast_2d(np.asarray(centres, dtype=np.float64))
    corners = np.rint(c).astype(np.int64) - size // 2
    image = np.asarray(image)
    h, w = image.shape
    windows = np.empty((len(corners), size, size), dtype=np.float64)
    inside = (corners[:, 0] >= 0) & (corners[:, 1] >= 0) & (corners[:, 0] + size <= w) & (corners[:, 1] + size <= h)
    if inside.any():
        # whole blocks of a strided view: a quarter of the time of a per-pixel gather
        windows[inside] = sliding_window_view(image, (size, size))[corners[inside, 1], corners[inside, 0]]
    if not inside.all():
        edge = corners[~inside]
        offsets = np.arange(size)
        rows = np.clip(edge[:, 1, None] + offsets[None, :], 0, h - 1)
        cols = np.clip(edge[:, 0, None] + offsets[None, :], 0, w - 1)
        windows[~inside] = image[rows[:, :, None], cols[:, None, :]]
    return windows, corners


def circle_precrop(windows: NDArray[np.float64]) -> NDArray[np.float64]:
    """Subtract the mean outside the inscribed circle, then taper to it (radius s0/2, 5 px):
    in place on the (m, s0, s0) float64 windows, which are returned.

    The mean is one matrix-vector product with the outside mask (no copy of the outside
    pixels), and both steps write into the windows: at s0 = 576 (the tutorial's bin 6 cut
    from bin-2 tilt series) these windows are 2.7 MB each, so passes over them are the cost.
    """
    xp = get_array_module(windows)
    outside, taper = _precrop_masks(windows.shape[-1])
    n_outside = int(outside.sum())
    if n_outside:
        flat = windows.reshape(len(windows), -1)
        mean_out = flat @ xp.asarray(outside.reshape(-1)) / n_outside
        windows -= mean_out[:, None, None]
    windows *= xp.asarray(taper)
    return windows


@lru_cache(maxsize=8)
def _precrop_masks(size: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(size, size) 1.0 at the pixels outside the inscribed circle (0.0 inside), and the taper
    to it (read-only; float, so that the outside mean is a matrix-vector product)."""
    r = radius_grid((size, size))
    radius = size / 2.0
    outside, taper = (r > radius).astype(np.float64), _inner_raised_cosine(r, radius)
    outside.flags.writeable = False
    taper.flags.writeable = False
    return outside, taper


def _inner_raised_cosine(r: NDArray, radius: float) -> NDArray[np.float64]:
    """1 inside ``radius - 5``, 0 beyond ``radius``, raised cosine between."""
    edge = 0.5 - 0.5 * np.cos(np.pi * (radius - r) / MASK_FALLOFF)
    return np.where(r < radius - MASK_FALLOFF, 1.0, np.where(r > radius, 0.0, edge))


def windows_to_fourier(
    windows: NDArray,
    centres: ArrayLike,
    corners: NDArray[np.int64],
    *,
    binning: float,
    binned_size: int,
) -> NDArray[np.complex128]:
    """Fourier transform, crop to the binned box and recentre each particle exactly.

    Parameters
    ----------
    windows
        (m, s0, s0) real windows whose centre pixel ``s0//2`` sits at ``corner + s0//2``.
    centres
        (m, 2) exact projected centres (x, y), unbinned image pixels.
    corners
        (m, 2) window corners from :func:`extract_windows`.
    binning
        Binning factor.
    binned_size
        ``sb``: the box after Fourier cropping.

    Returns
    -------
    (m, sb, sb//2+1) complex128 half transforms, RELION-normalised, particle centre at the
    box centre, grey values divided by ``binning`` (RELION's stack greyscale: a sum
    projection in binned-voxel units).
    """
    s0 = windows.shape[-1]
    # relion_tomo_subtomo's tomogram extraction reads the Nyquist row as -n/2, both where it
    # crops the transform (Resampling::FourierCrop_fftwHalfStack) and where it shifts it
    # (NewStackHelper::shiftStack).
    rows = np.arange(binned_size)
    ky_rows = np.where(rows < binned_size // 2, rows, rows - binned_size)
    spectra = rfft2_centered_cropped(windows, np.where(ky_rows >= 0, ky_rows, ky_rows + s0), binned_size // 2 + 1)
    # Exact centre relative to the window centre, in binned pixels.
    delta = (np.atleast_2d(np.asarray(centres, dtype=np.float64)) - (corners + s0 // 2)) / binning
    # The shift's phase factor is a product of a row factor and a column factor (the grey-scale
    # division folded into the latter): two small tables instead of an exponential per pixel.
    kx = np.arange(binned_size // 2 + 1)
    along_x = np.exp((2j * np.pi / binned_size) * delta[:, 0, None] * kx[None, :]) / binning
    along_y = np.exp((2j * np.pi / binned_size) * delta[:, 1, None] * ky_rows[None, :])
    xp = get_array_module(spectra)
    spectra *= xp.asarray(along_y)[:, :, None]
    spectra *= xp.asarray(along_x)[:, None, :]
    return spectra


def ctf_dose_weights(
    ctf: CtfParameters,
    defocus_offsets: ArrayLike,
    *,
    dose: float,
    bfactor_per_dose: float,
    box: int,
    pixel_size: float,
    apply_ctf: bool = True,
) -> NDArray[np.float64]:
    """CTF (at each particle's depth, with the tilt's B-factor envelope and scale) x dose weight.

    Parameters
    ----------
    ctf
        The tilt's CTF parameters (defocus at the tomogram centre).
    defocus_offsets
        (m,) depth-dependent defocus change per particle (Å), spec 2.6.
    dose
        Pre-exposure of the tilt (e/Å²).
    bfactor_per_dose
        ``rlnCtfBfactorPerElectronDose`` (0: Grant-Grigorieff weighting).
    box, pixel_size
        Binned box and binned pixel size (Å).
    apply_ctf
        False gives the dose weight alone (``--no_ctf``).

    Returns
    -------
    (m, box, box//2+1) float64.
    """
    kx, ky = fourier_frequency_grid(box, pixel_size)
    weight = dose_weight(np.hypot(kx, ky), dose, bfactor_per_dose=bfactor_per_dose)
    offsets = np.asarray(defocus_offsets, dtype=np.float64)[:, None, None]
    if not apply_ctf:
        return np.broadcast_to(weight, offsets.shape[:1] + weight.shape).copy()
    return ctf_value(kx, ky, ctf, defocus_offset=offsets) * weight


def tilt_dose_weights(tomogram, *, box: int, pixel_size: float) -> NDArray[np.float64]:
    """(t, box, box//2+1) dose weight of every tilt of ``tomogram`` (a
    :class:`~processing.io.tomograms.Tomogram`) at each frequency of a ``box`` half transform
    with pixel size ``pixel_size`` (Å): what selects the slice pixels RELION inserts."""
    kx, ky = fourier_frequency_grid(box, pixel_size)
    k = np.hypot(kx, ky)
    return np.stack([dose_weight(k, float(dose), bfactor_per_dose=tomogram.bfactor_per_electron_dose)
                     for dose in tomogram.tilts.pre_exposure])


def soft_circle_crop(images: NDArray, *, crop: int) -> NDArray[np.float64]:
    """RELION's final circular mask (spec 3.5 step 3), without cropping.

    Subtract the mean of the pixels outside radius ``crop/2`` and taper with a raised cosine
    that is 1 inside ``crop/2 - 5`` and 0 beyond ``crop/2``.

    Parameters
    ----------
    images
        (m, box, box) real images, centre at ``box//2``.
    crop
        Cropped box (pixels).
    """
    box = images.shape[-1]
    r = radius_grid((box, box))
    radius = crop / 2.0
    outside = r > radius
    mean_out = images[:, outside].mean(axis=1) if outside.any() else np.zeros(len(images))
    return (images - mean_out[:, None, None]) * _inner_raised_cosine(r, radius)


def finalise_2d(spectra: NDArray, *, box: int, crop: int, circle_crop: bool = True) -> NDArray[np.float64]:
    """Back to real space, soft circular mask of the cropped box, centre crop (spec 3.5).

    Parameters
    ----------
    spectra
        (m, box, box//2+1) premultiplied half transforms.
    box, crop
        Binned box and final cropped box.

    Returns
    -------
    (m, crop, crop) float64 images.
    """
    images = irfft2_centered(spectra, box)
    if circle_crop:
        images = soft_circle_crop(images, crop=crop)
    start = box // 2 - crop // 2
    return images[:, start:start + crop, start:start + crop]


def premultiplied_patches(
    image: NDArray,
    centres: ArrayLike,
    defocus_offsets: ArrayLike,
    ctf: CtfParameters,
    *,
    dose: float,
    bfactor_per_dose: float,
    binning: float,
    box: int,
    pixel_size: float,
    apply_ctf: bool = True,
    invert_contrast: bool = True,
    precrop: bool = False,
    xp: ModuleType = np,
) -> tuple[NDArray[np.complex128], NDArray[np.float64]]:
    """Premultiplied Fourier patches of particles in one tilt image (spec 3.3, 3.4).

    Parameters
    ----------
    image
        (H, W) tilt image.
    centres
        (m, 2) exact projected centres (x, y) in image pixels.
    defocus_offsets
        (m,) depth-dependent defocus change (Å).
    ctf
        The tilt's CTF parameters at the tomogram centre.
    dose, bfactor_per_dose
        Pre-exposure of the tilt (e/Å²) and ``rlnCtfBfactorPerElectronDose``.
    binning, box
        Binning factor and binned box.
    pixel_size
        Tilt-series pixel size (Å).
    apply_ctf
        Multiply by the CTF (else by 1; ``--no_ctf``).
    invert_contrast
        Multiply by -1 so that protein becomes white (RELION's default).
    precrop
        Mean-subtract and taper each window to its inscribed circle first (``--circle_precrop``;
        always on in Reconstruct particle).
    xp
        Array module of the transforms and the results (cupy: the windows are cut on the host
        and moved to the GPU, which does the rest).

    Returns
    -------
    spectra
        (m, sb, sb//2+1) complex ``±c·X`` with ``c`` = CTF x dose weight.
    weights
        (m, sb, sb//2+1) ``c²``.
    """
    s0, sb = window_size(binning, box)
    windows, corners = extract_windows(image, centres, s0)
    windows = xp.asarray(windows)
    if precrop:
        windows = circle_precrop(windows)
    spectra = windows_to_fourier(windows, centres, corners, binning=binning, binned_size=sb)
    if apply_ctf:
        c = xp.asarray(ctf_dose_weights(
            ctf, defocus_offsets, dose=dose, bfactor_per_dose=bfactor_per_dose,
            box=sb, pixel_size=binning * pixel_size,
        ))
    else:
        c = xp.ones(spectra.shape)
    sign = -1.0 if invert_contrast else 1.0
    return spectra * (sign * c), c * c
