"""Premultiplied tilt-image slices as relion_tomo_reconstruct_particle makes them: the
extraction primitives of :mod:`processing.extract.patches` (circle pre-crop on), with this
program's unitary transform (``1/s0`` for an ``s0 x s0`` window, where the extraction divides
by ``s0²``).
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from processing.extract.patches import premultiplied_patches, window_size
from processing.fourier.ctf import CtfParameters

__all__ = ["reconstruction_slices"]


def reconstruction_slices(
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
    circle_crop: bool = True,
) -> tuple[NDArray[np.complex128], NDArray[np.float64]]:
    """Contrast-inverted, CTF- and dose-premultiplied slices of particles in one tilt image.

    Parameters
    ----------
    image
        (H, W) tilt image.
    centres
        (m, 2) exact projected centres (x, y), image pixels.
    defocus_offsets
        (m,) depth-dependent defocus change (Å).
    ctf
        The tilt's CTF at the tomogram centre.
    dose, bfactor_per_dose
        Pre-exposure (e/Å²) and ``rlnCtfBfactorPerElectronDose``.
    binning, box
        Binning factor and binned box.
    pixel_size
        Tilt-series pixel size (Å).
    apply_ctf
        False: no CTF, no dose weight, weights 1 (``--no_ctf``).
    circle_crop
        Mean-subtract and taper each window to its inscribed circle (off: ``--no_circle_crop``).

    Returns
    -------
    spectra
        (m, sb, sb//2+1) ``-c·X`` with ``X`` the window's unitary transform, Fourier-cropped to
        the binned box and divided by the binning; ``c`` = CTF x dose weight.
    weights
        (m, sb, sb//2+1) ``c²``.
    """
    s0, _ = window_size(binning, box)
    spectra, weights = premultiplied_patches(
        image, centres, defocus_offsets, ctf, dose=dose, bfactor_per_dose=bfactor_per_dose, binning=binning,
        box=box, pixel_size=pixel_size, apply_ctf=apply_ctf, invert_contrast=True, precrop=circle_crop,
    )
    return spectra * s0, weights
