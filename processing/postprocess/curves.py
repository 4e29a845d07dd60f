"""The FSC curves of relion_postprocess and its final resolution (``Postprocessing::run``).

Unmasked FSC; with a mask: masked FSC, phase randomisation of both halves beyond the first
shell where the unmasked FSC < 0.8 (or ``--randomize_at_A``), masked FSC of the randomised
maps, the corrected FSC (masked below ``randomize_at + 2``, then (masked - rand)/(1 - rand)),
the particle-mask-fraction FSC; the final resolution at 0.143 of the corrected curve, and
RELION's fallback to the unmasked curve when it reaches further than the corrected one
(unless ``force_mask``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from processing.fourier.fsc import (
    corrected_fsc,
    fsc,
    particle_mask_fraction,
    particle_mask_fraction_fsc,
    randomize_from_shell,
    resolution_shell,
)
from processing.glibc_random import GlibcRandom

from .randomise import randomize_phases_beyond

__all__ = ["PostprocessCurves", "postprocess_curves", "NeverBelowThreshold"]

#: relion_postprocess's threshold for the final resolution.
FSC_THRESHOLD = 0.143


class NeverBelowThreshold(ValueError):
    """The unmasked FSC never drops below the phase-randomisation threshold."""


@dataclass(frozen=True)
class PostprocessCurves:
    """All curves of ``data_fsc`` (each ``(N//2+1,)``) and what they give.

    Attributes
    ----------
    box, pixel_size : box size (px) and pixel size (Å).
    unmasked, masked, randomized, corrected, particle_mask_fraction : FSC columns
        (``masked``/``randomized``/``particle_mask_fraction`` are ``None`` without a mask).
        ``corrected`` is ``rlnFourierShellCorrelationCorrected`` (the unmasked curve without
        a mask or after the unmasked fallback).
    randomize_at : shell from which phases were randomised (``None`` without a mask).
    mask_fraction_f : ``0.476 / fraction of mask voxels > 0.5``.
    resolution_shell : last shell before the corrected FSC first drops below 0.143.
    resolution : final resolution (Å); 999 when even shell 0 is below the threshold.
    unmasked_fallback : the unmasked curve replaced the corrected one (RELION's warning).
    warnings : RELION's warnings for this result, as sentences.
    """

    box: int
    pixel_size: float
    unmasked: NDArray[np.float64]
    masked: NDArray[np.float64] | None
    randomized: NDArray[np.float64] | None
    corrected: NDArray[np.float64]
    particle_mask_fraction: NDArray[np.float64] | None
    randomize_at: int | None
    mask_fraction_f: float | None
    resolution_shell: int
    resolution: float
    unmasked_fallback: bool
    warnings: tuple[str, ...]

    @property
    def spectral_index(self) -> NDArray[np.int64]:
        """``rlnSpectralIndex``: 0 .. N/2."""
        return np.arange(self.unmasked.size)

    @property
    def angstrom_resolution(self) -> NDArray[np.float64]:
        """``rlnAngstromResolution``: N px / i, 999 for shell 0."""
        i = self.spectral_index
        return np.where(i > 0, self.box * self.pixel_size / np.maximum(i, 1), 999.0)

    @property
    def randomise_from_angstrom(self) -> float | None:
        """``rlnRandomiseFrom``: N px / randomize_at (Å)."""
        return None if self.randomize_at is None else self.box * self.pixel_size / self.randomize_at


def _shell_to_angstrom(box: int, pixel_size: float, shell: int, curve: NDArray[np.float64]) -> float:
    if curve[0] < FSC_THRESHOLD:
        return 999.0
    return float("inf") if shell == 0 else box * pixel_size / shell


def postprocess_curves(
    half1: ArrayLike,
    half2: ArrayLike,
    *,
    pixel_size: float,
    mask: ArrayLike | None = None,
    randomize_fsc_at: float = 0.8,
    randomize_at_angstrom: float = -1.0,
    force_mask: bool = False,
    random_seed: int = 0,
) -> PostprocessCurves:
    """relion_postprocess's FSC curves for two unfiltered half maps.

    Parameters
    ----------
    half1, half2
        ``(N, N, N)`` half maps (any real dtype).
    pixel_size
        Å per voxel (``--angpix``).
    mask
        ``(N, N, N)`` solvent mask in [0, 1], or ``None`` (no masking).
    randomize_fsc_at
        ``--randomize_at_fsc``: randomise phases from the first shell with unmasked FSC below it.
    randomize_at_angstrom
        ``--randomize_at_A``: if positive, randomise from shell ``int(N px / value)`` instead.
    force_mask
        ``--force_mask``: keep the corrected curve even when the unmasked one goes further.
    random_seed
        ``--random_seed`` (>= 0): seed of RELION's ``rand()`` stream for the random phases.

    Raises
    ------
    NeverBelowThreshold
        When the unmasked FSC never drops below ``randomize_fsc_at`` (RELION stops there too).
    """
    if pixel_size <= 0:
        raise ValueError(f"pixel_size must be > 0, got {pixel_size}")
    h1 = np.asarray(half1, dtype=np.float64)
    h2 = np.asarray(half2, dtype=np.float64)
    n = h1.shape[0]
    fu = fsc(h1, h2)
    if fu[0] <= 0:
        fu[0] = 1.0
    if mask is None:
        shell = resolution_shell(fu, threshold=FSC_THRESHOLD)
        return PostprocessCurves(n, pixel_size, fu, None, None, fu.copy(), None, None, None, shell,
                                 _shell_to_angstrom(n, pixel_size, shell, fu), False, ())
    mk = np.asarray(mask, dtype=np.float64)
    fm = fsc(h1, h2, mask=mk)
    if randomize_at_angstrom > 0:
        rnd_at = int(pixel_size * n / randomize_at_angstrom)
    else:
        below = np.nonzero(fu[1:] < randomize_fsc_at)[0]
        if below.size == 0:
            raise NeverBelowThreshold(
                f"the unmasked FSC never drops below {randomize_fsc_at:g}: phases cannot be randomised")
        rnd_at = randomize_from_shell(fu, threshold=randomize_fsc_at)
    if rnd_at <= 0:
        raise NeverBelowThreshold(f"phases would be randomised from shell {rnd_at}: nothing to correct")
    generator = GlibcRandom(random_seed)
    r1 = randomize_phases_beyond(h1, index=rnd_at, generator=generator)
    r2 = randomize_phases_beyond(h2, index=rnd_at, generator=generator)
    fr = fsc(r1, r2, mask=mk)
    for curve in (fm, fr):
        if curve[0] <= 0:
            curve[0] = 1.0
    fc = corrected_fsc(fm, fr, randomize_at=rnd_at)
    f = particle_mask_fraction(mk)
    shell = resolution_shell(fc, threshold=FSC_THRESHOLD)
    resolution = _shell_to_angstrom(n, pixel_size, shell, fc)
    unmasked_shell = resolution_shell(fu, threshold=FSC_THRESHOLD)
    warnings: list[str] = []
    fallback = False
    if unmasked_shell > shell:
        if force_mask:
            warnings.append("the unmasked FSC extends beyond the solvent-corrected FSC.")
        else:
            warnings.append("the unmasked FSC extends beyond the solvent-corrected FSC. Skip masking "
                            "for now, but you may want to adjust your mask!")
            fc = fu.copy()
            shell = unmasked_shell
            resolution = _shell_to_angstrom(n, pixel_size, shell, fu)
            fallback = True
    elif fr[shell] > 0.1:
        warnings.append("The phase-randomised FSC is larger than 0.10 at the estimated resolution! "
                        "This may result in an incorrect resolution estimation. Provide a softer mask "
                        "with less features to get lower phase-randomised FSCs.")
    return PostprocessCurves(n, pixel_size, fu, fm, fr, fc, particle_mask_fraction_fsc(fu, f), rnd_at, f,
                             shell, resolution, fallback, tuple(warnings))
