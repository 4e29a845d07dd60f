"""Removal of duplicated particles, as ``relion_star_handler --remove_duplicates`` does it for
tomography (``removeDuplicatedParticles``, src/metadata_table.cpp of RELION 5).

RELION's rule, restated:

* particles are compared only within one tomogram (``rlnTomoName``);
* a particle's position is ``rlnCenteredCoordinate{X,Y,Z}Angst - rlnOrigin{X,Y,Z}Angst`` in Å.
  RELION subtracts the origin as it is, without turning it by the subtomogram orientation
  (``rlnTomoSubtomogram*``), although the origin lives in the subtomogram frame; it is right
  for particles whose subtomogram frame is the tomogram's, and for origins that extraction
  has folded into the coordinates (zero);
* the distance threshold is in Å, the pixel size plays no part (``--image_angpix`` only
  matters for single-particle micrographs);
* going through each tomogram's particles in file order, a particle is removed when any
  *later* particle of the same tomogram lies within the threshold (distance <= threshold):
  of a close pair the later one is kept. Along a chain a-b-c with a-b and b-c within the
  threshold but a-c not, a and b are removed and only c stays.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from processing.errors import InputError
from processing.io.particles import ParticleSet

from .subset import subset

__all__ = ["DuplicateRemoval", "duplicate_positions", "find_duplicates", "remove_duplicates"]

CENTRED = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst")


@dataclass(frozen=True)
class DuplicateRemoval:
    """Which particles a duplicate removal keeps.

    Attributes
    ----------
    keep : (n,) bool, True for the particles kept.
    partner : (n,) int, for each removed particle the row index (0-based, file order) of the
        first later particle of its tomogram within the threshold; -1 for kept particles.
    min_distance_angst : the threshold (Å).
    """

    keep: NDArray[np.bool_]
    partner: NDArray[np.int64]
    min_distance_angst: float

    @property
    def n_removed(self) -> int:
        return int(np.count_nonzero(~self.keep))


def duplicate_positions(particles: ParticleSet) -> NDArray[np.float64]:
    """Positions RELION compares, ``centred coordinate - origin`` (origin not rotated), (n, 3) Å.

    Raises
    ------
    InputError
        When the centred coordinates are missing (only RELION-4 ``rlnCoordinateX/Y/Z``: read
        the set with its tomogram set to convert them) or hold a value that is not a number.
    """
    return particles.centred_coordinates() - particles.origins()


def find_duplicates(tomo_names: NDArray[np.object_], positions_angst: NDArray[np.float64], *,
                    min_distance_angst: float) -> DuplicateRemoval:
    """Apply RELION's keep rule (module docstring) to particles at ``positions_angst``.

    Parameters
    ----------
    tomo_names
        (n,) tomogram name of each particle (the grouping).
    positions_angst
        (n, 3) positions in Å, in file order.
    min_distance_angst
        Particles this close or closer (Å) are duplicates; must be > 0.

    Returns
    -------
    DuplicateRemoval
    """
    if not min_distance_angst > 0:
        raise ValueError(f"min_distance_angst must be > 0 (got {min_distance_angst!r})")
    names = np.asarray(tomo_names, dtype=object)
    pos = np.asarray(positions_angst, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or len(names) != len(pos):
        raise ValueError(f"expected (n,) names and (n, 3) positions, got {names.shape} and {pos.shape}")
    n = len(pos)
    partner = np.full(n, -1, dtype=np.int64)
    threshold_sq = float(min_distance_angst) ** 2
    for name in dict.fromkeys(names.tolist()):
        rows = np.flatnonzero(names == name)          # global indices, ascending = file order
        if len(rows) < 2:
            continue
        tree = cKDTree(pos[rows])
        # Candidates from a slightly larger ball, then RELION's exact test dx²+dy²+dz² <= t².
        pairs = tree.query_pairs(float(min_distance_angst) * (1.0 + 1e-9) + 1e-12, output_type="ndarray")
        if len(pairs) == 0:
            continue
        first, second = rows[pairs.min(axis=1)], rows[pairs.max(axis=1)]
        d = pos[first] - pos[second]
        close = (d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2]) <= threshold_sq
        first, second = first[close], second[close]
        # The earlier particle of each close pair goes; its partner is its first later neighbour.
        order = np.lexsort((second, first))
        first, second = first[order], second[order]
        lead = np.ones(len(first), dtype=bool)
        lead[1:] = first[1:] != first[:-1]
        partner[first[lead]] = second[lead]
    return DuplicateRemoval(keep=partner < 0, partner=partner, min_distance_angst=float(min_distance_angst))


def remove_duplicates(particles: ParticleSet, *, min_distance_angst: float
                      ) -> tuple[ParticleSet, ParticleSet, DuplicateRemoval]:
    """The particles kept and those removed as duplicates (RELION's rule, module docstring).

    Parameters
    ----------
    particles
        A tomography particle set with centred coordinates (Å).
    min_distance_angst
        Minimum inter-particle distance (Å), > 0.

    Returns
    -------
    kept, removed : ParticleSet
        Both with every column and block of the input, rows in file order.
    removal : DuplicateRemoval

    Raises
    ------
    InputError
        Missing ``rlnTomoName`` or centred coordinates, non-numeric values, or a threshold <= 0
        (column ``duplicate_threshold``).
    """
    if not min_distance_angst > 0:
        raise InputError(f"the minimum inter-particle distance must be > 0 Å (got {min_distance_angst:g})",
                         column="duplicate_threshold")
    removal = find_duplicates(particles.tomo_names(), duplicate_positions(particles),
                              min_distance_angst=min_distance_angst)
    return subset(particles, removal.keep), subset(particles, ~removal.keep), removal
