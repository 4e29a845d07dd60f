"""Job entry point of 3D auto-refine (RELION ``relion.refine3d.tomo`` / relion_refine).

::

    python -m processing.jobs.refine3d --job-dir Refine3D/job004
    mpiexec -n 3 python -m mpi4py -m processing.jobs.refine3d --job-dir Refine3D/job004
    mpiexec -n 3 tomodash refine --o Refine3D/job004/run --auto_refine --split_random_halves \\
        --ios Extract/job002/optimisation_set.star --ref Reconstruct/job003/merged.mrc ...

The first two read ``job.star`` (Refine3DParameters) from the job directory; the third takes
relion_refine's flags. Both end in :func:`run_with_lifecycle`: exit markers, run.err, abort.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from processing.errors import InputError
from processing.jobs.lifecycle import job_lifecycle, record_failure
from processing.parallel import Communicator, get_communicator
from processing.refine.flags import parse_refine_args, refine_help
from processing.refine.options import RefineOptions

from .refine3d_params import Refine3DParameters
from .relion_refine_params import RelionRefineParameters
from .relion_params import append_note, checked_on_leader, configure_threads, read_job_parameters

__all__ = ["Refine3DParameters", "run_with_lifecycle", "main", "main_for", "add_parser", "run"]


def run_with_lifecycle(options: RefineOptions, *, comm: Communicator | None = None, invoked: str | None = None,
                       direct: bool = False) -> int:
    """Check the inputs, then run the refinement in its job directory (the parent of ``--o``)
    with exit markers. Returns 0, or 2 for bad input.

    Parameters
    ----------
    direct
        Started as ``tomodash refine`` (relion_refine's flags): bad input then leaves the job
        directory as it was (and one this run created is removed if the images turn out bad
        while they are read); a session's job (``--job-dir``) is marked failed instead.
    """
    from processing.refine.driver import run_refine
    from processing.refine.inputs import check_inputs

    comm = comm or get_communicator()
    job_dir = Path(options.output_root).parent
    created = not job_dir.exists()
    created = comm.bcast(created)
    if not checked_on_leader(lambda: check_inputs(options, n_ranks=comm.size), comm, job_dir, record=not direct):
        return 2
    if comm.is_leader:
        job_dir.mkdir(parents=True, exist_ok=True)
        if invoked:
            append_note(job_dir, [invoked])
    comm.barrier()
    configure_threads(options.threads)
    with job_lifecycle(job_dir, comm, discard_on_input_error=direct and created):
        run_refine(options, comm=comm, log=lambda m: print(m, flush=True))
    return 0


def main_for(cls: type[RelionRefineParameters], module: str, argv: list[str] | None = None) -> int:
    """``python -m <module> --job-dir DIR`` of a relion_refine job (3D auto-refine, 3D
    classification): DIR/job.star -> ``cls`` -> checked -> relion_refine's options -> run."""
    what = cls.__doc__.strip().splitlines()[0].split(":")[0]
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=f"Run a {what} job from its job.star.")
    parser.add_argument("--job-dir", required=True, metavar="DIR")
    args = parser.parse_args(argv)
    comm = get_communicator()
    job_dir = Path(args.job_dir)
    try:
        job, params = read_job_parameters(cls, job_dir)
        params.check(is_continue=job.is_continue)
        options = params.to_options(job_dir, is_continue=job.is_continue)
        if comm.size > 1 and comm.size != params.nr_mpi and comm.is_leader:
            print(f"WARNING: running on {comm.size} MPI processes, job.star asks for {params.nr_mpi}",
                  file=sys.stderr, flush=True)
    except InputError as exc:
        if comm.is_leader:
            print(f"ERROR: {exc}", file=sys.stderr, flush=True)
            if job_dir.is_dir():
                record_failure(job_dir, str(exc))
        return 2
    prefix = f"mpiexec -n {comm.size} python -m mpi4py " if comm.size > 1 else "python "
    invoked = f"{prefix}-m {module} --job-dir {job_dir}\n# equivalent: " + \
        params.command_line(job_dir, is_continue=job.is_continue)
    return run_with_lifecycle(options, comm=comm, invoked=invoked)


def main(argv: list[str] | None = None) -> int:
    return main_for(Refine3DParameters, "processing.jobs.refine3d", argv)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tomodash refine`` (sets ``func``). All arguments go to
    :func:`~processing.refine.flags.parse_refine_args`."""
    parser = subparsers.add_parser(
        "refine",
        help="3D auto-refine with relion_refine's command-line flags",
        description="3D auto-refine; takes relion_refine's flags (tomodash refine --help lists them).",
        prefix_chars="+",   # every --flag is passed through untouched
        add_help=False,
    )
    parser.add_argument("relion_args", nargs=argparse.REMAINDER, help="relion_refine flags")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace, *, runner: Callable[..., int] | None = None) -> int:
    """Parse ``args.relion_args`` and run the refinement (``runner`` replaces the driver in tests)."""
    argv = list(args.relion_args)
    if not argv or any(a in ("--help", "-h") for a in argv):
        print(refine_help(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    options = parse_refine_args(argv)
    if runner is None:
        return run_with_lifecycle(options, invoked="tomodash refine " + " ".join(argv), direct=True)
    return int(runner(options) or 0)


if __name__ == "__main__":
    sys.exit(main())
