"""``tomodash simulate OUTDIR [--preset demo] [--seed N] [--snr X] [--pdb FILE] [--symmetry G] ...``"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .dataset import SimulationResult, simulate_dataset
from .params import SPHERE_LATTICES
from .presets import PRESETS, get_preset, with_particle_count

__all__ = ["add_parser", "run", "format_report"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``simulate`` subcommand (sets ``func``)."""
    parser = subparsers.add_parser(
        "simulate",
        help="write a synthetic RELION 5 tomography dataset (tilt series, tomograms.star, particles.star, truth)",
        description=(
            "Simulate tilt series of symmetric particles on vesicles, with RELION 5 metadata, "
            "perturbed initial poses (particles.star), the true poses (particles_true.star) and "
            "the true map (truth_map.mrc). Deterministic for a given seed."
        ),
    )
    parser.add_argument("outdir", type=Path, help="output directory (created)")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS), help="parameter set (default: demo)")
    parser.add_argument("--seed", type=int, help="random seed")
    parser.add_argument("--snr", type=float, help="highest per-tilt particle SNR of each tilt series (demo: 0.05)")
    parser.add_argument("--no-noise", action="store_true", help="noise-free images")
    parser.add_argument("--no-ctf", action="store_true", help="pure projections (no CTF)")
    parser.add_argument("--no-dose-weighting", action="store_true", help="no radiation-damage envelope")
    parser.add_argument("--pdb", type=Path, help="PDB/mmCIF model instead of the procedural phantom")
    parser.add_argument("--pdb-asu", action="store_true", help="the model is one asymmetric unit: replicate it by --symmetry")
    parser.add_argument("--symmetry", help="point group of the phantom (e.g. C6, D3)")
    parser.add_argument("--tomograms", type=int, dest="n_tomograms", help="number of tilt series")
    parser.add_argument("--spheres", type=int, dest="spheres_per_tomogram", help="vesicles per tomogram")
    parser.add_argument("--max-particles-per-sphere", type=int, help="cap on particles per vesicle")
    parser.add_argument("--sphere-lattice", choices=SPHERE_LATTICES,
                        help="particles on a vesicle: fibonacci (random in-plane angles) or geodesic (a hexagonal "
                             "net with 12 five-fold sites, in-plane angles locked to it, like a capsid lattice)")
    parser.add_argument("--particles", type=int, dest="n_particles",
                        help="about this many particles in all (at least this many, fewer than this plus one per "
                             "sphere): sets the spheres per tomogram and their cap, and adds tomograms of the same "
                             "density when the preset's cannot hold them (after the other options)")
    parser.add_argument("--pixel-size", type=float, help="tilt-series pixel size (Å)")
    parser.add_argument("--hand", type=int, choices=(1, -1), help="rlnTomoHand")
    parser.add_argument("--rot-error", type=float, dest="rot_error_deg", help="largest initial rot error (deg): normal with σ = half of it, clipped at ± it")
    parser.add_argument("--tilt-error", type=float, dest="tilt_error_deg", help="initial tilt error σ (deg)")
    parser.add_argument("--psi-error", type=float, dest="psi_error_deg", help="initial psi error σ (deg)")
    parser.add_argument("--position-error", type=float, dest="position_error_angst", help="initial position RMS error (Å)")
    parser.add_argument("--duplicates", type=float, dest="duplicate_fraction",
                        help="fraction of particles picked a second time, 3-20 Å from their true centre "
                             "(planted duplicates, listed in simulation.json; default 0)")
    parser.add_argument("--decoys", type=float, dest="decoy_fraction",
                        help="fraction of the lattice sites left as empty membrane and picked anyway (planted "
                             "decoys: bad particles, listed in simulation.json; default 0)")
    parser.add_argument("--absolute-paths", action="store_true", help="absolute paths inside the STAR files")
    parser.set_defaults(func=run)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for key in (
        "seed", "snr", "symmetry", "n_tomograms", "spheres_per_tomogram", "pixel_size", "hand",
        "rot_error_deg", "tilt_error_deg", "psi_error_deg", "position_error_angst", "duplicate_fraction",
        "decoy_fraction", "sphere_lattice",
    ):
        value = getattr(args, key, None)
        if value is not None:
            changes[key] = value
    if args.max_particles_per_sphere is not None:
        changes["max_particles_per_sphere"] = args.max_particles_per_sphere
    if args.pdb is not None:
        changes["pdb"] = str(args.pdb.resolve())
        changes["pdb_is_asymmetric_unit"] = bool(args.pdb_asu)
        changes.setdefault("symmetry", "C1")
    if args.no_noise:
        changes["snr"] = None
    if args.no_ctf:
        changes["ctf"] = False
    if args.no_dose_weighting:
        changes["dose_weighting"] = False
    if args.absolute_paths:
        changes["absolute_paths"] = True
    return changes


def format_report(result: SimulationResult) -> str:
    """Human-readable summary: what was written where, counts, sizes, SNR, seconds."""
    p = result.params
    lines = [
        f"Simulated dataset in {result.outdir} ({result.seconds:.1f} s)",
        f"  phantom: {result.phantom.symmetry}, {result.phantom.n_blobs} Gaussian blobs, "
        f"diameter ~{2 * result.phantom.radius:.0f} Å; truth_map.mrc at {p.pixel_size} Å/px",
        f"  {len(result.tomograms)} tilt series x {len(result.tomograms[0].geometry)} tilts "
        f"({p.tilt_min:g}..{p.tilt_max:g} step {p.tilt_step:g}, {p.dose_per_tilt:g} e/Å² per tilt), "
        f"images {p.image_size[0]}x{p.image_size[1]} px at {p.pixel_size} Å/px, tomograms "
        f"{'x'.join(map(str, p.tomogram_size))} ts-px, hand {p.hand:+d}",
        f"  {result.n_particles} particles; initial poses: rot σ {p.rot_error_deg / 2:g}° (≤ {p.rot_error_deg:g}°), tilt σ {p.tilt_error_deg:g}°, "
        f"psi σ {p.psi_error_deg:g}°, position RMS {p.position_error_angst:g} Å",
    ]
    for t in result.tomograms:
        snr = "no noise" if p.snr is None else (
            f"SNR per tilt: max {t.tilt_snr.max():.4f} (tilt {t.geometry.nominal_tilt[int(t.tilt_snr.argmax())]:g}°), "
            f"min {t.tilt_snr.min():.4f}, mean {t.tilt_snr.mean():.4f}; noise σ {t.noise_sigma:.4g}"
        )
        decoys = "" if t.decoys is None else f" + {len(t.planted_decoys())} decoy picks"
        lines.append(
            f"  {t.name}: {t.n_particles} particles{decoys}, ZRot {t.geometry.z_rot[0]:g}°, "
            f"defocus {t.geometry.defocus_u.mean():.0f}/{t.geometry.defocus_v.mean():.0f} Å, {snr}"
        )
    total_bytes = sum(f.stat().st_size for f in result.outdir.rglob("*") if f.is_file())
    lines.append("  files:")
    for key, path in result.files.items():
        lines.append(f"    {path.relative_to(result.outdir)}")
    lines.append(
        f"    tilt_series/<TS>/<TS>_<NNN>_<angle>.mrc: {result.n_tilt_images} images; "
        f"total {total_bytes / 1e6:.1f} MB"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``tomodash simulate``."""
    params = get_preset(args.preset).replace(**_overrides(args))
    if args.n_particles is not None:
        params = with_particle_count(params, args.n_particles)
    result = simulate_dataset(params, args.outdir, log=lambda msg: print(msg, flush=True))
    print(format_report(result))
    return 0
