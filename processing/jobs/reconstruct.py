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
import dataclasses
import sys
from pathlib import Path

from processing import backend
from processing.errors import InputError
from processing.geometry.symmetry import normalise_symmetry_name
from processing.io.optimisation_set import OptimisationSet
from processing.parallel import Communicator
from processing.reconstruct import ReconstructionSettings, reconstruct_particles
from processing.refine.devices import announce_device, parse_gpu_ids

from .extract import validate_inputs
from .reconstruct_params import ReconstructParameters
from .relion_params import build_flag_parser, main_from_flags, main_from_job_dir

__all__ = ["settings_from_params", "process_device", "validate", "run", "main", "add_parser"]


def settings_from_params(params: ReconstructParameters, extras: argparse.Namespace) -> ReconstructionSettings:
    """The engine's settings for these job parameters and extra flags."""
    if extras.taper < 0:
        raise InputError(f"--taper must be >= 0 (got {extras.taper:g})", column="other_args")
    return ReconstructionSettings(
        binning=float(params.binning), box=int(params.box_size), crop=int(params.effective_crop_size),
        symmetry=normalise_symmetry_name(params.sym_name), snr=float(params.snr),
        taper=float(extras.taper), apply_ctf=not extras.no_ctf, threads=int(params.nr_threads),
    )


def process_device(gpu: str, *, rank: int, n_devices: int) -> int:
    """The CUDA device of MPI process ``rank`` for ``--gpu`` (every process backprojects):
    entry ``rank mod n`` of an explicit list (its first number), else ``rank mod n_devices``.

    Raises
    ------
    InputError
        For a malformed list, no device, or a device this process does not see (column
        ``other_args``, where the flag travels).
    """
    ids = parse_gpu_ids(gpu)
    if n_devices < 1:
        raise InputError("--gpu: this process sees no CUDA device", column="other_args")
    device = rank % n_devices if ids is None else ids[rank % len(ids)][0]
    if device >= n_devices:
        raise InputError(f"--gpu {gpu!r}: device {device} does not exist here ({n_devices} CUDA device(s): "
                         f"0-{n_devices - 1})", column="other_args")
    return device


def validate(params: ReconstructParameters, extras: argparse.Namespace) -> None:
    """Everything that can be checked before anything is written."""
    settings_from_params(params, extras)
    if extras.gpu is not None:
        parse_gpu_ids(extras.gpu)
        problem = backend.cupy_problem()
        if problem is not None:
            raise InputError(f"--gpu needs CuPy and a CUDA GPU, and this machine has none: {problem}. Run without "
                             "--gpu, or on a GPU node", column="other_args")
    validate_inputs(params)


def run(params: ReconstructParameters, extras: argparse.Namespace, *, job_dir: Path, comm: Communicator,
        is_continue: bool, log=print) -> None:
    """Reconstruct half1/half2/merged into ``job_dir``."""
    inputs = params.resolve_inputs()
    settings = settings_from_params(params, extras)
    if extras.gpu is not None:
        device = process_device(extras.gpu, rank=comm.rank, n_devices=backend.device_count())
        settings = dataclasses.replace(settings, device=device)
        announce_device(comm.rank, device)
    result = reconstruct_particles(
        particles_file=inputs.particles, tomograms_file=inputs.tomograms, output_dir=job_dir,
        settings=settings, trajectories_file=inputs.trajectories or None,
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
