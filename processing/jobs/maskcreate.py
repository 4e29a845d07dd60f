"""Job entry point of Mask creation (RELION ``relion_mask_create``).

::

    python -m processing.jobs.maskcreate --job-dir MaskCreate/job005
    tomodash maskcreate --i Reconstruct/job003/merged.mrc --o MaskCreate/job005/mask.mrc \\
        --lowpass 15 --ini_threshold 0.02 --extend_inimask 3 --width_soft_edge 3 --j 1

Writes ``mask.mrc`` (float32, values 0..1, the pixel size in the header) in the job directory.
``--o`` is the job directory or, as RELION's GUI writes it, ``<job directory>/mask.mrc``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from processing.errors import InputError
from processing.io.mrc import read_mrc
from processing.maskcreate import MaskSettings, check_input_map, create_mask, make_mask
from processing.parallel import Communicator

from .maskcreate_params import MASK_FILE, MaskCreateParameters
from .relion_params import build_flag_parser, main_from_flags, main_from_job_dir, params_from_flags

__all__ = ["settings_from_params", "check_inputs", "validate", "run", "main", "add_parser", "job_dir_of",
           "params_from_mask_flags"]


def settings_from_params(params: MaskCreateParameters, extras: argparse.Namespace) -> MaskSettings:
    """The engine's settings for these job parameters and extra flags (``--invert``)."""
    return MaskSettings(
        threshold=float(params.inimask_threshold), extend=float(params.extend_inimask),
        width=float(params.width_mask_edge), lowpass=float(params.lowpass_filter),
        pixel_size=float(params.angpix), invert=bool(extras.invert), helix_z_fraction=params.helix_z_fraction,
    )


def check_inputs(params: MaskCreateParameters, extras: argparse.Namespace) -> None:
    """Read the input map and make sure the mask would not be empty (the map is small; the
    check costs about what the job does).

    Raises
    ------
    InputError
        Missing or unreadable map, a non-cubic or 2D map, no pixel size for the low-pass, or a
        threshold (or shrinking) that leaves no voxel inside.
    """
    settings = settings_from_params(params, extras)
    header = check_input_map(params.fn_in, settings)
    pixel_size = settings.pixel_size if settings.pixel_size > 0 else header.pixel_size
    make_mask(read_mrc(params.fn_in).data, MaskSettings(
        threshold=settings.threshold, extend=settings.extend, lowpass=settings.lowpass,
    ), pixel_size=pixel_size, source=params.fn_in)


def validate(params: MaskCreateParameters, extras: argparse.Namespace) -> None:
    """Everything that can be checked before anything is written."""
    check_inputs(params, extras)


def run(params: MaskCreateParameters, extras: argparse.Namespace, *, job_dir: Path, comm: Communicator,
        is_continue: bool, log=print) -> None:
    """Write ``job_dir/mask.mrc``."""
    if not comm.is_leader:
        return
    create_mask(params.fn_in, Path(job_dir) / MASK_FILE, settings_from_params(params, extras), log=log)


def job_dir_of(output: str) -> str:
    """The job directory of ``--o``: the directory itself, or the directory of ``.../mask.mrc``.

    Raises
    ------
    InputError
        For another file name (the job always writes ``mask.mrc``).
    """
    path = Path(output)
    if path.suffix.lower() in (".mrc", ".mrcs", ".map"):
        if path.name != MASK_FILE:
            raise InputError(f"the mask is written as {MASK_FILE} in the job directory: give --o DIR/ or "
                             f"DIR/{MASK_FILE}, not {output}", column="--o")
        return str(path.parent) + "/"
    return output


def params_from_mask_flags(args: argparse.Namespace) -> tuple[MaskCreateParameters, bool, str]:
    """Parameters, continue flag and job directory from parsed relion_mask_create flags; absent
    flags take the program's defaults (not the GUI's), ``--z_percentage`` (a fraction) becomes
    the form's per cent.

    Raises
    ------
    InputError
        For a value out of bounds or an output name other than ``mask.mrc``.
    """
    values = vars(args).copy()
    for name, default in MaskCreateParameters.program_defaults.items():
        if values.get(name) is None:
            values[name] = default
    job_dir = job_dir_of(args.o)
    params, is_continue = params_from_flags(MaskCreateParameters, argparse.Namespace(**values))
    if args.z_percentage is not None:
        params = MaskCreateParameters.from_values(
            {**{n: getattr(params, n) for n in params.fields()}, "helical_z_percentage": 100.0 * args.z_percentage})
    return params, is_continue, job_dir


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tomodash maskcreate`` (relion_mask_create's flags)."""
    parser = subparsers.add_parser(
        "maskcreate", help="Mask creation (flags of relion_mask_create)", allow_abbrev=False,
    )
    build_flag_parser(MaskCreateParameters, parser=parser)
    parser.add_argument("--z_percentage", type=float, default=None, metavar="FRACTION",
                        help="with --helix: central fraction of the box along Z to keep (0.1-0.9; default 0.3)")
    parser.set_defaults(func=lambda args: main_from_flags(MaskCreateParameters, args, validate=validate, run=run,
                                                          read_flags=params_from_mask_flags))
    return parser


def main(argv: list[str] | None = None) -> int:
    return main_from_job_dir(MaskCreateParameters, argv, validate=validate, run=run)


if __name__ == "__main__":
    sys.exit(main())
