"""Reconstruct particle: RELION 5's ``relion_tomo_reconstruct_particle`` (spec 4), value for value.

Tilt-image slices (spec 3.3, with the circle pre-crop; unitary transform) are premultiplied by
-CTF·dose, cut at the dose cut-off, and backprojected with CTF² weights into one Fourier sum per
half set on the binned box itself (no padding): every voxel within one voxel of a slice's plane
takes the slice's bilinear value times ``1 - distance``. Each half's sums are averaged over the
point group; a map is the sinc²-gridding-corrected inverse transform divided by the CTF² sum
(floored at 0.001 of its radial average, or ``+ 1/SNR``), centre-cropped and tapered. The merged
map comes from the sums of the symmetrised halves. Parallel over tomograms with MPI (sums
reduced onto the leader) and over particles with threads. Agreement with RELION's own maps:
tests/test_reconstruct_relion.py.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from numpy.typing import NDArray

from processing import backend
from processing.errors import InputError
from processing.extract.extract import TiltImages
from processing.extract.geometry import tomogram_particles, usable_frames
from processing.extract.patches import premultiplied_patches, tilt_dose_weights, window_size
from processing.extract.pseudo3d import DOSE_CUTOFF, dose_x_ranges
from processing.extract.trajectories import read_trajectories
from processing.fourier.fsc import fsc as fsc_curve
from processing.fourier.fsc import resolution_from_fsc
from processing.geometry.projection import particle_rotations
from processing.geometry.symmetry import symmetry_operators
from processing.io.mrc import write_mrc
from processing.io.particles import ParticleSet
from processing.io.star import write_star
from processing.io.tomograms import TomogramSet
from processing.abort import check_abort
from processing.parallel import Communicator, thread_map

from ._array_backproject import backproject_slices_array
from ._backproject import backproject_slices, symmetrise_fourier
from ._finalise import finish_map

__all__ = ["ReconstructionSettings", "ReconstructionResult", "reconstruct_particles", "write_fsc_star"]

PARTICLES_PER_TASK = 16


@dataclass(frozen=True)
class ReconstructionSettings:
    """binning; box and crop in binned px; symmetry name; snr (<= 0: heuristic division);
    taper width (px); threads; the GPU, if any."""

    binning: float = 1.0
    box: int = 128
    crop: int = 128
    symmetry: str = "C1"
    snr: float = 0.0
    taper: float = 10.0
    apply_ctf: bool = True
    threads: int = 1
    #: CUDA device of this process's backprojection (None: the CPU's numba kernel); a
    #: tomodash extension (``--gpu``): relion_tomo_reconstruct_particle has no GPU code.
    device: int | None = None
    #: Backproject with the GPU's array-module code even without a GPU (numpy): for tests.
    array_kernels: bool = False

    def __post_init__(self) -> None:
        if self.box % 2:
            raise InputError(f"box ({self.box}) must be even", column="box_size")
        if self.crop > self.box:
            raise InputError(f"cropped box {self.crop} is larger than the box {self.box}", column="crop_size")


@dataclass
class ReconstructionResult:
    half1: Path | None
    half2: Path | None
    merged: Path
    fsc_file: Path | None
    resolution_0143: float | None
    n_particles: int
    n_slices: int
    seconds: float


def _dose_x_ranges(tomogram, box: int, pixel_size: float) -> NDArray[np.int64]:
    """(t, box) per tilt and FFTW row: one past the last ``x`` kept by the dose cut-off
    (weight > 1 %, inside the box's circle), as in relion_tomo_subtomo."""
    return dose_x_ranges(tilt_dose_weights(tomogram, box=box, pixel_size=pixel_size), cutoff=DOSE_CUTOFF)


def _insert_group(
    geo, members, usable, images, halves, part_rot, x_ranges, settings: ReconstructionSettings,
    sb: int, n_halves: int, job_dir,
) -> tuple[int, NDArray[np.complex128], NDArray[np.float64]]:
    """Backproject the visible tilt images of particles ``members`` into fresh half sums (with
    ``settings.device``, the windows' transforms, CTFs and sums on that GPU, which the thread
    enters)."""
    check_abort(job_dir)
    if settings.threads > 1:
        # Threads come from thread_map: keep numba's kernels single-threaded in this worker.
        numba.set_num_threads(1)
    with backend.use_device(settings.device):
        return _insert_tilts(geo, members, usable, images, halves, part_rot, x_ranges, settings, sb, n_halves)


def _array_module(settings: ReconstructionSettings):
    """cupy when this process backprojects on a GPU, numpy otherwise."""
    return np if settings.device is None else backend.device_module()


def _insert_tilts(
    geo, members, usable, images, halves, part_rot, x_ranges, settings: ReconstructionSettings, sb: int, n_halves: int,
) -> tuple[int, NDArray[np.complex128], NDArray[np.float64]]:
    xp = _array_module(settings)
    array = settings.array_kernels or settings.device is not None
    insert = backproject_slices_array if array else backproject_slices
    tomogram = geo.tomogram
    tilts = tomogram.tilts
    count = 0
    data = xp.zeros((n_halves, sb, sb, sb // 2 + 1), dtype=np.complex128)
    ctf2 = xp.zeros(data.shape)
    for tilt in range(usable.shape[1]):
        local = np.flatnonzero(usable[members, tilt])
        if local.size == 0:
            continue
        idx = members[local]
        spectra, weight = premultiplied_patches(
            images[tilt], geo.projected[idx, tilt], geo.defocus_offsets[idx, tilt], geo.tilt_ctf(tilt),
            dose=float(tilts.pre_exposure[tilt]), bfactor_per_dose=tomogram.bfactor_per_electron_dose,
            binning=settings.binning, box=sb, pixel_size=tomogram.pixel_size, apply_ctf=settings.apply_ctf,
            invert_contrast=True, precrop=True, xp=xp,
        )
        # This program's window transform is unitary (1/s0), the extraction's divides by s0².
        spectra = spectra * window_size(settings.binning, sb)[0]
        if settings.apply_ctf:
            # Slice pixels past the dose cut-off carry neither data nor weight.
            keep = xp.asarray(np.arange(sb // 2 + 1)[None, :] < x_ranges[tilt][:, None])
            spectra = xp.where(keep, spectra, 0.0)
            weight = xp.where(keep, weight, 0.0)
        rotations = geo.projections[tilt, :3, :3][None] @ part_rot[idx]
        max_freqs = np.full(len(idx), x_ranges[tilt, 0], dtype=np.int64)
        insert(spectra, weight, rotations, max_freqs, halves[idx], data, ctf2)
        count += local.size
    return count, data, ctf2


def reconstruct_particles(
    *,
    particles_file: str | os.PathLike,
    tomograms_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    settings: ReconstructionSettings,
    trajectories_file: str | os.PathLike | None = None,
    comm: Communicator | None = None,
    job_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    log=print,
) -> ReconstructionResult | None:
    """Reconstruct half1, half2 and merged maps; the leader writes them and the FSC."""
    started = time.perf_counter()
    comm = comm or Communicator(None)
    output_dir = Path(output_dir)
    root_path = None if root is None else Path(root)
    tomograms = TomogramSet.read(tomograms_file, root=root_path)
    particles = ParticleSet.read(particles_file, tomograms)
    trajectories = read_trajectories(trajectories_file) if trajectories_file else None
    operators = symmetry_operators(settings.symmetry)
    subsets = particles.random_subset()
    split = subsets is not None and np.isin(subsets, (1, 2)).all()
    halves = (subsets - 1) if split else np.zeros(len(particles), dtype=np.int64)
    n_halves = 2 if split else 1
    part_rot = particle_rotations(particles.angles(), particles.subtomogram_angles())
    positions = particles.positions(tomograms, apply_origins=True)
    _, sb = window_size(settings.binning, settings.box)
    names = sorted(set(particles.tomo_names().tolist()), key=tomograms.names.index)
    if comm.is_leader:
        output_dir.mkdir(parents=True, exist_ok=True)
        if not split:
            log("WARNING: no rlnRandomSubset 1/2 on every particle: everything goes into one map "
                "(merged only, no FSC)")
        log(f"Reconstructing {len(particles)} particles from {len(names)} tilt series (bin "
            f"{settings.binning:g}, box {settings.box}, crop {settings.crop}, {settings.symmetry}) on "
            f"{comm.size} process(es) x {settings.threads} thread(s)")
    # One Fourier sum per half set on the binned box itself (RELION pads nothing here), in the
    # GPU's memory when it backprojects (the groups' sums are added there).
    xp = _array_module(settings)
    with backend.use_device(settings.device):
        data = xp.zeros((n_halves, sb, sb, sb // 2 + 1), dtype=np.complex128)
        ctf2 = xp.zeros(data.shape)
    n_slices = 0
    for name in names[comm.rank::comm.size]:
        geo = tomogram_particles(particles, tomograms, name, trajectories=trajectories,
                                 trajectories_file=None if trajectories_file is None else str(trajectories_file),
                                 positions=positions)
        usable = usable_frames(geo, radius=settings.box / 2.0)
        x_ranges = _dose_x_ranges(geo.tomogram, sb, settings.binning * geo.tomogram.pixel_size)
        geo_halves = halves[geo.rows]
        geo_rot = part_rot[geo.rows]
        members_all = np.arange(len(geo.rows))
        groups = [members_all[k:k + PARTICLES_PER_TASK] for k in range(0, len(members_all), PARTICLES_PER_TASK)]
        images = TiltImages(geo, root_path)
        # Each group's half sums are a whole (halves, sb, sb, sb/2+1) complex128 + float64 pair
        # (~400 MB at box 256): sum them as each batch of `threads` groups ends, so that no more
        # than `threads` exist at once (collecting every group's first grew with the particles).
        # Summed in group order, as before: the same bytes.
        per_batch = max(1, settings.threads)
        try:
            for start in range(0, len(groups), per_batch):
                for count, part_data, part_ctf2 in thread_map(
                    lambda g: _insert_group(geo, g, usable, images, geo_halves, geo_rot, x_ranges, settings, sb,
                                            n_halves, None if job_dir is None else Path(job_dir)),
                    groups[start:start + per_batch], threads=settings.threads,
                ):
                    n_slices += count
                    with backend.use_device(settings.device):
                        data += part_data
                        ctf2 += part_ctf2
        finally:
            images.close()
        log(f"  [rank {comm.rank}] {name}: {len(geo.rows)} particles inserted")
    data = comm.allreduce_sum(backend.to_host(data))
    ctf2 = comm.allreduce_sum(backend.to_host(ctf2))
    n_slices = sum(comm.gather(n_slices) or [n_slices]) if comm.size > 1 else n_slices
    if not comm.is_leader:
        return None
    pixel = settings.binning * tomograms[names[0]].pixel_size
    # Symmetrise each half, then the merged map from the sum of the symmetrised halves.
    sums = [(symmetrise_fourier(data[h], operators), symmetrise_fourier(ctf2[h], operators))
            for h in range(n_halves)]
    if split:
        sources = {"half1": sums[0], "half2": sums[1], "merged": (sums[0][0] + sums[1][0], sums[0][1] + sums[1][1])}
    else:
        sources = {"merged": sums[0]}
    maps: dict[str, NDArray] = {}
    for tag, (tag_data, tag_ctf2) in sources.items():
        maps[tag] = finish_map(tag_data, tag_ctf2, box=sb, crop=settings.crop, snr=settings.snr,
                               taper_width=settings.taper)
        write_mrc(output_dir / f"{tag}.mrc", maps[tag].astype(np.float32), pixel)
    fsc_file = None
    resolution = None
    if split:
        fsc = fsc_curve(maps["half1"], maps["half2"])
        fsc_file = output_dir / "fsc.star"
        write_fsc_star(fsc_file, fsc, pixel_size=pixel, box=settings.crop)
        resolution = resolution_from_fsc(fsc, box_size=settings.crop, pixel_size=pixel)
        log(f"Half-map FSC: resolution at 0.143 = {resolution:.2f} Å (unmasked)")
    return ReconstructionResult(
        half1=output_dir / "half1.mrc" if split else None,
        half2=output_dir / "half2.mrc" if split else None,
        merged=output_dir / "merged.mrc",
        fsc_file=fsc_file,
        resolution_0143=resolution,
        n_particles=len(particles),
        n_slices=n_slices,
        seconds=time.perf_counter() - started,
    )


def write_fsc_star(path: Path, fsc: NDArray[np.float64], *, pixel_size: float, box: int) -> None:
    """The half-map FSC as a ``data_fsc`` table (RELION postprocess column names)."""
    import pandas as pd

    shells = np.arange(len(fsc))
    resolution = shells / (box * pixel_size)
    angstrom = np.where(shells > 0, box * pixel_size / np.maximum(shells, 1), 999.0)
    table = pd.DataFrame({
        "rlnSpectralIndex": shells,
        "rlnResolution": resolution,
        "rlnAngstromResolution": angstrom,
        "rlnFourierShellCorrelationUnmaskedMaps": fsc,
    })
    write_star(path, {"fsc": table})
