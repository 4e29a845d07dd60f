"""Simulate a complete RELION 5 tomography dataset and write it to a directory.

Layout of ``outdir`` (paths inside STAR files are relative to ``outdir`` unless
``absolute_paths``)::

    tomograms.star                      data_global, one row per tilt series
    tilt_series/<TS>.star               data_<TS>, one row per tilt image (acquisition order)
    tilt_series/<TS>/<TS>_<NNN>_<angle>.mrc   tilt images (float32, 2D, pixel size in header)
    particles.star                      data_optics + data_particles, initial (perturbed) poses
    particles_true.star                 same columns, true poses
                                        (with planted duplicates: one row per pick, in the same
                                        order; a second pick has its particle's true pose;
                                        a planted decoy has its pick's true membrane pose)
    optimisation_set.star               rlnTomoParticlesFile, rlnTomoTomogramsFile
    truth_map.mrc                       the phantom at the ts pixel size, centre at N//2
    simulation.json                     parameters, seed, derived values, per-tilt SNR
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..fourier.ctf import CtfParameters, dose_weight, fourier_frequency_grid
from ..geometry.projection import tilt_projection_matrices, tomogram_centre
from .acquisition import TiltSeriesGeometry, acquire
from .params import SimulationParameters
from .phantom import Phantom, phantom_from_model, procedural_phantom, render_map
from .specimen import (
    ParticlePoses,
    PlantedDuplicates,
    choose_decoy_sites,
    membrane_patch,
    perturb_poses,
    place_spheres,
    plant_duplicates,
    required_separation,
    sphere_particle_poses,
    sphere_reach,
)
from .tiltseries import (
    add_patches,
    apply_ctf,
    auto_patch_size,
    masked_signal_variance,
    particle_ctfs,
    project_particles,
)
from .writer import write_json, write_mrc, write_star

__all__ = [
    "SimulatedTomogram",
    "SimulationResult",
    "build_phantom",
    "load_parameters",
    "planted_decoys",
    "planted_duplicates",
    "render_truth",
    "simulate_dataset",
    "truth_box_size",
]


@dataclass
class SimulatedTomogram:
    """What was simulated for one tilt series (positions in ts-px, angles in degrees)."""

    name: str
    geometry: TiltSeriesGeometry
    projections: NDArray[np.float64]  # (n_tilts, 4, 4)
    sphere_centres: NDArray[np.float64]  # (s, 3) ts-px
    sphere_radii: NDArray[np.float64]  # (s,) ts-px
    true_poses: ParticlePoses
    initial_poses: ParticlePoses
    noise_sigma: float  # image units; 0 without noise
    tilt_snr: NDArray[np.float64]  # (n_tilts,) measured mean particle SNR per tilt (nan: no noise)
    image_files: list[str] = field(default_factory=list)
    duplicates: PlantedDuplicates | None = None  # second picks (params.duplicate_fraction > 0)
    decoys: NDArray[np.bool_] | None = None  # (sites,) empty-membrane sites (params.decoy_fraction > 0)

    @property
    def n_particles(self) -> int:
        """Complexes placed in this tomogram (lattice sites that are not decoys)."""
        return len(self.true_poses) - (0 if self.decoys is None else int(self.decoys.sum()))

    @property
    def n_picks(self) -> int:
        """Rows of this tomogram in particles.star: particles plus planted second picks."""
        return len(self.true_poses) + (0 if self.duplicates is None else len(self.duplicates.duplicate_of))

    def planted_duplicates(self) -> dict[str, str]:
        """``rlnTomoParticleName`` of each planted second pick -> that of its particle's first pick."""
        if self.duplicates is None:
            return {}
        n = len(self.true_poses)
        row_of = np.empty(len(self.duplicates.order), dtype=np.int64)
        row_of[self.duplicates.order] = np.arange(len(self.duplicates.order))
        return {f"{self.name}/{row_of[n + k] + 1}": f"{self.name}/{row_of[first] + 1}"
                for k, first in enumerate(self.duplicates.duplicate_of.tolist())}

    def planted_decoys(self) -> list[str]:
        """``rlnTomoParticleName`` of every pick on empty membrane (a decoy site, or a planted
        second pick of one), in file order."""
        if self.decoys is None:
            return []
        n = len(self.true_poses)
        if self.duplicates is None:
            return [f"{self.name}/{k + 1}" for k in np.flatnonzero(self.decoys).tolist()]
        site = np.concatenate([np.arange(n), self.duplicates.duplicate_of])[self.duplicates.order]
        return [f"{self.name}/{row + 1}" for row in np.flatnonzero(self.decoys[site]).tolist()]


