"""Where each particle is in every tilt image of its tilt series (spec 2.2, 2.3, 3.2)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from processing.fourier.ctf import CtfParameters
from processing.geometry.euler import euler_to_matrix
from processing.io.particles import ParticleSet
from processing.io.tomograms import Tomogram, TomogramSet

from .trajectories import trajectory_shifts

__all__ = ["TomogramParticles", "tomogram_particles", "usable_frames"]


@dataclass
class TomogramParticles:
    """The particles of one tomogram and their projections in its tilt images.

    Attributes
    ----------
    tomogram
        The tilt series.
    rows
        (n,) indices of these particles in the particle set.
    names
        ``rlnTomoParticleName`` of each.
    positions
        (n, 3) decentred positions (ts-px), origins applied as requested.
    projected
        (n, t, 2) projected centres (x, y) in tilt-image pixels, trajectories included.
    defocus_offsets
        (n, t) depth-dependent defocus change (Å), spec 2.6.
    projections
        (t, 4, 4) projection matrices of the tilt series.
    image_size
        Tilt-image (width, height) in pixels.
    subtomogram_matrices
        (n, 3, 3) ``A_sub`` of each particle (identity without rlnTomoSubtomogram angles).
    """

    tomogram: Tomogram
    rows: NDArray[np.int64]
    names: list[str]
    positions: NDArray[np.float64]
    projected: NDArray[np.float64]
    defocus_offsets: NDArray[np.float64]
    projections: NDArray[np.float64]
    image_size: tuple[int, int]
    subtomogram_matrices: NDArray[np.float64]

    @property
    def n_tilts(self) -> int:
        return self.projections.shape[0]

    def tilt_ctf(self, tilt: int) -> CtfParameters:
        """CTF parameters of tilt ``tilt`` at the tomogram centre."""
        tilts = self.tomogram.tilts
        t = self.tomogram
        return CtfParameters(
            defocus_u=float(tilts.defocus_u[tilt]),
            defocus_v=float(tilts.defocus_v[tilt]),
            defocus_angle=float(tilts.defocus_angle[tilt]),
            voltage=t.voltage, cs=t.cs, amplitude_contrast=t.amplitude_contrast,
            phase_shift=float(tilts.phase_shift[tilt]),
            bfactor=float(tilts.ctf_bfactor[tilt]),
            scale=float(tilts.ctf_scale[tilt]),
        )


def tomogram_particles(
    particles: ParticleSet,
    tomograms: TomogramSet,
    tomo_name: str,
    *,
    apply_origins: bool = True,
    trajectories: dict[str, NDArray[np.float64]] | None = None,
    trajectories_file: str | None = None,
    positions: NDArray[np.float64] | None = None,
) -> TomogramParticles:
    """Project the particles of tomogram ``tomo_name`` into all its tilt images.

    ``positions`` (all particles, (N, 3) ts-px) may be given to avoid recomputing them.
    """
    tomogram = tomograms[tomo_name]
    rows = np.flatnonzero(particles.tomo_names() == tomo_name)
    if positions is None:
        positions = particles.positions(tomograms, apply_origins=apply_origins)
    pos = positions[rows]
    names = [str(n) for n in particles.particle_names()[rows]]
    projections = tomogram.projection_matrices()
    image_size = tomogram.resolved_image_size()
    if image_size is None:
        raise ValueError(f"tomogram {tomo_name!r}: tilt-image size unknown")
    n_frames = projections.shape[0]
    frame_pos = pos[:, None, :] + trajectory_shifts(
        trajectories, names, n_frames, tomogram.pixel_size, source=trajectories_file
    )
    projected = np.einsum("tij,ntj->nti", projections[:, :2, :3], frame_pos) + projections[None, :, :2, 3]
    offsets = tomogram.hand * tomogram.pixel_size * tomogram.defocus_slope * tomogram.depth_offsets(pos)
    sub = particles.subtomogram_angles()
    sub_matrices = np.broadcast_to(np.eye(3), (len(rows), 3, 3)).copy() if sub is None else \
        euler_to_matrix(sub[rows, 0], sub[rows, 1], sub[rows, 2])
    return TomogramParticles(
        tomogram=tomogram, rows=rows, names=names, positions=pos, projected=projected,
        defocus_offsets=offsets, projections=projections, image_size=image_size,
        subtomogram_matrices=sub_matrices,
    )


def usable_frames(
    geo: TomogramParticles, *, radius: float, max_dose: float = -1.0
) -> NDArray[np.bool_]:
    """(n, t) frames where the projected centre lies more than ``radius`` px inside the
    image (strict) and, when ``max_dose > 0``, the pre-exposure is at most ``max_dose``."""
    width, height = geo.image_size
    x, y = geo.projected[..., 0], geo.projected[..., 1]
    inside = (x > radius) & (x < width - radius) & (y > radius) & (y < height - radius)
    if max_dose > 0:
        inside &= (geo.tomogram.tilts.pre_exposure <= max_dose)[None, :]
    return inside
