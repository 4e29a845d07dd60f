"""Compare refined poses and maps with a known truth (simulated data): angular error up to the
symmetry mates, shift error, and the FSC against the true map."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from processing.geometry.projection import particle_rotations
from processing.geometry.symmetry import angular_distance
from processing.io.particles import ParticleSet
from processing.io.tomograms import TomogramSet

__all__ = ["PoseErrors", "pose_errors"]


@dataclass
class PoseErrors:
    """Per-particle angular errors (deg, nearest symmetry mate) and shift errors (Å)."""

    angles: NDArray[np.float64]
    shifts: NDArray[np.float64]

    @property
    def median_angle(self) -> float:
        return float(np.median(self.angles))

    @property
    def median_shift(self) -> float:
        return float(np.median(self.shifts))


def pose_errors(
    refined_star: str | os.PathLike, truth_star: str | os.PathLike, tomograms_star: str | os.PathLike,
    *, symmetry: str = "C1",
) -> PoseErrors:
    """Errors of refined particle poses against the true ones, matched by particle name.

    Both sets are compared in the tomogram: the shift error is the distance between the two
    particle centres (origins applied), the angular error the smallest rotation between the
    particle-to-tomogram rotations ``A_sub A_part`` over the symmetry mates.
    """
    tomograms = TomogramSet.read(tomograms_star)
    refined = ParticleSet.read(refined_star, tomograms)
    truth = ParticleSet.read(truth_star, tomograms)
    lookup = {str(n): i for i, n in enumerate(truth.particle_names())}
    try:
        order = np.array([lookup[str(n)] for n in refined.particle_names()])
    except KeyError as exc:
        raise ValueError(f"particle {exc} of {refined_star} is not in {truth_star}") from None
    r_est = particle_rotations(refined.angles(), refined.subtomogram_angles())
    r_true = particle_rotations(truth.angles(), truth.subtomogram_angles())[order]
    angles = angular_distance(r_est, r_true, symmetry, metric="geodesic")
    px = np.array([tomograms[str(t)].pixel_size for t in refined.tomo_names()])
    shifts = np.linalg.norm(refined.positions(tomograms) - truth.positions(tomograms)[order], axis=1) * px
    return PoseErrors(angles=np.asarray(angles), shifts=shifts)
