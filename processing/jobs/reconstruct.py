"""Job entry point of Reconstruct particle (RELION ``relion_tomo_reconstruct_particle``).

::

    python -m processing.jobs.reconstruct --job-dir Reconstruct/job003
    mpiexec -n 2 python -m mpi4py -m processing.jobs.reconstruct --job-dir Reconstruct/job003
    tomodash reconstruct --i Extract/job002/optimisation_set.star --o Reconstruct/job003/ \\
        --b 64 --crop 48 --bin 3 --sym C6 --j 2

Writes half1.mrc, half2.mrc, merged.mrc, fsc.star and an optimisation_set.star (the input set
with the half maps as references, as the GUI's output node promises).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from processing.errors import InputError
from processing.geometry.symmetry import normalise_symmetry_name
from processing.io.optimisation_set import OptimisationSet
from processing.parallel import Communicator
from processing.reconstruct import ReconstructionSettings, reconstruct_particles

from .extract import validate_inputs
from .reconstruct_params import ReconstructParameters
from .relion_params import build_flag_parser, main_from_flags, main_from_job_dir

__all__ = ["settings_from_params", "validate", "run", "main", "add_parser"]


def settings_from_params(params: ReconstructParameters, extras: argparse.Namespace) -> ReconstructionSettings:
    """The engine's settings for these job parameters and extra flags."""
    if extras.taper < 0:
        raise InputError(f"--taper must be >= 0 (got {extras.taper:g})", column="other_args")
    return ReconstructionSettings(
        binning=float(params.binning), box=int(params.box_size), crop=int(params.effective_crop_size),
        symmetry=normalise_symmetry_name(params.sym_name), snr=float(params.snr),
        taper=float(extras.taper), apply_ctf=not extras.no_ctf, threads=int(params.nr_threads),
    )


def validate(params: ReconstructParameters, extras: argparse.Namespace) -> None:
    """Everything that can be checked before anything is written."""
    settings_from_params(params, extras)
    validate_inputs(params)


def run(params: ReconstructParameters, extras: argparse.Namespace, *, job_dir: Path, comm: Communicator,
        is_continue: bool, log=print) -> None:
    """Reconstruct half1/half2/merged into ``job_dir``."""
    inputs = params.resolve_inputs()
    result = reconstruct_particles(
        particles_file=inputs.particles, tomograms_file=inputs.tomograms, output_dir=job_dir,
        settings=settings_from_params(params, extras), trajectories_file=inputs.trajectories or None,
        comm=comm, job_dir=job_dir, log=log,
    )
    if result is None:
        return
    OptimisationSet(
        particles=inputs.particles, tomograms=inputs.tomograms,
        trajectories=inputs.trajectories or None,
        reference_map1=None if result.half1 is None else str(result.half1),
        reference_map2=None if result.half2 is None else str(result.half2),
    ).write(Path(job_dir) / "optimisation_set.star")
    log(f"Reconstructed {result.n_particles} particles ({result.n_slices} tilt images) in "
        f"{result.seconds:.1f} s")
    maps = ", ".join(str(p) for p in (result.half1, result.half2, result.merged) if p is not None)
    log(f"Maps: {maps}")
    if result.resolution_0143 is not None:
        log(f"Half-map resolution (FSC 0.143, unmasked): {result.resolution_0143:.2f} A "
            f"(FSC curve: {result.fsc_file})")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tomodash reconstruct`` (relion_tomo_reconstruct_particle's flags)."""
    parser = subparsers.add_parser(
        "reconstruct", help="Reconstruct particle (flags of relion_tomo_reconstruct_particle)",
        allow_abbrev=False,
    )
    build_flag_parser(ReconstructParameters, parser=parser)
    parser.set_defaults(func=lambda args: main_from_flags(ReconstructParameters, args, validate=validate, run=run))
    return parser


def main(argv: list[str] | None = None) -> int:
    return main_from_job_dir(ReconstructParameters, argv, validate=validate, run=run)


if __name__ == "__main__":
    sys.exit(main())
