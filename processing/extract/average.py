"""Average EXTRACTED particles in 3D (both layouts of Extract subtomos).

Reconstruct particle (:mod:`processing.reconstruct`) reads the tilt series; this module reads
what extraction wrote, so it checks the extraction itself, and it is what refinement tests
need to build references from a particle set:

* 2D stacks (``rlnTomoSubTomosAre2DStacks = 1``): every slice of ``<k>_stack2d.mrcs`` is the
  ``k``-th visible tilt (``rlnTomoVisibleFrames``), CTF-premultiplied. It is inserted as a
  central slice with rotation ``P_f[:3,:3] · A_sub · A_part`` (spec 2.2) and weight CTF²
  recomputed from the tomogram set at the particle's depth (dose weight included), as
  relion_refine does (spec 5.2).
* 3D pseudo-subtomograms: ``<k>_data.mrc`` is inserted as a 3D transform with rotation
  ``A_part`` and weight the CTF² half of ``<k>_weights.mrc`` (spec 3.6, 5.15).

Origins (``rlnOriginX/Y/ZAngst``, subtomogram frame) shift each particle onto the box centre
before insertion: the 2D shift of slice ``f`` is rows 0, 1 of ``P_f · A_sub · origin``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from processing.errors import InputError
from processing.fourier.backprojector import BackProjector
from processing.fourier.fft import half_frequencies, rfft2_centered, rfft3_centered
from processing.geometry.euler import euler_to_matrix, matrix_to_euler
from processing.geometry.symmetry import symmetry_operators
from processing.io.mrc import read_mrc
from processing.io.particles import ParticleSet
from processing.io.paths import resolve_path
from processing.io.tomograms import TomogramSet

from .geometry import tomogram_particles
from .patches import ctf_dose_weights

__all__ = ["AverageResult", "average_extracted", "transfer_poses", "MULTIPLICITY_THRESHOLD"]

#: 3D layout: Fourier voxels with multiplicity below this are ignored (relion_refine's
#: ``--subtomo_multi_thr``).
MULTIPLICITY_THRESHOLD = 0.01


@dataclass
class AverageResult:
    """Maps (crop³ float64, origin at ``crop//2``) and bookkeeping.

    ``half1``/``half2`` are None unless every particle has ``rlnRandomSubset`` 1 or 2.
    """

    merged: NDArray[np.float64]
    half1: NDArray[np.float64] | None
    half2: NDArray[np.float64] | None
    pixel_size: float
    n_particles: int
    n_images: int


def _shift_phase(freqs: tuple[NDArray, ...], shift: NDArray, size: int) -> NDArray[np.complex128]:
    """``exp(-2πi k·s/N)``: moves content by ``+s`` pixels (``freqs`` in (z,) y, x order)."""
    arg = sum(k * s for k, s in zip(freqs, shift[::-1]))
    return np.exp(-2j * np.pi * arg / size)


def average_extracted(
    particles_star: str | os.PathLike,
    tomograms_star: str | os.PathLike,
    symmetry: str = "C1",
    *,
    apply_origins: bool = True,
    padding_factor: float | None = None,
    root: str | os.PathLike | None = None,
) -> AverageResult:
    """Reconstruct half and merged maps from extracted particles at their current poses.

    Parameters
    ----------
    particles_star
        particles.star written by Extract subtomos (``rlnImageName`` per particle), poses as
        they are now (e.g. refined, or the truth for a test).
    tomograms_star
        The tomogram set the particles were extracted from.
    symmetry
        Point group applied to the sums (RELION name).
    apply_origins
        Shift each particle by its ``rlnOrigin*Angst`` before insertion.
    padding_factor
        Fourier padding of the accumulators; default 2 for 2D stacks and 1 for 3D volumes
        (an unpadded 3D transform inserted into a padded grid only reaches every second
        voxel along each axis: without many distinct orientations most of the grid stays
        empty and the map loses amplitude).
    root
        Project directory for relative paths (default: working directory, then the STAR
        file's directory and its parents).

    Returns
    -------
    AverageResult
        Maps at the extraction's ``rlnImagePixelSize``, box ``rlnImageSize``, on the grey
        scale of the particle images divided by CTF² (unregularised; heuristic floor of
        1/1000 of the shell mean weight).

    Raises
    ------
    InputError
        Not an extracted particle set, or a missing/odd image file.
    """
    tomograms = TomogramSet.read(tomograms_star, root=root)
    particles = ParticleSet.read(particles_star, tomograms)
    names = particles.image_names()
    if names is None:
        raise InputError("no rlnImageName column: not an extracted particle set", file=particles_star,
                         table="particles", column="rlnImageName")
    stacks = particles.are_2d_stacks
    if stacks is None:
        stacks = bool(particles.optics_column("rlnImageDimensionality", default=2)[0] == 2)
    crop = int(particles.optics_column("rlnImageSize")[0])
    binning = float(particles.optics_column("rlnTomoSubtomogramBinning", default=1.0)[0])
    pixel = float(particles.optics_column("rlnImagePixelSize")[0])
    premultiplied = particles.optics_column("rlnCtfDataAreCtfPremultiplied", default=1.0)
    group_index = particles.optics_groups() - 1
    subsets = particles.random_subset()
    split = subsets is not None and bool(np.isin(subsets, (1, 2)).all())
    halves = subsets - 1 if split else np.zeros(len(particles), dtype=np.int64)
    if padding_factor is None:
        padding_factor = 2.0 if stacks else 1.0
    accumulators = [BackProjector(crop, padding_factor=padding_factor) for _ in range(2 if split else 1)]
    a_part = euler_to_matrix(*particles.angles().T)
    sub_angles = particles.subtomogram_angles()
    a_sub = np.broadcast_to(np.eye(3), a_part.shape) if sub_angles is None else euler_to_matrix(*sub_angles.T)
    origins_px = particles.origins() / pixel if apply_origins else np.zeros((len(particles), 3))
    visible = particles.visible_frames() if stacks else None
    if stacks and visible is None:
        raise InputError("2D stacks need rlnTomoVisibleFrames", file=particles_star, table="particles",
                         column="rlnTomoVisibleFrames")
    positions = particles.positions(tomograms, apply_origins=apply_origins)
    freqs2 = half_frequencies(crop, ndim=2)
    freqs3 = half_frequencies(crop, ndim=3)
    n_images = 0
    for tomo_name in sorted(set(particles.tomo_names().tolist())):
        geo = tomogram_particles(particles, tomograms, tomo_name, positions=positions)
        tomo = geo.tomogram
        tilts = tomo.tilts
        for local, row in enumerate(geo.rows):
            path = resolve_path(str(names[row]), root=root, referrer=particles_star)
            data = read_mrc(path).data
            acc = accumulators[halves[row]]
            if stacks:
                frames = np.flatnonzero(np.asarray(visible[row]) > 0)
                if data.ndim == 2:
                    data = data[None]
                if data.shape != (len(frames), crop, crop):
                    raise InputError(f"expected {len(frames)} images of {crop}x{crop} px, found {data.shape}",
                                     file=path)
                rot3 = geo.projections[frames, :3, :3] @ a_sub[row]
                spectra = rfft2_centered(data.astype(np.float64))
                shifts = (rot3 @ origins_px[row])[:, :2]
                for k in range(len(frames)):
                    if np.any(shifts[k]):
                        spectra[k] *= _shift_phase(freqs2, shifts[k], crop)
                if premultiplied[group_index[row]] > 0:
                    weights = np.stack([
                        ctf_dose_weights(
                            geo.tilt_ctf(f), geo.defocus_offsets[local, f:f + 1],
                            dose=float(tilts.pre_exposure[f]), bfactor_per_dose=tomo.bfactor_per_electron_dose,
                            box=crop, pixel_size=binning * tomo.pixel_size,
                        )[0] ** 2
                        for f in frames
                    ])
                else:
                    weights = np.ones(spectra.shape)
                acc.insert_slices(spectra, rot3 @ a_part[row], weights=weights)
                n_images += len(frames)
            else:
                weight_path = resolve_path(str(particles.particles["rlnCtfImage"].iloc[row]), root=root,
                                           referrer=particles_star)
                w = read_mrc(weight_path).data.astype(np.float64)
                if data.shape != (crop, crop, crop) or w.shape != (2 * crop, crop, crop // 2 + 1):
                    raise InputError(f"unexpected pseudo-subtomogram shapes {data.shape} / {w.shape}", file=path)
                spectrum = rfft3_centered(data.astype(np.float64))
                if np.any(origins_px[row]):
                    spectrum *= _shift_phase(freqs3, origins_px[row], crop)
                ctf2, multiplicity = w[:crop], w[crop:]
                keep = multiplicity >= MULTIPLICITY_THRESHOLD
                acc.insert_volumes(np.where(keep, spectrum, 0.0), a_part[row], weights=np.where(keep, ctf2, 0.0))
                n_images += 1
    operators = symmetry_operators(symmetry)
    for acc in accumulators:
        acc.symmetrise(operators)
    maps = [acc.reconstruct() for acc in accumulators]
    if split:
        merged_acc = BackProjector(crop, padding_factor=padding_factor)
        merged_acc.add(accumulators[0])
        merged_acc.add(accumulators[1])
        merged_acc._hermitian_done = True
        merged = merged_acc.reconstruct()
        return AverageResult(merged, maps[0], maps[1], pixel, len(particles), n_images)
    return AverageResult(maps[0], None, None, pixel, len(particles), n_images)


def transfer_poses(
    extracted_star: str | os.PathLike,
    reference_star: str | os.PathLike,
    tomograms_star: str | os.PathLike,
    output_star: str | os.PathLike,
) -> int:
    """Give extracted particles the poses of the same particles in another set.

    Extraction re-centres every particle (spec 3.2); a pose from elsewhere (the simulator's
    truth, another refinement) must then be expressed relative to the extraction centre
    ``p_e`` and subtomogram frame ``A_sub``: ``A_part = A_subᵀ · R_ref`` and
    ``origin = A_subᵀ · (p_e − p_ref) · tsPixel`` (Å), so that ``p_e − A_sub·origin = p_ref``.
    Particles are matched by ``rlnTomoParticleName``.

    Returns
    -------
    int
        The number of particles written to ``output_star``.

    Raises
    ------
    InputError
        A particle of the extracted set is missing from the reference set.
    """
    tomograms = TomogramSet.read(tomograms_star)
    extracted = ParticleSet.read(extracted_star, tomograms)
    reference = ParticleSet.read(reference_star, tomograms)
    lookup = {str(n): i for i, n in enumerate(reference.particle_names())}
    names = [str(n) for n in extracted.particle_names()]
    missing = [n for n in names if n not in lookup]
    if missing:
        raise InputError(f"{len(missing)} particles (e.g. {missing[0]!r}) are not in the reference set",
                         file=reference_star, table="particles", column="rlnTomoParticleName")
    rows = np.array([lookup[n] for n in names], dtype=np.int64)
    p_ref = reference.positions(tomograms, apply_origins=True)[rows]
    ref_sub = reference.subtomogram_angles()
    r_ref = euler_to_matrix(*reference.angles()[rows].T)
    if ref_sub is not None:
        r_ref = euler_to_matrix(*ref_sub[rows].T) @ r_ref
    p_ext = extracted.positions(tomograms, apply_origins=True)
    sub = extracted.subtomogram_angles()
    a_sub = np.broadcast_to(np.eye(3), r_ref.shape) if sub is None else euler_to_matrix(*sub.T)
    a_sub_t = np.swapaxes(a_sub, 1, 2)
    rot, tilt, psi = matrix_to_euler(a_sub_t @ r_ref)
    px = np.array([tomograms[str(t)].pixel_size for t in extracted.tomo_names()])
    origins = np.einsum("nij,nj->ni", a_sub_t, p_ext - p_ref) * px[:, None]
    table = extracted.particles
    for label, values in (("rlnAngleRot", rot), ("rlnAngleTilt", tilt), ("rlnAnglePsi", psi)):
        table[label] = np.asarray(values, dtype=np.float64)
    for a, axis in enumerate("XYZ"):
        table[f"rlnOrigin{axis}Angst"] = origins[:, a]
    extracted.write(output_star)
    return len(extracted)
