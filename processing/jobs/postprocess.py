"""Job entry point of Post-processing (RELION ``relion_postprocess``).

::

    python -m processing.jobs.postprocess --job-dir PostProcess/job005
    tomodash postprocess --i Refine3D/job004/run_half1_class001_unfil.mrc --mask mask.mrc \\
        --angpix 1.35 --auto_bfac --autob_lowres 10 --o PostProcess/job005/

Writes postprocess.mrc, postprocess_masked.mrc (with a mask), postprocess.star and
logfile.pdf into the job directory, as RELION does (``--o`` is the job directory; RELION's
rootname ``<job>/postprocess`` is implied).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from processing.errors import InputError
from processing.parallel import Communicator
from processing.postprocess import PostprocessInputs, SharpenSettings, check_inputs, run_postprocess

from .postprocess_params import PostprocessParameters
from .relion_params import (
    build_flag_parser,
    main_from_flags,
    main_from_job_dir,
    params_from_flags,
    relion_command,
)

__all__ = ["inputs_from_params", "validate", "run", "main", "add_parser", "main_from_relion_flags"]


def inputs_from_params(params: PostprocessParameters, extras: argparse.Namespace) -> PostprocessInputs:
    """The engine's inputs for these job parameters and extra flags (``other_args``)."""
    if extras.random_seed < 0:
        raise InputError(f"--random_seed must be >= 0 (got {extras.random_seed})", column="other_args")
    if extras.filter_edge_width < 0:
        raise InputError(f"--filter_edge_width must be >= 0 (got {extras.filter_edge_width})", column="other_args")
    if params.do_auto_bfac and params.do_adhoc_bfac:
        raise InputError("choose either the automatic B-factor or your own, not both", column="do_adhoc_bfac")
    sharpen = SharpenSettings(
        auto_bfac=bool(params.do_auto_bfac), autob_lowres=float(params.autob_lowres),
        autob_highres=float(extras.autob_highres),
        adhoc_bfac=float(params.adhoc_bfac) if params.do_adhoc_bfac else 0.0,
        fsc_weighting=not params.do_skip_fsc_weighting,
        low_pass=float(params.low_pass) if params.do_skip_fsc_weighting else 0.0,
        filter_edge_width=int(extras.filter_edge_width),
    )
    return PostprocessInputs(
        half1=params.fn_in, half2=extras.i2 or "", mask=params.fn_mask, angpix=float(params.angpix),
        mtf=params.fn_mtf, mtf_angpix=float(params.mtf_angpix), sharpen=sharpen,
        randomize_fsc_at=float(extras.randomize_at_fsc), randomize_at_angstrom=float(extras.randomize_at_A),
        force_mask=bool(extras.force_mask), random_seed=int(extras.random_seed),
    )


def validate(params: PostprocessParameters, extras: argparse.Namespace) -> None:
    """Everything that can be checked before anything is written (files, sizes, the MTF)."""
    check_inputs(inputs_from_params(params, extras))


def run(params: PostprocessParameters, extras: argparse.Namespace, *, job_dir: Path, comm: Communicator,
        is_continue: bool, log=print) -> None:
    """Post-process into ``job_dir`` (the leader does all the work)."""
    if not comm.is_leader:
        return
    root = str(job_dir).rstrip("/") + "/postprocess"
    command = relion_command(params, job_dir, program="relion_postprocess")
    result = run_postprocess(inputs_from_params(params, extras), output_root=root, command=command, log=log)
    log(f"Final resolution {result.curves.resolution:.2f} A; B-factor {result.sharpen.bfactor:.1f} A^2; "
        f"files: {', '.join(str(p) for p in result.files)}")


def params_from_relion_flags(args: argparse.Namespace) -> tuple[PostprocessParameters, bool, str]:
    """``(params, is_continue, job_dir)`` of relion_postprocess's flags as RELION's command line
    means them (``--adhoc_bfac B`` alone selects the ad-hoc B-factor; ``--low_pass`` goes with
    ``--skip_fsc_weighting``; without ``--mtf_angpix`` the MTF pixel is the map's)."""
    params, is_continue = params_from_flags(PostprocessParameters, args, nr_mpi=1)
    params.do_adhoc_bfac = args.adhoc_bfac is not None and args.adhoc_bfac != 0
    if args.mtf_angpix is None:
        params.mtf_angpix = -1.0
    if args.low_pass is not None and args.low_pass != 0 and not args.do_skip_fsc_weighting:
        raise InputError("--low_pass is applied with --skip_fsc_weighting (as RELION's GUI runs it)",
                         column="low_pass")
    if args.do_skip_fsc_weighting:
        params.low_pass = float(args.low_pass or 0.0)
    return params, is_continue, args.o


def main_from_relion_flags(args: argparse.Namespace, *, comm: Communicator | None = None) -> int:
    """``tomodash postprocess <relion_postprocess flags>``."""
    return main_from_flags(PostprocessParameters, args, validate=validate, run=run, comm=comm,
                           read_flags=params_from_relion_flags)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tomodash postprocess`` (relion_postprocess's flags)."""
    parser = subparsers.add_parser(
        "postprocess", help="Post-processing (flags of relion_postprocess)", allow_abbrev=False,
    )
    build_flag_parser(PostprocessParameters, parser=parser)
    parser.set_defaults(func=main_from_relion_flags)
    return parser


def main(argv: list[str] | None = None) -> int:
    return main_from_job_dir(PostprocessParameters, argv, validate=validate, run=run)


if __name__ == "__main__":
    sys.exit(main())
