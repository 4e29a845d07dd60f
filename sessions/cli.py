"""Session commands of ``tomodash``: ``session new``, ``run``, ``jobs``, ``abort``, ``continue``,
``presets``.

Registered on the top-level parser by :func:`add_session_commands` (called from
``dashboard.cli.build_parser``). Each handler returns the exit status; errors that are the
user's (bad paths, invalid parameters) are :class:`~processing.errors.InputError`, which the
top-level ``main`` prints as one line.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from processing.errors import InputError

__all__ = ["add_session_commands", "parse_assignments"]


def _one_line_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report what the machine refuses (disk full, read-only or unwritable session, a session
    lock held too long) as one line and exit status 1, not as a traceback. Bad input stays an
    :class:`InputError` (one line, exit status 2, printed by the top-level ``main``)."""

    @functools.wraps(handler)
    def wrapped(args: argparse.Namespace) -> int:
        from .lock import LockTimeout

        try:
            return handler(args)
        except InputError:
            raise
        except (LockTimeout, OSError) as exc:
            print(f"tomodash {args.command}: error: {exc}", file=sys.stderr)
            return 1

    return wrapped


def _session_and_job(job: str, session_dir: str | None):
    from .project import Session, find_session

    if session_dir:
        session = Session(session_dir)
        return session, session.resolve_job(job)
    session, name = find_session(job)
    if name is None:
        raise InputError("give a job directory (e.g. SESSION/Refine3D/job004) or --session", file=job)
    return session, name


def parse_assignments(items: list[str], params) -> dict[str, str]:
    """``field=value`` strings -> {job.star variable: value}; fields by attribute or job.star name.

    Raises
    ------
    InputError
        For a malformed item or an unknown field.
    """
    cls = type(params)
    by_name = {n: cls.param[n].metadata["var"] for n in cls.fields()}
    by_var = {v: v for v in by_name.values()}
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InputError(f"--set expects field=value, got {item!r}", column="set")
        var = by_name.get(key) or by_var.get(key)
        if var is None:
            raise InputError(f"{cls.__name__} has no field {key!r}; fields: {', '.join(sorted(by_name))}",
                             column=key)
        out[var] = value
    return out


# ---- handlers ---------------------------------------------------------------------------------

