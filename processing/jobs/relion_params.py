"""RELION program flags <-> job parameter classes, and the driver shared by job entry points.

The parameter class is the single source of truth. Each parameter that a RELION program takes
on its command line carries its flag in ``metadata["flag"]`` (``--b``, ``--bin``, ``--sym``,
...); flags of the program that are not GUI fields (``--no_ic``, ``--taper``, ...) are listed
in the class's ``extra_flags`` and travel in the ``other_args`` field, exactly as RELION
appends "Additional arguments" to the command. So

* ``tomodash extract --i ... --o Extract/job002/ --b 64 --bin 3`` parses the flags into an
  :class:`~processing.jobs.extract_params.ExtractParameters`, writes it as
  ``Extract/job002/job.star`` and runs it;
* ``python -m processing.jobs.extract --job-dir Extract/job002`` reads that job.star back into
  the same class and runs the same code;
* :func:`relion_command` turns parameters back into the RELION-style command line (note.txt).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import param

from processing.errors import InputError
from processing.io.jobstar import JobStar
from processing.io.optimisation_set import OptimisationSet
from processing.parallel import Communicator, get_communicator

from .base import JobParameters
from .lifecycle import job_lifecycle, record_failure

__all__ = [
    "checked_on_leader",
    "IGNORED_FLAGS",
    "build_flag_parser",
    "params_from_flags",
    "parse_other_args",
    "relion_command",
    "execute_job",
    "main_from_flags",
    "main_from_job_dir",
    "Validator",
    "Runner",
    "append_note",
    "configure_threads",
    "read_job_parameters",
]

#: Flags RELION's GUI adds to every command; accepted and ignored.
IGNORED_FLAGS: dict[str, dict] = {
    "--theme": {"default": None, "help": "accepted for RELION compatibility (ignored)"},
    "--pipeline_control": {"default": None, "help": "accepted for RELION compatibility (ignored)"},
}

#: validate(params, extras): read and check the inputs (leader only); raise InputError.
Validator = Callable[[JobParameters, argparse.Namespace], None]
#: run(params, extras, *, job_dir, comm, is_continue, log): the job body.
Runner = Callable[..., Any]


def _flagged(cls: type[JobParameters]) -> list[tuple[str, param.Parameter, str]]:
    out = []
    for name in cls.fields():
        p = cls.param[name]
        flag = (p.metadata or {}).get("flag")
        if flag:
            out.append((name, p, flag))
    return out


def _arg_type(p: param.Parameter) -> type:
    if isinstance(p, param.Integer):
        return int
    if isinstance(p, param.Number):
        return float
    return str


def _add_extra_flags(parser: argparse.ArgumentParser, cls: type[JobParameters]) -> None:
    for flag, kwargs in {**getattr(cls, "extra_flags", {}), **IGNORED_FLAGS}.items():
        parser.add_argument(flag, **kwargs)


def build_flag_parser(cls: type[JobParameters], *, prog: str | None = None,
                      parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """An argparse parser taking the RELION program's flags for job class ``cls``."""
    if parser is None:
        parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False)
    parser.description = (
        f"{cls.__doc__.strip().splitlines()[0]} Takes the flags of {cls.program}; the --o "
        "directory is the job directory (job.star, note.txt, outputs, exit marker)."
    )
    parser.add_argument("--o", required=True, metavar="DIR", help="output (job) directory")
    for name, p, flag in _flagged(cls):
        help_text = p.label.strip()
        if isinstance(p, param.Boolean):
            parser.add_argument(flag, dest=name, action="store_true", help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=_arg_type(p), default=None,
                                metavar=name.upper(), help=help_text)
    parser.add_argument("--only_do_unfinished", action="store_true",
                        help="continue: skip the work whose outputs are already complete")
    _add_extra_flags(parser, cls)
    return parser


def _normalise(p: param.Parameter, value: Any) -> Any:
    """RELION's 'off' values: -1 (or any value <= 0) for fields whose lower bound is -1
    (crop, max dose), and 0 for fields bounded below by 0 (Wiener SNR -1 = heuristic)."""
    bounds = getattr(p, "bounds", None)
    if bounds is None or isinstance(p, param.Boolean) or not isinstance(value, (int, float)):
        return value
    lo = bounds[0]
    if lo == -1 and value <= 0:
        return type(value)(-1)
    if lo == 0 and value < 0:
        return type(value)(0)
    return value


def _format_extras(cls: type[JobParameters], args: argparse.Namespace) -> str:
    """The extra flags that differ from their defaults, as RELION "Additional arguments"."""
    tokens: list[str] = []
    for flag, kwargs in getattr(cls, "extra_flags", {}).items():
        value = getattr(args, flag.lstrip("-"))
        if kwargs.get("action") == "store_true":
            if value:
                tokens.append(flag)
        elif value is not None and value != kwargs.get("default"):
            tokens += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return " ".join(tokens)


