"""Job entry point of Extract subtomos (RELION ``relion_tomo_subtomo``).

::

    python -m processing.jobs.extract --job-dir Extract/job002
    mpiexec -n 2 python -m mpi4py -m processing.jobs.extract --job-dir Extract/job002
    tomodash extract --i optimisation_set.star --o Extract/job002/ --b 64 --crop 48 --bin 3 \\
        --stack2d --float16 --j 2

The first two read ``job.star`` from the job directory; the third takes relion_tomo_subtomo's
flags, writes them as ``job.star`` in ``--o`` and runs the same code.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from processing.errors import InputError
from processing.extract import ExtractionSettings, extract_subtomograms
from processing.io.mrc import check_mrc_file
from processing.io.particles import ParticleSet
from processing.io.paths import resolve_path
from processing.io.tomograms import Tomogram, TomogramSet
from processing.parallel import Communicator

from .extract_params import ExtractParameters
from .relion_params import build_flag_parser, main_from_flags, main_from_job_dir
from .tomo_inputs import TomoInputParameters

__all__ = ["settings_from_params", "validate", "run", "main", "add_parser", "check_inputs", "check_tilt_images",
           "validate_inputs"]


def settings_from_params(params: ExtractParameters, extras: argparse.Namespace, *,
                         is_continue: bool = False) -> ExtractionSettings:
    """The engine's settings for these job parameters and extra flags."""
    return ExtractionSettings(
        binning=float(params.binning), box=int(params.box_size), crop=int(params.effective_crop_size),
        max_dose=float(params.max_dose), min_frames=int(params.min_frames),
        stack2d=bool(params.do_stack2d), float16=bool(params.do_float16),
        apply_ctf=not extras.no_ctf, invert_contrast=not extras.no_ic,
        circle_crop=not extras.no_circle_crop, apply_offsets=not extras.dont_apply_offsets,
        threads=int(params.nr_threads), only_unfinished=is_continue,
    )


def check_tilt_images(tomogram: Tomogram, *, root: Path | None = None) -> None:
    """Check every tilt image of a tilt series from its header and file size (no pixel read).

    Each must exist, be a readable MRC of a usable mode holding all the data its header
    announces, and have the tilt series' image size: a differently sized image would make
    the extraction place (and drop) particles wrongly.

    Raises
    ------
    InputError
        Naming the tilt image, the tilt series file, its table, ``rlnMicrographName`` and row.
    """
    tilts = tomogram.tilts
    found = []
    for row, micrograph in enumerate(tilts.micrograph_names, start=1):
        path = resolve_path(micrograph, root=root, referrer=tilts.file)
        where = f"tilt {row} of {tomogram.name} ({tilts.file}, table data_{tilts.name}, " \
                f"column rlnMicrographName, row {row})"
        if not path.is_file():
            raise InputError(f"tilt image not found: {micrograph}", file=tilts.file, table=tilts.name,
                             column="rlnMicrographName", row=row)
        try:
            header = check_mrc_file(path)
        except InputError as exc:
            raise InputError(f"{where}: {exc.message}", file=path) from None
        found.append((header.image_size, path, where))
    if not found:
        raise InputError(f"tilt series {tomogram.name} has no tilt images", file=tilts.file, table=tilts.name)
    sizes = [size for size, _, _ in found]
    # The size the table says, else the size most tilts have: the odd image out is the one named.
    expected = tuple(tomogram.image_size) if tomogram.image_size else max(set(sizes), key=sizes.count)
    for size, path, where in found:
        if size != expected:
            raise InputError(f"{where}: image is {size[0]} x {size[1]} px, the tilt series' images are "
                             f"{expected[0]} x {expected[1]} px", file=path)


def check_inputs(particles_file: str, tomograms_file: str, trajectories_file: str | None, *,
                 root: Path | None = None) -> None:
    """Read the input sets and check every tilt image the particles need (headers only).

    Parameters
    ----------
    root
        Project directory relative paths are resolved against (default: the working
        directory, where a job runs).

    Raises
    ------
    InputError
        Naming the file (and table/column/row) at fault.
    """
    tomograms = TomogramSet.read(tomograms_file, root=root)
    particles = ParticleSet.read(particles_file, tomograms)
    if len(particles) == 0:
        raise InputError("the particle set is empty", file=particles_file, table="particles")
    for name in sorted(set(particles.tomo_names().tolist())):
        tomogram = tomograms[name]
        if tomogram.size is None:
            raise InputError(f"tomogram {name!r} has no size (rlnTomoSizeX/Y/Z)", file=tomograms_file,
                             table="global", column="rlnTomoSizeX")
        check_tilt_images(tomogram, root=root)
    if trajectories_file:
        from processing.extract.trajectories import read_trajectories

        read_trajectories(trajectories_file)


def validate_inputs(params: TomoInputParameters) -> None:
    """The particle, tomogram and trajectory files a form names exist and read (Extract and
    Reconstruct)."""
    inputs = params.resolve_inputs()
    if not inputs.particles or not inputs.tomograms:
        raise InputError("the optimisation set names no particle or tomogram set",
                         file=params.in_optimisation, column="rlnTomoParticlesFile")
    check_inputs(inputs.particles, inputs.tomograms, inputs.trajectories or None)


def validate(params: ExtractParameters, extras: argparse.Namespace) -> None:
    """Everything that can be checked before anything is written."""
    settings_from_params(params, extras)
    validate_inputs(params)


def run(params: ExtractParameters, extras: argparse.Namespace, *, job_dir: Path, comm: Communicator,
        is_continue: bool, log=print) -> None:
    """Extract all particles into ``job_dir`` (particles.star, optimisation_set.star, Subtomograms/)."""
    inputs = params.resolve_inputs()
    settings = settings_from_params(params, extras, is_continue=is_continue)
    result = extract_subtomograms(
        particles_file=inputs.particles, tomograms_file=inputs.tomograms, output_dir=job_dir,
        settings=settings, trajectories_file=inputs.trajectories or None, comm=comm, job_dir=job_dir,
        log=log,
    )
    if result is not None:
        log(f"Extracted {result.n_particles} particles ({result.n_dropped} dropped, "
            f"{result.n_computed} written, {result.n_skipped} already complete), "
            f"{result.tilts_extracted} tilt images, in {result.seconds:.1f} s")
        log(f"Written: {result.particles_file} and {result.optimisation_set_file}")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tomodash extract`` (relion_tomo_subtomo's flags)."""
    parser = subparsers.add_parser(
        "extract", help="Extract subtomos (flags of relion_tomo_subtomo)", allow_abbrev=False,
    )
    build_flag_parser(ExtractParameters, parser=parser)
    parser.set_defaults(func=lambda args: main_from_flags(ExtractParameters, args, validate=validate, run=run))
    return parser


def main(argv: list[str] | None = None) -> int:
    return main_from_job_dir(ExtractParameters, argv, validate=validate, run=run)


if __name__ == "__main__":
    sys.exit(main())