@dataclass
class SimulationResult:
    """Summary of a simulation: where things are and what they contain."""

    outdir: Path
    params: SimulationParameters
    phantom: Phantom
    tomograms: list[SimulatedTomogram]
    patch_size: int
    mask_radius_angst: float
    files: dict[str, Path]
    seconds: float

    @property
    def n_particles(self) -> int:
        """Complexes placed (decoys are picks, not particles)."""
        return sum(t.n_particles for t in self.tomograms)

    @property
    def n_tilt_images(self) -> int:
        return sum(len(t.geometry) for t in self.tomograms)


def build_phantom(params: SimulationParameters) -> Phantom:
    """The particle of the dataset: a PDB/mmCIF model if given, else the procedural phantom."""
    sigma_min = params.blob_sigma_min_px * params.pixel_size
    if params.pdb:
        return phantom_from_model(
            params.pdb,
            symmetry=params.symmetry,
            is_asymmetric_unit=params.pdb_is_asymmetric_unit,
            grain=params.pdb_grain_angst,
            sigma_min=sigma_min,
        )
    return procedural_phantom(
        params.symmetry, diameter=params.phantom_diameter_angst, sigma_min=sigma_min, seed=params.phantom_seed
    )


def load_parameters(dataset_dir: str | Path) -> SimulationParameters:
    """The parameters a dataset was simulated with (from its ``simulation.json``)."""
    import json

    from ..errors import InputError

    path = Path(dataset_dir) / "simulation.json"
    try:
        raw = json.loads(path.read_text())["parameters"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"not a simulated dataset: {exc}", file=path) from exc
    fields = SimulationParameters.__dataclass_fields__
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in fields}
    return SimulationParameters(**values)


def planted_duplicates(dataset_dir: str | Path) -> dict[str, str]:
    """The second picks planted in a simulated dataset (``duplicate_fraction`` > 0), from its
    ``simulation.json``: ``rlnTomoParticleName`` of each second pick -> that of the first pick of
    the same particle; empty when none were planted."""
    import json

    from ..errors import InputError

    path = Path(dataset_dir) / "simulation.json"
    try:
        tomograms = json.loads(path.read_text())["tomograms"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"not a simulated dataset: {exc}", file=path) from exc
    return {second: first for t in tomograms for second, first in t.get("planted_duplicates", {}).items()}


def planted_decoys(dataset_dir: str | Path) -> set[str]:
    """The picks on empty membrane planted in a simulated dataset (``decoy_fraction`` > 0), from
    its ``simulation.json``: their ``rlnTomoParticleName``; empty when none were planted."""
    import json

    from ..errors import InputError

    path = Path(dataset_dir) / "simulation.json"
    try:
        tomograms = json.loads(path.read_text())["tomograms"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"not a simulated dataset: {exc}", file=path) from exc
    return {name for t in tomograms for name in t.get("planted_decoys", [])}


def render_truth(dataset_dir: str | Path, box: int, pixel_size: float) -> NDArray[np.float32]:
    """The true map of a simulated dataset at any box / pixel size (Å), centre at voxel box//2.

    Band-limited to the grid's Nyquist when the pixel is coarser than the blobs (see
    :func:`~processing.simulate.phantom.render_map`), so it compares directly with binned
    reconstructions.
    """
    return render_map(build_phantom(load_parameters(dataset_dir)), box, pixel_size)


