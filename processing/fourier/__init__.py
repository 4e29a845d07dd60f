"""Fourier-space building blocks, each as RELION 5 computes it (spec 2.1, 2.5-2.7, 4-5).

The public face is the modules, imported by name (the projector and back-projector compile
numba kernels, so nothing is imported here eagerly):

``fft``
    FFT backend, centred half transforms, shell indices, resampling (RELION's conventions).
``ctf``
    Contrast transfer function and dose weighting.
``projector``, ``backprojector``
    Central slices of a padded reference; insertion into Fourier sums and reconstruction.
``fsc``
    Fourier shell correlation, resolution, post-processing's phase-randomised correction.
``masks``, ``filters``
    Soft spherical / solvent masks; raised-cosine low-pass filters.
"""
from __future__ import annotations

__all__ = ["backprojector", "ctf", "fft", "filters", "fsc", "masks", "projector"]
