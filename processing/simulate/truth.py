"""Compare refined poses and maps with a known truth (simulated data): angular error up to the
symmetry mates, shift error, and the FSC against the true map."""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from processing.geometry.projection import particle_rotations
from processing.geometry.symmetry import angular_distance
from processing.io.particles import ParticleSet
from processing.io.tomograms import TomogramSet

__all__ = ["PoseErrors", "pose_errors"]


@dataclass
class PoseErrors:
    """Per-particle angular errors (deg, nearest symmetry mate) and shift errors (Å), and the
    names of the particles they belong to (the refined set's order, planted decoys left out)."""

    angles: NDArray[np.float64]
    shifts: NDArray[np.float64]
    names: tuple[str, ...] = ()

    @property
    def median_angle(self) -> float:
        return float(np.median(self.angles))

    @property
    def median_shift(self) -> float:
        return float(np.median(self.shifts))


def pose_errors(
    refined_star: str | os.PathLike, truth_star: str | os.PathLike, tomograms_star: str | os.PathLike,
    *, symmetry: str = "C1", gauge_deg: float = 0.0, exclude: Iterable[str] | None = None,
) -> PoseErrors:
    """Errors of refined particle poses against the true ones, matched by particle name.

    Both sets are compared in the tomogram: the shift error is the distance between the two
    particle centres (origins applied), the angular error the smallest rotation between the
    particle-to-tomogram rotations ``A_sub A_part`` over the symmetry mates. ``gauge_deg``
    (from :func:`gauge_rotation`) first turns the refined frame about the symmetry axis.

    Picks on empty membrane have no complex whose pose could be found: the names in ``exclude``
    are left out, by default the planted decoys of the simulated dataset that holds
    ``truth_star`` (none if there is no ``simulation.json`` beside it).
    """
    tomograms = TomogramSet.read(tomograms_star)
    refined = ParticleSet.read(refined_star, tomograms)
    truth = ParticleSet.read(truth_star, tomograms)
    if exclude is None:
        exclude = _decoys_beside(truth_star)
    skip = {str(n) for n in exclude}
    lookup = {str(n): i for i, n in enumerate(truth.particle_names())}
    names = [str(n) for n in refined.particle_names()]
    rows = np.array([i for i, n in enumerate(names) if n not in skip], dtype=np.int64)
    try:
        order = np.array([lookup[names[i]] for i in rows], dtype=np.int64)
    except KeyError as exc:
        raise ValueError(f"particle {exc} of {refined_star} is not in {truth_star}") from None
    r_est = particle_rotations(refined.angles(), refined.subtomogram_angles())[rows]
    if gauge_deg:
        from processing.geometry.euler import rotation_z

        # The truth map rotated by the gauge angle about z matches the refined map; express
        # the refined poses in the truth's frame.
        r_est = r_est @ rotation_z(gauge_deg)
    r_true = particle_rotations(truth.angles(), truth.subtomogram_angles())[order]
    angles = angular_distance(r_est, r_true, symmetry, metric="geodesic")
    px = np.array([tomograms[str(t)].pixel_size for t in refined.tomo_names()])[rows]
    shifts = np.linalg.norm(refined.positions(tomograms)[rows] - truth.positions(tomograms)[order], axis=1) * px
    return PoseErrors(angles=np.asarray(angles), shifts=shifts, names=tuple(names[i] for i in rows))


def _decoys_beside(truth_star: str | os.PathLike) -> set[str]:
    """Planted decoys of the simulated dataset holding ``truth_star`` (empty if it is none)."""
    from ..errors import InputError
    from .dataset import planted_decoys

    folder = Path(truth_star).parent
    if not (folder / "simulation.json").is_file():
        return set()
    try:
        return planted_decoys(folder)
    except InputError:  # not a simulated dataset after all: nothing to leave out
        return set()


def rotate_about_z(volume: NDArray, angle_deg: float) -> NDArray[np.float64]:
    """The map rotated by ``angle_deg`` about its z axis (through the centre voxel N//2)."""
    from scipy.ndimage import affine_transform

    from processing.geometry.euler import rotation_z

    n = volume.shape[0]
    centre = np.full(3, n // 2, dtype=np.float64)
    # Arrays are [z, y, x]: rotate the (x, y) plane; affine_transform maps output -> input.
    r = rotation_z(-angle_deg)[:2, :2]
    matrix = np.eye(3)
    matrix[1:, 1:] = r[::-1, ::-1]
    offset = centre - matrix @ centre
    return affine_transform(np.asarray(volume, dtype=np.float64), matrix, offset=offset, order=3, mode="constant")


def gauge_rotation(refined_map: NDArray, truth_map: NDArray, *, period: float = 360.0) -> float:
    """The rotation about the symmetry axis (deg) that best superposes the truth on the refined map.

    A refinement started from a reference blurred about its symmetry axis can only keep the
    map's in-plane orientation as well as that reference defined it: the likelihood is the same
    for every common rotation of all particles and the map about the axis. Comparing poses with
    the truth therefore first fixes this one global angle, from the maps alone (not from the
    poses being evaluated).
    """
    def score(angle: float) -> float:
        rotated = rotate_about_z(truth_map, angle)
        return float(np.corrcoef(rotated.ravel(), np.asarray(refined_map, dtype=np.float64).ravel())[0, 1])

    coarse = np.arange(-period / 2, period / 2, 1.0)
    best = coarse[int(np.argmax([score(a) for a in coarse]))]
    fine = np.arange(best - 1.0, best + 1.0001, 0.1)
    return float(fine[int(np.argmax([score(a) for a in fine]))])