def truth_box_size(phantom: Phantom, pixel_size: float) -> int:
    """Automatic box (voxels) for the truth map: 1.2 × the particle's diameter, multiple of 16."""
    return int(math.ceil(1.2 * 2.0 * phantom.radius / pixel_size / 16.0) * 16)


def _tomo_name(index: int) -> str:
    return f"TS_{index + 1:02d}"


def simulate_dataset(
    params: SimulationParameters,
    outdir: str | Path,
    *,
    log: Callable[[str], None] | None = None,
) -> SimulationResult:
    """Generate the dataset described by ``params`` in ``outdir`` (created if needed).

    Deterministic: the same parameters give byte-identical STAR/JSON files and identical MRC
    data. Independent random streams (spawned from ``params.seed``) drive the acquisition,
    the spheres, the pose errors and the noise of every tomogram.
    """
    start = time.perf_counter()
    say = log or (lambda _msg: None)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    px = params.pixel_size
    phantom = build_phantom(params)
    max_defocus = params.defocus_range[1] + params.astigmatism_range[1] + px * max(params.tomogram_size)
    patch = params.patch_size or auto_patch_size(
        phantom, px, max_defocus=max_defocus, voltage=params.voltage, cs=params.cs, ctf=params.ctf
    )
    mask_radius = params.mask_radius_angst or phantom.radius
    ctf_params = dict(voltage=params.voltage, cs=params.cs, amplitude_contrast=params.amplitude_contrast)
    centre = tomogram_centre(params.tomogram_size)
    root = np.random.SeedSequence(params.seed)
    tomograms: list[SimulatedTomogram] = []
    for t, tomo_seed in enumerate(root.spawn(params.n_tomograms)):
        name = _tomo_name(t)
        acq_ss, sphere_ss, pose_ss, noise_ss = tomo_seed.spawn(4)
        z_rot = params.z_rot + params.z_rot_spread * (t - (params.n_tomograms - 1) / 2.0)
        geometry = acquire(
            tilt_min=params.tilt_min,
            tilt_max=params.tilt_max,
            tilt_step=params.tilt_step,
            dose_per_tilt=params.dose_per_tilt,
            z_rot=round(z_rot, 4),
            shift_sigma=params.shift_sigma_angst,
            defocus_range=params.defocus_range,
            astigmatism_range=params.astigmatism_range,
            defocus_tilt_sigma=params.defocus_tilt_sigma,
            rng=np.random.default_rng(acq_ss),
        )
        projections = tilt_projection_matrices(
            geometry.x_tilt, geometry.y_tilt, geometry.z_rot, geometry.x_shift, geometry.y_shift,
            tomogram_size=params.tomogram_size, image_size=params.image_size, pixel_size=px,
        )
        sphere_rng = np.random.default_rng(sphere_ss)
        radii_angst = params.sphere_radius_angst + sphere_rng.uniform(
            -params.sphere_radius_jitter_angst, params.sphere_radius_jitter_angst, params.spheres_per_tomogram
        )
        separations = np.array([required_separation(phantom, r, params.particle_gap_angst) for r in radii_angst])
        centres = place_spheres(
            params.spheres_per_tomogram, radii_angst / px,
            sphere_reach(phantom, float(radii_angst.max())) / px,
            params.tomogram_size, params.image_size, sphere_rng,
        )
        true_poses = sphere_particle_poses(
            centres, radii_angst / px, separations, sphere_rng, max_per_sphere=params.max_particles_per_sphere,
            lattice=params.sphere_lattice,
        )
        initial = perturb_poses(
            true_poses, np.random.default_rng(pose_ss),
            rot_error=params.rot_error_deg, tilt_error=params.tilt_error_deg,
            psi_error=params.psi_error_deg, position_error_px=params.position_error_angst / px,
        )
        duplicates = None
        if params.duplicate_fraction > 0:
            # A fifth stream of this tomogram: the four above draw exactly what they drew before.
            duplicates = plant_duplicates(
                true_poses, np.random.default_rng(tomo_seed.spawn(1)[0]),
                fraction=params.duplicate_fraction,
                distance_px=(params.duplicate_distance_angst[0] / px, params.duplicate_distance_angst[1] / px),
                rot_error=params.rot_error_deg, tilt_error=params.tilt_error_deg, psi_error=params.psi_error_deg,
            )
        decoys = None
        if params.decoy_fraction > 0:
            # Child 5 of this tomogram's seed, named explicitly: independent of the duplicates.
            decoy_ss = np.random.SeedSequence(tomo_seed.entropy, spawn_key=tuple(tomo_seed.spawn_key) + (5,))
            decoys = choose_decoy_sites(len(true_poses), np.random.default_rng(decoy_ss), fraction=params.decoy_fraction)
        # Render from the values exactly as written to the STAR files (6 decimals).
        written = _as_written(true_poses, params.tomogram_size, px)
        rotations = written.rotations()
        placed = slice(None) if decoys is None else ~decoys
        membranes = [] if decoys is None else _membrane_groups(
            phantom, decoys, written, rotations, radii_angst, separations, params
        )
        tomo = SimulatedTomogram(
            name=name, geometry=geometry, projections=projections, sphere_centres=centres,
            sphere_radii=radii_angst / px, true_poses=true_poses, initial_poses=initial,
            noise_sigma=0.0, tilt_snr=np.full(len(geometry), np.nan), duplicates=duplicates, decoys=decoys,
        )
        noise_seeds = noise_ss.spawn(len(geometry))
        signal_var = np.zeros(len(geometry))
        width, height = params.image_size
        clean: list[NDArray[np.float32]] = []
        for f in range(len(geometry)):
            image = np.zeros((height, width), dtype=np.float32)
            ctf = dose = None
            if params.ctf or params.dose_weighting:
                ctf = CtfParameters(
                    defocus_u=float(geometry.defocus_u[f]), defocus_v=float(geometry.defocus_v[f]),
                    defocus_angle=float(geometry.defocus_angle[f]), **ctf_params,
                )
                dose = float(geometry.pre_exposure[f]) if params.dose_weighting else None
            for membrane, m_rotations, m_positions, m_patch in membranes:
                m_render = project_particles(
                    membrane, m_rotations, m_positions, projections[f],
                    pixel_size=px, patch_size=m_patch, tomogram_centre=centre,
                )
                add_patches(image, _image_formation(m_render, ctf, dose, params, m_patch), m_render.origins)
            render = project_particles(
                phantom, rotations[placed], written.positions[placed], projections[f],
                pixel_size=px, patch_size=patch, tomogram_centre=centre,
            )
            patches = _image_formation(render, ctf, dose, params, patch)
            add_patches(image, patches, render.origins)
            inside = _inside(render.centres, mask_radius / px, width, height)
            if np.any(inside):
                variances = masked_signal_variance(
                    patches[inside], render.centres[inside], render.origins[inside], mask_radius / px
                )
                signal_var[f] = float(np.mean(variances))
            clean.append(image)
        if params.snr is not None:
            # the noisiest-looking tilt (most signal) gets exactly the requested SNR
            peak = float(signal_var.max())
            tomo.noise_sigma = math.sqrt(peak / params.snr) if peak > 0 else 1.0
            tomo.tilt_snr = signal_var / tomo.noise_sigma**2
        for f, image in enumerate(clean):
            if params.snr is not None:
                noise = np.random.default_rng(noise_seeds[f]).standard_normal((height, width), dtype=np.float32)
                image += np.float32(tomo.noise_sigma) * noise
            rel = _image_path(name, f, float(geometry.nominal_tilt[f]))
            write_mrc(outdir / rel, image, px)
            tomo.image_files.append(rel)
        del clean
        say(
            f"{name}: {tomo.n_particles} particles on {params.spheres_per_tomogram} sphere(s), "
            + (f"{len(tomo.planted_decoys())} decoys, " if decoys is not None else "")
            + f"{len(geometry)} tilts, {width}x{height} px"
            + (f", SNR per tilt {tomo.tilt_snr.min():.4f}..{tomo.tilt_snr.max():.4f}" if params.snr else "")
        )
        tomograms.append(tomo)
    files = _write_metadata(params, outdir, tomograms)
    box = params.truth_box or truth_box_size(phantom, px)
    write_mrc(outdir / "truth_map.mrc", render_map(phantom, box, px), px)
    files["truth_map"] = outdir / "truth_map.mrc"
    seconds = time.perf_counter() - start
    result = SimulationResult(outdir, params, phantom, tomograms, patch, mask_radius, files, seconds)
    write_json(outdir / "simulation.json", _summary(result, box))
    files["simulation"] = outdir / "simulation.json"
    return result