def params_from_flags(cls: type[JobParameters], args: argparse.Namespace, *,
                      nr_mpi: int = 1) -> tuple[JobParameters, bool]:
    """Parameters and the continue flag from parsed RELION flags.

    ``--i`` alone selects the optimisation set; ``--p/--t/--mot`` alone are direct entries;
    ``--i`` with overrides is resolved into direct entries (the set's files, overridden).
    """
    values: dict[str, Any] = {}
    for name, p, _flag in _flagged(cls):
        value = getattr(args, name)
        if isinstance(p, param.Boolean):
            values[name] = bool(value)
        elif value is not None:
            values[name] = _normalise(p, value)
    direct = [n for n in ("in_particles", "in_tomograms", "in_trajectories") if values.get(n)]
    if direct:
        if values.get("in_optimisation"):
            path = values.pop("in_optimisation")
            if not os.path.isfile(path):
                raise InputError(f"file does not exist: {path}", column="in_optimisation")
            opt = OptimisationSet.read(path)
            values.setdefault("in_particles", opt.particles or "")
            values.setdefault("in_tomograms", opt.tomograms or "")
            values.setdefault("in_trajectories", opt.trajectories or "")
        values["use_direct_entries"] = True
    values["nr_mpi"] = nr_mpi
    values["other_args"] = _format_extras(cls, args)
    return cls.from_values(values), bool(args.only_do_unfinished)


def parse_other_args(cls: type[JobParameters], text: str) -> argparse.Namespace:
    """The extra flags stored in ``other_args`` (defaults where absent).

    Raises
    ------
    InputError
        For an option the program does not know or a malformed value.
    """
    parser = argparse.ArgumentParser(prog=cls.program, add_help=False, allow_abbrev=False,
                                     exit_on_error=False)
    _add_extra_flags(parser, cls)
    try:
        tokens = shlex.split(text or "")
        args, unknown = parser.parse_known_args(tokens)
    except (argparse.ArgumentError, ValueError) as exc:
        raise InputError(f"Additional arguments: {exc}", column="other_args") from None
    if unknown:
        raise InputError(f"Additional arguments: {cls.program} does not know {' '.join(unknown)}",
                         column="other_args")
    return args


def relion_command(params: JobParameters, job_dir: str | os.PathLike, *, is_continue: bool = False,
                   program: str | None = None) -> str:
    """The command line (RELION's token order, spec project 8.3/8.4) that runs ``params``: the
    tomography input block and the declared flags, or the parameter class's own
    (:meth:`JobParameters.own_command`) for a program without that block."""
    own = params.own_command(job_dir, is_continue=is_continue, program=program)
    if own is not None:
        return own
    cls = type(params)
    tokens = [program or f"tomodash {cls.cli_name}"]
    if params.use_direct_entries:
        for name in ("in_particles", "in_tomograms", "in_trajectories"):
            if getattr(params, name):
                tokens += [cls.param[name].metadata["flag"], getattr(params, name)]
    else:
        tokens += ["--i", params.in_optimisation]
    job = str(job_dir).rstrip("/") + "/"
    tokens += ["--o", job]
    for name, p, flag in _flagged(cls):
        if name.startswith("in_") or name == "nr_threads":
            continue
        value = getattr(params, name)
        if isinstance(p, param.Boolean):
            if value:
                tokens.append(flag)
            continue
        bounds = getattr(p, "bounds", None)
        if isinstance(value, (int, float)) and bounds is not None and bounds[0] in (-1, 0) and value <= 0:
            continue
        tokens += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if is_continue:
        tokens.append("--only_do_unfinished")
    tokens += ["--j", str(params.nr_threads)]
    if params.other_args:
        tokens.append(params.other_args)
    return " ".join(shlex.quote(t) if t and " " not in t.strip() else t for t in tokens)


def configure_threads(threads: int) -> None:
    """Threads inside this process: numba kernels and scipy.fft."""
    import numba

    from processing.fourier.fft import set_fft_workers

    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
    set_fft_workers(max(1, threads))


def _log(message: str) -> None:
    print(message, flush=True)


def append_note(job_dir: Path, commands: list[str]) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(job_dir / "note.txt", "a", encoding="utf-8") as note:
        note.write(f" ++++ Executing new job on {stamp}\n ++++ with the following command(s): \n")
        for command in commands:
            note.write(f"{command}\n")
        note.write(" ++++ \n")


def checked_on_leader(check: Callable[[], None], comm: Communicator, job_dir: Path, *, record: bool) -> bool:
    """Run ``check`` on the leader and share its verdict with every rank. On bad input
    (:class:`InputError`) the leader prints the message and, with ``record``, marks an existing
    job directory failed (``run.err`` + ``RELION_JOB_EXIT_FAILURE``); returns whether it passed."""
    error = None
    if comm.is_leader:
        try:
            check()
        except InputError as exc:
            error = str(exc)
    error = comm.bcast(error)
    if error is None:
        return True
    if comm.is_leader:
        print(f"ERROR: {error}", file=sys.stderr, flush=True)
        if record and job_dir.is_dir():
            record_failure(job_dir, error)
    return False


