"""Extract subtomos: RELION 5's ``relion_tomo_subtomo`` (spec 3).

Parallel over tomograms with MPI (each rank takes every size-th tomogram) and over particles
with threads; restartable: particles whose output files exist are not computed again (outputs
are written atomically, so an existing file is a complete one).
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numba
import numpy as np
import pandas as pd
from numpy.typing import NDArray

from processing.errors import InputError
from processing.io.mrc import map_image, write_mrc
from processing.io.optimisation_set import OptimisationSet
from processing.io.particles import ParticleSet
from processing.io.paths import resolve_path
from processing.io.tomograms import TomogramSet
from processing.abort import check_abort
from processing.parallel import Communicator, thread_map

from .geometry import TomogramParticles, tomogram_particles, usable_frames
from .patches import finalise_2d, premultiplied_patches, tilt_dose_weights, window_size
from .pseudo3d import pseudo_subtomogram
from .trajectories import read_trajectories, write_trajectories

__all__ = ["ExtractionSettings", "ExtractionResult", "extract_subtomograms", "TiltImages"]

#: particles per thread task: enough to batch the FFTs, small enough to balance the threads.
PARTICLES_PER_TASK = 16


@dataclass(frozen=True)
class ExtractionSettings:
    """What to extract and how (RELION ``relion_tomo_subtomo`` options).

    binning: real binning factor; box: extraction box (binned px); crop: final box (binned
    px, <= box); max_dose: e/Å² (<= 0: all tilts); min_frames: minimum usable tilts;
    stack2d: 2D stacks (else 3D pseudo-subtomograms); float16: MRC mode 12 output.
    """

    binning: float = 1.0
    box: int = 128
    crop: int = 128
    max_dose: float = -1.0
    min_frames: int = 1
    stack2d: bool = True
    float16: bool = False
    apply_ctf: bool = True
    invert_contrast: bool = True
    circle_crop: bool = True
    apply_offsets: bool = True
    threads: int = 1
    only_unfinished: bool = False

    def __post_init__(self) -> None:
        if self.box % 2 or self.crop % 2:
            raise InputError(f"box ({self.box}) and cropped box ({self.crop}) must be even", column="box_size")
        if self.crop > self.box:
            raise InputError(f"cropped box {self.crop} is larger than the box {self.box}", column="crop_size")


@dataclass
class ExtractionResult:
    particles_file: Path
    optimisation_set_file: Path
    n_particles: int
    n_dropped: int
    n_computed: int
    n_skipped: int
    seconds: float
    tilts_extracted: int = 0
    per_rank: list[dict] = field(default_factory=list)


class TiltImages:
    """Memory-mapped tilt images of one tilt series, opened and checked on first use.

    Each image is checked when first opened: readable, of the tilt series' image size (the
    size its projection matrices were made for; a differently sized image would put the
    particles elsewhere and silently drop them) and free of NaN/Inf.
    """

    def __init__(self, geo: TomogramParticles, root: Path | None) -> None:
        tomogram = geo.tomogram
        tilts = tomogram.tilts
        self._paths = [
            resolve_path(name, root=root, referrer=tilts.file) for name in tilts.micrograph_names
        ]
        self._name = tomogram.name
        size = tomogram.resolved_image_size()
        self._shape = None if size is None else (int(size[1]), int(size[0]))
        self._open: dict[int, tuple[mrcfile.mrcfile.MrcFile, NDArray]] = {}
        self._lock = threading.Lock()

    def __getitem__(self, tilt: int) -> NDArray:
        with self._lock:  # threads of one tilt series share the maps; open (and check) once
            if tilt not in self._open:
                self._open[tilt] = map_image(
                    self._paths[tilt], shape=self._shape,
                    what=f"tilt {tilt + 1} of {self._name} (row {tilt + 1} of data_{self._name})")
            return self._open[tilt][1]

    def close(self) -> None:
        for handle, _ in self._open.values():
            handle.close()
        self._open.clear()


def output_stem(output_dir: Path, particle_name: str, tomo_name: str) -> Path:
    """``<o>Subtomograms/<name>`` (a per-tomogram folder when the name has no '/')."""
    if "/" not in particle_name:
        particle_name = f"{tomo_name}/{particle_name}"
    return output_dir / "Subtomograms" / particle_name


def _output_complete(path: Path, expected_shape: tuple[int, ...]) -> bool:
    if not path.exists():
        return False
    try:
        with mrcfile.open(path, mode="r", header_only=True, permissive=True) as handle:
            h = handle.header
            return (int(h.nz), int(h.ny), int(h.nx)) == expected_shape
    except (ValueError, OSError):
        return False


def _extract_particle_group(
    geo: TomogramParticles,
    members: NDArray[np.int64],
    usable: NDArray[np.bool_],
    images: TiltImages,
    settings: ExtractionSettings,
    output_dir: Path,
    job_dir: Path | None,
) -> int:
    """Compute and write the outputs of some particles of one tomogram; returns the count."""
    check_abort(job_dir)
    if settings.threads > 1:
        numba.set_num_threads(1)   # threads come from thread_map (no nested parallelism)
    tomogram = geo.tomogram
    tilts = tomogram.tilts
    _, sb = window_size(settings.binning, settings.box)
    half = sb // 2 + 1
    n_frames = usable.shape[1]
    spectra = np.zeros((len(members), n_frames, sb, half), dtype=np.complex128)
    weights = np.zeros((len(members), n_frames, sb, half))
    # The dose weight of each tilt selects the pixels a pseudo-subtomogram takes.
    dose_weights = None if settings.stack2d else tilt_dose_weights(
        tomogram, box=sb, pixel_size=settings.binning * tomogram.pixel_size)
    for tilt in range(n_frames):
        local = np.flatnonzero(usable[members, tilt])
        if local.size == 0:
            continue
        idx = members[local]
        data, weight = premultiplied_patches(
            images[tilt], geo.projected[idx, tilt], geo.defocus_offsets[idx, tilt], geo.tilt_ctf(tilt),
            dose=float(tilts.pre_exposure[tilt]), bfactor_per_dose=tomogram.bfactor_per_electron_dose,
            binning=settings.binning, box=sb, pixel_size=tomogram.pixel_size,
            apply_ctf=settings.apply_ctf, invert_contrast=settings.invert_contrast,
        )
        spectra[local, tilt] = data
        weights[local, tilt] = weight
    pixel = settings.binning * tomogram.pixel_size
    for k, i in enumerate(members):
        frames = np.flatnonzero(usable[i])
        stem = output_stem(output_dir, geo.names[i], tomogram.name)
        stem.parent.mkdir(parents=True, exist_ok=True)
        if settings.stack2d:
            stack = finalise_2d(spectra[k, frames], box=sb, crop=settings.crop, circle_crop=settings.circle_crop)
            write_mrc(Path(f"{stem}_stack2d.mrcs"), stack.astype(np.float32), pixel, float16=settings.float16)
        else:
            rotations = geo.projections[frames, :3, :3] @ geo.subtomogram_matrices[i]
            volume, ctf2_multi = pseudo_subtomogram(
                spectra[k, frames], weights[k, frames], dose_weights[frames], rotations,
                box=sb, crop=settings.crop, binning=settings.binning,
                circle_crop=settings.circle_crop,
            )
            write_mrc(Path(f"{stem}_data.mrc"), volume.astype(np.float32), pixel, float16=settings.float16)
            write_mrc(Path(f"{stem}_weights.mrc"), ctf2_multi.astype(np.float32), 1.0 / pixel,
                      float16=settings.float16)
    return len(members)


def _expected_outputs(stem: Path, settings: ExtractionSettings, n_frames: int) -> list[tuple[Path, tuple]]:
    c = settings.crop
    if settings.stack2d:
        return [(Path(f"{stem}_stack2d.mrcs"), (n_frames, c, c))]
    return [(Path(f"{stem}_data.mrc"), (c, c, c)), (Path(f"{stem}_weights.mrc"), (2 * c, c, c // 2 + 1))]


def _extract_tomogram(
    particles: ParticleSet,
    tomograms: TomogramSet,
    tomo_name: str,
    positions: NDArray,
    trajectories: dict | None,
    trajectories_file: str | None,
    settings: ExtractionSettings,
    output_dir: Path,
    root: Path | None,
    job_dir: Path | None,
) -> dict:
    geo = tomogram_particles(
        particles, tomograms, tomo_name, trajectories=trajectories,
        trajectories_file=trajectories_file, positions=positions,
    )
    usable = usable_frames(geo, radius=settings.binning * settings.crop / 2.0, max_dose=settings.max_dose)
    keep = usable.sum(axis=1) >= settings.min_frames
    todo = []
    skipped = 0
    for i in np.flatnonzero(keep):
        stem = output_stem(output_dir, geo.names[i], tomo_name)
        outputs = _expected_outputs(stem, settings, int(usable[i].sum()))
        if settings.only_unfinished and all(_output_complete(p, s) for p, s in outputs):
            skipped += 1
        else:
            todo.append(i)
    images = TiltImages(geo, root)
    try:
        groups = [np.asarray(todo[k:k + PARTICLES_PER_TASK]) for k in range(0, len(todo), PARTICLES_PER_TASK)]
        done = thread_map(
            lambda g: _extract_particle_group(geo, g, usable, images, settings, output_dir, job_dir),
            groups, threads=settings.threads,
        )
    finally:
        images.close()
    return {
        "tomogram": tomo_name,
        "rows": geo.rows,
        "keep": keep,
        "usable": usable,
        "positions": geo.positions,
        "computed": int(sum(done)),
        "skipped": skipped,
        "tilts": int(usable[keep].sum()),
    }


def extract_subtomograms(
    *,
    particles_file: str | os.PathLike,
    tomograms_file: str | os.PathLike,
    output_dir: str | os.PathLike,
    settings: ExtractionSettings,
    trajectories_file: str | os.PathLike | None = None,
    comm: Communicator | None = None,
    job_dir: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    log=print,
) -> ExtractionResult | None:
    """Extract all particles; the leader writes particles.star and optimisation_set.star.

    Returns the result on the leader (None on other MPI ranks).
    """
    start = time.perf_counter()
    comm = comm or Communicator(None)
    output_dir = Path(output_dir)
    root_path = None if root is None else Path(root)
    tomograms = TomogramSet.read(tomograms_file, root=root_path)
    particles = ParticleSet.read(particles_file, tomograms)
    trajectories = read_trajectories(trajectories_file) if trajectories_file else None
    positions = particles.positions(tomograms, apply_origins=settings.apply_offsets)
    names = sorted(set(particles.tomo_names().tolist()), key=tomograms.names.index)
    mine = names[comm.rank::comm.size]
    if comm.is_leader:
        output_dir.mkdir(parents=True, exist_ok=True)
        log(f"Extracting {len(particles)} particles from {len(names)} tilt series "
            f"(bin {settings.binning:g}, box {settings.box}, crop {settings.crop}, "
            f"{'2D stacks' if settings.stack2d else '3D pseudo-subtomograms'}) "
            f"on {comm.size} process(es) x {settings.threads} thread(s)")
    comm.barrier()
    results = []
    for name in mine:
        res = _extract_tomogram(
            particles, tomograms, name, positions, trajectories,
            None if trajectories_file is None else str(trajectories_file),
            settings, output_dir, root_path, None if job_dir is None else Path(job_dir),
        )
        log(f"  [rank {comm.rank}] {name}: {int(res['keep'].sum())} particles, "
            f"{res['computed']} written, {res['skipped']} already done")
        results.append(res)
    gathered = comm.gather(results)
    if not comm.is_leader:
        return None
    all_results = [r for part in gathered for r in part]
    out = _write_particle_set(particles, tomograms, all_results, settings, output_dir, trajectories)
    opt_in = OptimisationSet(
        particles=str(output_dir / "particles.star"), tomograms=str(tomograms_file),
        trajectories=None if not trajectories_file else str(out.get("motion", trajectories_file)),
    )
    opt_in.write(output_dir / "optimisation_set.star")
    kept = sum(int(r["keep"].sum()) for r in all_results)
    return ExtractionResult(
        particles_file=output_dir / "particles.star",
        optimisation_set_file=output_dir / "optimisation_set.star",
        n_particles=kept,
        n_dropped=len(particles) - kept,
        n_computed=sum(r["computed"] for r in all_results),
        n_skipped=sum(r["skipped"] for r in all_results),
        seconds=time.perf_counter() - start,
        tilts_extracted=sum(r["tilts"] for r in all_results),
    )


def _write_particle_set(
    particles: ParticleSet,
    tomograms: TomogramSet,
    results: list[dict],
    settings: ExtractionSettings,
    output_dir: Path,
    trajectories: dict | None,
) -> dict:
    """particles.star of the kept particles with RELION's extraction columns (spec 3.2)."""
    table = particles.particles.copy()
    keep = np.zeros(len(table), dtype=bool)
    visible: dict[int, str] = {}
    centred = particles.centred_coordinates().copy()
    names = particles.particle_names()
    image_names: dict[int, str] = {}
    ctf_names: dict[int, str] = {}
    for res in results:
        tomo = tomograms[res["tomogram"]]
        for local, row in enumerate(res["rows"]):
            if not res["keep"][local]:
                continue
            keep[row] = True
            if settings.apply_offsets:
                centred[row] = (res["positions"][local] - np.asarray(tomo.size) / 2.0) * tomo.pixel_size
            stem = output_stem(output_dir, str(names[row]), res["tomogram"])
            if settings.stack2d:
                image_names[row] = f"{stem}_stack2d.mrcs"
                visible[row] = "[" + ",".join(str(int(v)) for v in res["usable"][local]) + "]"
            else:
                image_names[row] = f"{stem}_data.mrc"
                ctf_names[row] = f"{stem}_weights.mrc"
    for a, label in enumerate(("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
                               "rlnCenteredCoordinateZAngst")):
        table[label] = centred[:, a]
    if settings.apply_offsets:
        for label in ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"):
            table[label] = 0.0
    table = table.drop(columns=[c for c in ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
                                if c in table.columns])
    # New columns in relion_tomo_subtomo's order (existing ones keep their place, as in RELION).
    if settings.stack2d:
        table["rlnTomoVisibleFrames"] = pd.Series(visible, dtype=object)
        table["rlnImageName"] = pd.Series(image_names, dtype=object)
        table = table.drop(columns=[c for c in ("rlnCtfImage",) if c in table.columns])
    else:
        table["rlnImageName"] = pd.Series(image_names, dtype=object)
        table["rlnCtfImage"] = pd.Series(ctf_names, dtype=object)
        table = table.drop(columns=[c for c in ("rlnTomoVisibleFrames",) if c in table.columns])
    table = table[keep].reset_index(drop=True)
    optics = particles.optics.copy()
    px = optics["rlnTomoTiltSeriesPixelSize"].astype(float)
    optics["rlnCtfDataAreCtfPremultiplied"] = int(settings.apply_ctf or not settings.stack2d)
    optics["rlnImageDimensionality"] = 2 if settings.stack2d else 3
    optics["rlnTomoSubtomogramBinning"] = float(settings.binning)
    optics["rlnImagePixelSize"] = px * settings.binning
    optics["rlnImageSize"] = int(settings.crop)
    general = dict(particles.general or {})
    general["rlnTomoSubTomosAre2DStacks"] = int(settings.stack2d)
    out_set = ParticleSet(table, optics, general, extra_blocks=particles.extra_blocks)
    out_set.write(output_dir / "particles.star")
    extra: dict = {}
    if trajectories is not None and not keep.all():
        kept_names = [str(n) for n in names[keep]]
        write_trajectories(output_dir / "motion.star", {n: trajectories[n] for n in kept_names})
        extra["motion"] = output_dir / "motion.star"
    return extra