def _image_formation(
    render: Any, ctf: CtfParameters | None, dose: float | None, params: SimulationParameters, patch: int
) -> NDArray[np.float32]:
    """The rendered windows after the CTF at each window's depth and the dose envelope."""
    if not (params.ctf or params.dose_weighting):
        return render.patches
    px = params.pixel_size
    if params.ctf:
        assert ctf is not None
        transfer = -particle_ctfs(ctf, render.depths, patch_size=patch, pixel_size=px, hand=params.hand, dose=dose)
    else:
        kx, ky = fourier_frequency_grid(patch, px)
        transfer = np.broadcast_to(
            dose_weight(np.hypot(kx, ky), dose).astype(np.float32), (len(render.patches),) + kx.shape
        )
    return apply_ctf(render.patches, transfer)


def _membrane_groups(
    phantom: Phantom, decoys: NDArray[np.bool_], written: ParticlePoses, rotations: NDArray[np.float64],
    radii_angst: NDArray[np.float64], separations: NDArray[np.float64], params: SimulationParameters,
) -> list[tuple[Phantom, NDArray[np.float64], NDArray[np.float64], int]]:
    """Per sphere with decoy sites: its membrane patch (covering a site's share of the sphere,
    half the lattice separation), the sites' rotations and positions, and the window size."""
    px = params.pixel_size
    sigma = max(params.blob_sigma_min_px * px, float(np.median(phantom.sigmas)))
    max_defocus = params.defocus_range[1] + params.astigmatism_range[1] + px * max(params.tomogram_size)
    groups = []
    for s in np.unique(written.sphere_index[decoys]).tolist():
        sites = decoys & (written.sphere_index == s)
        membrane = membrane_patch(phantom, float(radii_angst[s]), 0.5 * float(separations[s]), sigma=sigma)
        window = params.patch_size or auto_patch_size(
            membrane, px, max_defocus=max_defocus, voltage=params.voltage, cs=params.cs, ctf=params.ctf
        )
        groups.append((membrane, rotations[sites], written.positions[sites], window))
    return groups