def execute_job(
    params: JobParameters,
    extras: argparse.Namespace,
    *,
    job_dir: str | os.PathLike,
    is_continue: bool,
    comm: Communicator,
    validate: Validator,
    run: Runner,
    write_job_star: bool,
    invoked: str | None,
) -> int:
    """Validate (leader), then set up the job directory and run the body inside
    :func:`job_lifecycle`. Returns the exit status (0, or 2 for bad input).

    Nothing is created before validation passed. When validation fails, a job directory of a
    session (``write_job_star`` false: ``--job-dir``) gets ``RELION_JOB_EXIT_FAILURE`` and the
    message in ``run.err``; a direct command line's ``--o`` is left as it was, and one this run
    created is removed again if the data turn out bad while they are read.
    """
    job_dir = Path(job_dir)
    # A direct command line (write_job_star) promises that bad input leaves --o as it was; a
    # job directory of a session (--job-dir) is marked failed instead, for the pipeliner.
    direct = write_job_star
    created = comm.bcast(not job_dir.exists() if comm.is_leader else None)
    def check() -> None:
        params.check()
        validate(params, extras)

    if not checked_on_leader(check, comm, job_dir, record=not direct):
        return 2
    if comm.is_leader:
        job_dir.mkdir(parents=True, exist_ok=True)
        if write_job_star:
            params.write_job_star(job_dir, is_continue=is_continue)
        command = relion_command(params, job_dir, is_continue=is_continue)
        append_note(job_dir, [invoked, f"# equivalent: {command}"] if invoked else [command])
    comm.barrier()
    configure_threads(params.nr_threads)
    with job_lifecycle(job_dir, comm, discard_on_input_error=direct and created):
        run(params, extras, job_dir=job_dir, comm=comm, is_continue=is_continue, log=_log)
    return 0


def main_from_flags(cls: type[JobParameters], args: argparse.Namespace, *, validate: Validator,
                    run: Runner, comm: Communicator | None = None,
                    read_flags: Callable[[argparse.Namespace], tuple[JobParameters, bool, str]] | None = None) -> int:
    """``tomodash <job> <RELION flags>``: flags -> parameters -> job.star in ``--o`` -> run.

    ``read_flags(args) -> (params, is_continue, job_dir)`` replaces :func:`params_from_flags`
    for a program whose flags mean more than its form's fields (mask creation, post-processing).
    """
    comm = comm or get_communicator()
    try:
        if read_flags is None:
            params, is_continue = params_from_flags(cls, args, nr_mpi=comm.size)
            job_dir = args.o
        else:
            params, is_continue, job_dir = read_flags(args)
        extras = parse_other_args(cls, params.other_args)
    except InputError as exc:
        if comm.is_leader:
            print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        return 2
    return execute_job(params, extras, job_dir=job_dir, is_continue=is_continue, comm=comm,
                       validate=validate, run=run, write_job_star=True, invoked=None)


def read_job_parameters(cls: type[JobParameters], job_dir: Path) -> tuple[JobStar, JobParameters]:
    """``job_dir/job.star`` and the parameters it holds; an InputError when it is missing or
    is another job type."""
    star = job_dir / "job.star"
    if not star.is_file():
        raise InputError("job.star not found in the job directory", file=star)
    job = JobStar.read(star)
    if not job.type_label.startswith(cls.job_type_label):
        raise InputError(f"this job.star is a {job.type_label!r} job, not {cls.job_type_label!r}",
                         file=star, column="rlnJobTypeLabel")
    return job, cls.from_job_options(job.options, source=str(star))


def main_from_job_dir(cls: type[JobParameters], argv: list[str] | None, *, validate: Validator,
                      run: Runner) -> int:
    """``python -m processing.jobs.<name> --job-dir DIR``: DIR/job.star -> parameters -> run."""
    parser = argparse.ArgumentParser(
        prog=f"python -m processing.jobs.{cls.cli_name}",
        description=f"Run a {cls.job_type_label} job from the job.star in its job directory.",
    )
    parser.add_argument("--job-dir", required=True, metavar="DIR")
    args = parser.parse_args(argv)
    comm = get_communicator()
    job_dir = Path(args.job_dir)
    try:
        job, params = read_job_parameters(cls, job_dir)
        extras = parse_other_args(cls, params.other_args)
    except InputError as exc:
        if comm.is_leader:
            print(f"ERROR: {exc}", file=sys.stderr, flush=True)
            if job_dir.is_dir():
                record_failure(job_dir, str(exc))
        return 2
    invoked = " ".join(["python -m", f"processing.jobs.{cls.cli_name}", "--job-dir", str(job_dir)])
    if comm.size > 1:
        invoked = f"mpiexec -n {comm.size} python -m mpi4py -m processing.jobs.{cls.cli_name} --job-dir {job_dir}"
    return execute_job(params, extras, job_dir=job_dir, is_continue=job.is_continue, comm=comm,
                       validate=validate, run=run, write_job_star=False, invoked=invoked)