def _cmd_session_new(args: argparse.Namespace) -> int:
    from .importer import create_session

    preset = args.demo_preset or ("demo" if args.demo else None)
    if preset:
        print(f"Simulating the {preset!r} dataset into {args.dir}/Dataset ...", flush=True)
    session = create_session(args.dir, demo_preset=preset, import_files=args.import_files, title=args.title,
                             symmetry=args.symmetry, log=lambda m: print(f"  {m}", flush=True))
    print(f"Session {session.root}")
    for job in session.jobs():
        print(f"  {job.name:<20} {job.type_label:<28} {job.status}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo_pipeline

    run_demo_pipeline(args.dir, preset=args.preset, log=lambda m: print(m, flush=True))
    print(f"Demo pipeline finished: session {args.dir} (tomodash jobs {args.dir}; tomodash serve {args.dir})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from . import runner
    from .jobtypes import get_job_type
    from .presets import apply_preset, find_preset
    from .project import Session

    session = Session(args.session)
    try:
        jt = get_job_type(args.type)
    except KeyError as exc:
        raise InputError(str(exc.args[0]), column="TYPE") from None
    params = jt.params_class()
    if args.preset:
        preset = find_preset(args.preset, jt.name, session)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            params, _problems = apply_preset(preset, session, params)
        for w in caught:
            print(f"WARNING: {w.message}", file=sys.stderr)
        print(f"Preset {preset.name} ({preset.source}): {preset.description}")
    if args.set:
        options = params.to_job_options()
        options.update(parse_assignments(args.set, params))
        params = jt.params_class.from_job_options(options, source="--set")
    if args.no_launch:
        info = session.create_job(jt, params, alias=args.alias)
        print(f"Created {info.name} (Scheduled)")
        return 0
    info = runner.run_job(session, jt, params, alias=args.alias)
    record = runner.read_run_record(info.path)
    where = f"queue job {record.slurm_job_id}" if record and record.backend == "slurm" else \
        f"pid {record.identity.pid}" if record and record.identity else "?"
    print(f"Started {info.name}{f' ({info.alias})' if info.alias else ''}: {where}")
    print(f"  {record.data['command'] if record else ''}")
    if args.wait:
        return _follow(session, info.name)
    return 0


def _progress_fraction(job_dir: Path) -> tuple[float | None, str]:
    """Fraction done and a phase text from the job's ``progress.json`` (if it writes one)."""
    try:
        data = json.loads((job_dir / "progress.json").read_text())
    except (OSError, ValueError):
        return None, ""
    fraction = data.get("fraction")
    done = data.get("particles_done", data.get("done"))
    total = data.get("particles_total", data.get("total"))
    if fraction is None and total:
        fraction = float(done or 0) / float(total)
    phase = str(data.get("phase", ""))
    if data.get("iteration") is not None:
        phase = f"it {data['iteration']} {phase}".strip()
    return (None if fraction is None else max(0.0, min(1.0, float(fraction)))), phase


def _follow(session, name: str, poll: float = 1.0) -> int:
    """Show a progress bar until the job ends; exit status 0 only if it succeeded."""
    from tqdm import tqdm

    from . import runner
    from .pipeline import RUNNING, SUCCEEDED

    job_dir = session.root / name
    with tqdm(total=100, desc=name, bar_format="{desc} {bar} {percentage:3.0f}% {elapsed} {postfix}") as bar:
        while True:
            status = runner.reconcile(session, name)
            fraction, phase = _progress_fraction(job_dir)
            if fraction is not None:
                bar.n = int(fraction * 100)
            bar.set_postfix_str(f"{status} {phase}".strip())
            bar.refresh()
            if status != RUNNING:
                break
            time.sleep(poll)
    reason = runner.failure_reason(job_dir)
    print(f"{name}: {status}" + (f" ({reason})" if reason and status != SUCCEEDED else ""))
    return 0 if status == SUCCEEDED else 1


def _cmd_jobs(args: argparse.Namespace) -> int:
    from . import runner
    from .project import Session

    session = Session(args.dir)
    jobs = runner.refresh(session)
    if args.json:
        print(json.dumps([{"name": j.name, "alias": j.alias, "type": j.type_label, "status": j.status,
                           "reason": runner.failure_reason(j.path)} for j in jobs], indent=2))
        return 0
    print(f"{'JOB':<20} {'ALIAS':<22} {'TYPE':<32} STATUS")
    for j in jobs:
        line = f"{j.name:<20} {(j.alias or ''):<22} {j.type_label:<32} {j.status}"
        reason = runner.failure_reason(j.path) if j.status in ("Failed", "Aborted") else None
        print(line + (f"  ({reason})" if reason else ""))
    return 0


def _cmd_abort(args: argparse.Namespace) -> int:
    from . import runner

    session, name = _session_and_job(args.job, args.session)
    status = runner.abort(session, name, grace=args.grace, term_grace=args.term_grace, wait=not args.no_wait)
    print(f"{name}: {status}" + (" (abort requested)" if args.no_wait else ""))
    return 0


def _cmd_continue(args: argparse.Namespace) -> int:
    from . import runner

    session, name = _session_and_job(args.job, args.session)
    record = runner.continue_job(session, name)
    print(f"Continuing {name}: {record.data['command']}")
    if args.wait:
        return _follow(session, name)
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from .presets import list_presets
    from .project import Session

    session = Session(args.session) if args.session else None
    for p in list_presets(session, args.type):
        print(f"{p.name:<28} {p.job_type:<12} {p.source:<8} {p.fingerprint.describe()}")
        if p.description:
            print(f"{'':<28} {p.description}")
    return 0


# ---- registration ---------------------------------------------------------------------------

def add_session_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``session``, ``run``, ``jobs``, ``abort``, ``continue`` and ``presets``."""
    from .jobtypes import job_types

    p = subparsers.add_parser("session", help="create sessions (RELION 5 project directories)")
    sub = p.add_subparsers(dest="session_command", required=True, metavar="SUBCOMMAND")
    new = sub.add_parser("new", help="create a session, optionally importing a dataset")
    new.add_argument("dir", metavar="DIR", help="new session directory")
    source = new.add_mutually_exclusive_group()
    source.add_argument("--import", dest="import_files", nargs=2, metavar=("TOMOGRAMS", "PARTICLES"),
                        help="import tomograms.star and particles.star as job 1")
    source.add_argument("--demo", action="store_true", help="simulate the demo dataset and import it")
    source.add_argument("--demo-preset", metavar="NAME", help="simulator preset for --demo (demo, test)")
    new.add_argument("--symmetry", help="the particle's point group (part of the dataset fingerprint)")
    new.add_argument("--title", help="session title")
    new.set_defaults(func=_one_line_errors(_cmd_session_new))

    demo = subparsers.add_parser(
        "demo", help="the whole demo pipeline in a new session: simulate, extract (bin 3), reconstruct, "
                     "3D auto-refine (3 MPI), re-extract at bin 2 with the refined poses, reconstruct")
    demo.add_argument("dir", metavar="DIR", help="new session directory")
    demo.add_argument("--preset", default="demo", help="simulator preset (demo; test is tiny)")
    demo.set_defaults(func=_one_line_errors(_cmd_demo))

    names = ", ".join(sorted(n for n in job_types() if n != "import")) or "none"
    run = subparsers.add_parser("run", help="create and launch a job in a session")
    run.add_argument("type", metavar="TYPE", help=f"job type ({names})")
    run.add_argument("--session", required=True, metavar="DIR")
    run.add_argument("--preset", metavar="NAME", help="start from a preset (e.g. demo, tutorial-bin6)")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="set a parameter (attribute or job.star name); repeatable")
    run.add_argument("--alias", metavar="NAME", help="alias of the new job")
    run.add_argument("--wait", action="store_true", help="follow the job with a progress bar until it ends")
    run.add_argument("--no-launch", action="store_true", help="only create the job (Scheduled)")
    run.set_defaults(func=_one_line_errors(_cmd_run))

    jobs = subparsers.add_parser("jobs", help="list a session's jobs and their statuses")
    jobs.add_argument("dir", metavar="DIR")
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=_one_line_errors(_cmd_jobs))

    ab = subparsers.add_parser("abort", help="abort a running job")
    ab.add_argument("job", metavar="JOB", help="job directory or alias (or a name with --session)")
    ab.add_argument("--session", metavar="DIR")
    ab.add_argument("--grace", type=float, default=30.0, help="seconds to wait before SIGTERM (30)")
    ab.add_argument("--term-grace", type=float, default=10.0, help="seconds after SIGTERM before SIGKILL (10)")
    ab.add_argument("--no-wait", action="store_true", help="request the abort and return at once")
    ab.set_defaults(func=_one_line_errors(_cmd_abort))

    co = subparsers.add_parser("continue", help="continue a stopped job in its directory")
    co.add_argument("job", metavar="JOB")
    co.add_argument("--session", metavar="DIR")
    co.add_argument("--wait", action="store_true")
    co.set_defaults(func=_one_line_errors(_cmd_continue))

    pr = subparsers.add_parser("presets", help="list presets (built-in, user, session)")
    pr.add_argument("--session", metavar="DIR")
    pr.add_argument("--type", metavar="TYPE")
    pr.set_defaults(func=_one_line_errors(_cmd_presets))