def _inside(centres: NDArray[np.float64], radius: float, width: int, height: int) -> NDArray[np.bool_]:
    return (
        (centres[:, 0] > radius) & (centres[:, 0] < width - radius)
        & (centres[:, 1] > radius) & (centres[:, 1] < height - radius)
    )


def _image_path(name: str, index: int, angle: float) -> str:
    return f"tilt_series/{name}/{name}_{index:03d}_{angle:.1f}.mrc"


def _centred(poses: ParticlePoses, size: tuple[int, int, int], px: float) -> NDArray[np.float64]:
    return np.round((poses.positions - tomogram_centre(size)) * px, 6)


def _as_written(poses: ParticlePoses, size: tuple[int, int, int], px: float) -> ParticlePoses:
    """The poses after a round trip through 6-decimal STAR values."""
    positions = _centred(poses, size, px) / px + tomogram_centre(size)
    return ParticlePoses(
        positions, np.round(poses.subtomogram_angles, 6), np.round(poses.angles, 6),
        poses.sphere_index, poses.normals,
    )


def _path(outdir: Path, rel: str, absolute: bool) -> str:
    return str((outdir / rel).resolve()) if absolute else rel


def _particle_table(tomograms: list[SimulatedTomogram], which: str, params: SimulationParameters) -> dict[str, list[Any]]:
    cols: dict[str, list[Any]] = {k: [] for k in (
        "rlnTomoName", "rlnTomoParticleName", "rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst",
        "rlnCenteredCoordinateZAngst", "rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi",
        "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnAngleTiltPrior", "rlnAnglePsiPrior",
        "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst", "rlnOpticsGroup",
    )}
    for tomo in tomograms:
        poses = tomo.true_poses if which == "true" else tomo.initial_poses
        if tomo.duplicates is not None:
            poses = _with_second_picks(poses, tomo, true=which == "true")
        centred = _centred(poses, params.tomogram_size, params.pixel_size)
        n = len(poses)
        cols["rlnTomoName"] += [tomo.name] * n
        cols["rlnTomoParticleName"] += [f"{tomo.name}/{k + 1}" for k in range(n)]
        for d, axis in enumerate("XYZ"):
            cols[f"rlnCenteredCoordinate{axis}Angst"] += list(centred[:, d])
            cols[f"rlnOrigin{axis}Angst"] += [0.0] * n
        for d, label in enumerate(("Rot", "Tilt", "Psi")):
            cols[f"rlnTomoSubtomogram{label}"] += list(poses.subtomogram_angles[:, d])
            cols[f"rlnAngle{label}"] += list(poses.angles[:, d])
        cols["rlnAngleTiltPrior"] += [90.0] * n
        cols["rlnAnglePsiPrior"] += [0.0] * n
        cols["rlnOpticsGroup"] += [1] * n
    return cols


def _with_second_picks(poses: ParticlePoses, tomo: SimulatedTomogram, *, true: bool) -> ParticlePoses:
    """``poses`` (one per particle) with the planted second picks added, in file order; a
    second pick's true pose is its particle's."""
    dup = tomo.duplicates
    assert dup is not None
    extra = tomo.true_poses if true else dup.poses
    pick = (lambda a, b: np.concatenate([a, b[dup.duplicate_of] if true else b])[dup.order])
    return ParticlePoses(
        pick(poses.positions, extra.positions), pick(poses.subtomogram_angles, extra.subtomogram_angles),
        pick(poses.angles, extra.angles), pick(poses.sphere_index, extra.sphere_index),
        pick(poses.normals, extra.normals),
    )


def _write_metadata(params: SimulationParameters, outdir: Path, tomograms: list[SimulatedTomogram]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    absolute = params.absolute_paths
    global_rows: dict[str, list[Any]] = {k: [] for k in (
        "rlnTomoName", "rlnTomoTiltSeriesStarFile", "rlnVoltage", "rlnSphericalAberration",
        "rlnAmplitudeContrast", "rlnMicrographOriginalPixelSize", "rlnTomoHand", "rlnTomoTiltSeriesPixelSize",
        "rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ", "rlnTomoTomogramBinning",
    )}
    for tomo in tomograms:
        g = tomo.geometry
        rel = f"tilt_series/{tomo.name}.star"
        table = {
            "rlnMicrographName": [_path(outdir, p, absolute) for p in tomo.image_files],
            "rlnMicrographPreExposure": list(g.pre_exposure),
            "rlnDefocusU": list(g.defocus_u),
            "rlnDefocusV": list(g.defocus_v),
            "rlnDefocusAngle": list(g.defocus_angle),
            "rlnCtfScalefactor": [1.0] * len(g),
            "rlnTomoNominalStageTiltAngle": list(g.nominal_tilt),
            "rlnTomoNominalTiltAxisAngle": list(g.z_rot),
            "rlnTomoXTilt": list(g.x_tilt),
            "rlnTomoYTilt": list(g.y_tilt),
            "rlnTomoZRot": list(g.z_rot),
            "rlnTomoXShiftAngst": list(g.x_shift),
            "rlnTomoYShiftAngst": list(g.y_shift),
        }
        write_star(outdir / rel, {tomo.name: table}, loops=(tomo.name,))
        files[f"tilt_series_{tomo.name}"] = outdir / rel
        for key, value in (
            ("rlnTomoName", tomo.name), ("rlnTomoTiltSeriesStarFile", _path(outdir, rel, absolute)),
            ("rlnVoltage", float(params.voltage)), ("rlnSphericalAberration", float(params.cs)),
            ("rlnAmplitudeContrast", float(params.amplitude_contrast)),
            ("rlnMicrographOriginalPixelSize", float(params.original_pixel_size)),
            ("rlnTomoHand", float(params.hand)), ("rlnTomoTiltSeriesPixelSize", float(params.pixel_size)),
            ("rlnTomoSizeX", int(params.tomogram_size[0])), ("rlnTomoSizeY", int(params.tomogram_size[1])),
            ("rlnTomoSizeZ", int(params.tomogram_size[2])), ("rlnTomoTomogramBinning", float(params.tomogram_binning)),
        ):
            global_rows[key].append(value)
    write_star(outdir / "tomograms.star", {"global": global_rows}, loops=("global",))
    files["tomograms"] = outdir / "tomograms.star"
    optics = {
        "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"], "rlnVoltage": [float(params.voltage)],
        "rlnSphericalAberration": [float(params.cs)], "rlnAmplitudeContrast": [float(params.amplitude_contrast)],
        "rlnTomoTiltSeriesPixelSize": [float(params.pixel_size)],
    }
    for key, which in (("particles", "initial"), ("particles_true", "true")):
        write_star(
            outdir / f"{key}.star",
            {"optics": optics, "particles": _particle_table(tomograms, which, params)},
            loops=("optics", "particles"),
        )
        files[key] = outdir / f"{key}.star"
    write_star(
        outdir / "optimisation_set.star",
        {"optimisation_set": {
            "rlnTomoParticlesFile": _path(outdir, "particles.star", absolute),
            "rlnTomoTomogramsFile": _path(outdir, "tomograms.star", absolute),
        }},
    )
    files["optimisation_set"] = outdir / "optimisation_set.star"
    return files


def _summary(result: SimulationResult, box: int) -> dict[str, Any]:
    params = result.params
    return {
        "generator": "tomodash simulate",
        "parameters": params.to_dict(),
        "seed": params.seed,
        "phantom": {
            "n_blobs": result.phantom.n_blobs,
            "symmetry": result.phantom.symmetry,
            "radius_angst": round(result.phantom.radius, 3),
            "sigma_min_angst": round(float(result.phantom.sigmas.min()), 4),
        },
        "truth_map": {"file": "truth_map.mrc", "box": box, "pixel_size": params.pixel_size, "centre_voxel": box // 2},
        "patch_size_px": result.patch_size,
        "snr_definition": (
            "per tilt: mean over particles (centre inside the image) of the variance of the particle's "
            "noise-free image signal (after CTF and dose weighting) within a circle of radius "
            "mask_radius_angst around its projected centre, divided by the noise variance; one noise "
            "variance per tilt series, set so that its highest per-tilt SNR equals the requested snr"
        ),
        "mask_radius_angst": round(result.mask_radius_angst, 3),
        "contrast": "tilt image = -(CTF * projection) + noise: protein dark; RELION extraction (x -CTF) gives CTF^2 * projection",
        "n_particles": result.n_particles,
        "tomograms": [
            {
                "name": t.name,
                "n_particles": t.n_particles,
                "n_tilts": len(t.geometry),
                "sphere_centres_px": np.round(t.sphere_centres, 4).tolist(),
                "sphere_radii_px": np.round(t.sphere_radii, 4).tolist(),
                "noise_sigma": round(t.noise_sigma, 8),
                "tilt_snr": [None if not np.isfinite(v) else round(float(v), 6) for v in t.tilt_snr],
                **({"n_picks": t.n_picks, "planted_duplicates": t.planted_duplicates()}
                   if t.duplicates is not None else {}),
                **({"n_picks": t.n_picks, "planted_decoys": t.planted_decoys()} if t.decoys is not None else {}),
            }
            for t in result.tomograms
        ],
        "files": sorted(str(p.relative_to(result.outdir)) for p in result.files.values() if p.exists()),
    }
