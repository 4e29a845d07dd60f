"""A processing session on disk: a RELION 5 project directory (project spec sections 1-10).

::

    <session>/
      default_pipeline.star   the job graph (sessions.pipeline)
      .gui_projectdir         marks a RELION project
      tomodash.toml           session settings
      presets/<name>.star     saved parameter sets (job.star format)
      <Dir>/jobNNN/           job.star, job_pipeline.star, note.txt, run.out/err, exit markers
      <Dir>/<alias>           -> ../<Dir>/jobNNN/

Every change of the pipeline happens under the session lock (:mod:`sessions.lock`): read,
modify, write atomically. All state is in files, so any number of processes (dashboards, the
command line, RELION) can share a session.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from processing.errors import InputError
from processing.io.atomic import atomic_write
from processing.io.jobstar import JobStar
from processing.jobs.base import FieldProblem, JobParameters

from .aliases import clean_alias, make_alias_link, remove_alias_link
from .jobtypes import JobType, get_job_type, job_type_for_label
from .lock import SessionLock, session_lock
from .nodes import touch_process_nodes
from .pipeline import (
    ABORTED, FAILED, RUNNING, SCHEDULED, STATUSES, SUCCEEDED, Pipeline, Process, job_dir_name,
    parse_job_number,
)
from .settings import read_settings, write_settings

__all__ = [
    "PIPELINE_FILE", "JobInfo", "JobValidationError", "Session", "find_session",
    "exit_marker_status", "write_note",
]

PIPELINE_FILE = "default_pipeline.star"
JOB_PIPELINE_FILE = "job_pipeline.star"
RUN_RECORD = "tomodash_run.json"

#: RELION exit markers and the status each means (checked in this order, as RELION does).
EXIT_MARKERS: tuple[tuple[str, str], ...] = (
    ("RELION_JOB_EXIT_SUCCESS", SUCCEEDED),
    ("RELION_JOB_EXIT_FAILURE", FAILED),
    ("RELION_JOB_EXIT_ABORTED", ABORTED),
)
#: The CCP-EM pipeliner's markers for the same states (spec 13.1); written alongside ours.
PIPELINER_MARKERS: dict[str, str] = {
    SUCCEEDED: "PIPELINER_JOB_EXIT_SUCCESS",
    FAILED: "PIPELINER_JOB_EXIT_FAILED",
    ABORTED: "PIPELINER_JOB_EXIT_ABORTED",
}


class JobValidationError(InputError):
    """The parameters of a new job are invalid; nothing was created.

    Attributes
    ----------
    problems : list of ``FieldProblem`` (field, message).
    """

    def __init__(self, problems: list[FieldProblem], params_class: type[JobParameters]):
        self.problems = list(problems)
        first = problems[0]
        p = params_class.param[first.field] if first.field in params_class.param else None
        label = p.label.strip() if p is not None and p.label else first.field
        extra = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{label} {first.message}{extra}", column=first.field)


@dataclass(frozen=True)
class JobInfo:
    """A job as listed for the dashboard and the command line."""

    name: str
    type_label: str
    status: str
    alias: str | None
    path: Path
    job_type: str | None

    @property
    def display_name(self) -> str:
        return self.alias or self.name


def exit_marker_status(job_dir: Path) -> str | None:
    """The status a job's exit marker says (``None`` when there is none)."""
    for marker, status in EXIT_MARKERS:
        if (job_dir / marker).exists():
            return status
    return None


def write_note(job_dir: Path, commands: list[str]) -> None:
    """Append a RELION-style launch entry to ``note.txt`` (spec 10.1)."""
    stamp = time.ctime()
    with open(job_dir / "note.txt", "a", encoding="utf-8") as note:
        note.write(f"\n ++++ Executing new job on {stamp}\n ++++ with the following command(s): \n")
        for command in commands:
            note.write(command + "\n")
        note.write(" ++++ \n")


class Session:
    """One session directory.

    Parameters
    ----------
    root
        The directory (it must already hold ``default_pipeline.star``; see :meth:`create`).
    lock_timeout
        Seconds to wait for the session lock.
    """

    def __init__(self, root: str | os.PathLike, *, lock_timeout: float = 120.0):
        self.root = Path(root).resolve()
        self.lock_timeout = lock_timeout
        if not (self.root / PIPELINE_FILE).is_file():
            raise InputError(f"not a session (no {PIPELINE_FILE})", file=self.root)

    # ---- creation -------------------------------------------------------------------------

    @classmethod
    def create(cls, root: str | os.PathLike, *, title: str | None = None,
               exist_ok: bool = False) -> "Session":
        """Make a new, empty session (pipeline with job counter 1).

        Raises
        ------
        InputError
            If ``root`` already is a session and ``exist_ok`` is false, or is a non-empty
            directory that is not a session.
        """
        root = Path(root).resolve()
        if (root / PIPELINE_FILE).exists():
            if exist_ok:
                return cls(root)
            raise InputError("a session already exists here", file=root)
        if root.exists() and any(p for p in root.iterdir() if not p.name.startswith(".")):
            raise InputError("directory is not empty; choose a new directory for the session", file=root)
        root.mkdir(parents=True, exist_ok=True)
        (root / "presets").mkdir(exist_ok=True)
        (root / ".gui_projectdir").touch()
        with session_lock(root, "create session"):
            if not (root / PIPELINE_FILE).exists():
                Pipeline(job_counter=1).write(root / PIPELINE_FILE)
            write_settings(root, {"title": title or root.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "tomodash_format": 1})
        return cls(root)

    @classmethod
    def open(cls, root: str | os.PathLike) -> "Session":
        return cls(root)

    @staticmethod
    def is_session(path: str | os.PathLike) -> bool:
        return (Path(path) / PIPELINE_FILE).is_file() and not (Path(path) / "job.star").is_file()

    # ---- settings -------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        return read_settings(self.root)

    def update_settings(self, **values: Any) -> dict[str, Any]:
        with self.lock("settings"):
            current = read_settings(self.root)
            current.update(values)
            write_settings(self.root, current)
        return current

    # ---- pipeline ---------------------------------------------------------------------------

    @property
    def pipeline_path(self) -> Path:
        return self.root / PIPELINE_FILE

    @contextmanager
    def lock(self, reason: str = "tomodash") -> Iterator[SessionLock]:
        with session_lock(self.root, reason, timeout=self.lock_timeout) as lock:
            yield lock

    def read_pipeline(self) -> Pipeline:
        """The current pipeline (no lock needed: it is always replaced atomically)."""
        return Pipeline.read(self.pipeline_path)

    @contextmanager
    def edit_pipeline(self, reason: str = "tomodash") -> Iterator[Pipeline]:
        """Lock, read, let the caller modify, write back atomically, unlock."""
        with self.lock(reason):
            pipe = self.read_pipeline()
            yield pipe
            pipe.write(self.pipeline_path)

    # ---- jobs -------------------------------------------------------------------------------

    def _info(self, proc: Process) -> JobInfo:
        jt = job_type_for_label(proc.type_label)
        return JobInfo(proc.name, proc.type_label, proc.status, proc.alias,
                       self.root / proc.name, jt.name if jt else None)

    def jobs(self) -> list[JobInfo]:
        """All jobs in creation order (statuses as recorded; see ``runner.refresh``)."""
        return [self._info(p) for p in self.read_pipeline().processes]

    def resolve_job(self, job: str | os.PathLike) -> str:
        """The process name (``Dir/jobNNN/``) of a job given by name, alias or path.

        Raises
        ------
        InputError
            If the session has no such job.
        """
        text = str(job)
        path = Path(text)
        if path.is_absolute():
            for base, candidate in ((self.root, path), (self.root, path.parent.resolve() / path.name)):
                try:
                    text = candidate.relative_to(base).as_posix()
                    break
                except ValueError:
                    continue
            else:
                raise InputError("job is not inside this session", file=path)
        text = text.strip("/").removeprefix("./")
        proc = self.read_pipeline().find_process(text)
        if proc is None:
            raise InputError(f"no job {job!s} in this session", file=self.root)
        return proc.name

    def job(self, job: str | os.PathLike) -> JobInfo:
        name = self.resolve_job(job)
        return self._info(self.read_pipeline().process(name))

    def job_path(self, job: str | os.PathLike) -> Path:
        return self.root / self.resolve_job(job)

    def read_job_star(self, job: str | os.PathLike) -> JobStar:
        return JobStar.read(self.job_path(job) / "job.star")

    def read_params(self, job: str | os.PathLike) -> JobParameters:
        """The parameters of a job, from its job.star."""
        info = self.job(job)
        jt = get_job_type(info.job_type) if info.job_type else None
        if jt is None:
            raise InputError(f"unknown job type {info.type_label!r}", file=info.path / "job.star")
        return jt.params_class.from_job_options(self.read_job_star(info.name).options,
                                                source=str(info.path / "job.star"))

    # ---- validation -------------------------------------------------------------------------

    def _input_fields(self, params: JobParameters) -> list[str]:
        """Fields that name an input node and are in use (RELION's direct-entry rule, 8.2)."""
        names = []
        direct = getattr(params, "use_direct_entries", None)
        for name in params.fields():
            meta = params.param[name].metadata or {}
            if "node" not in meta or not getattr(params, name):
                continue
            if direct is True and name == "in_optimisation":
                continue
            if direct is False and name in ("in_particles", "in_tomograms", "in_trajectories"):
                continue
            names.append(name)
        return names

    def validate(self, params: JobParameters) -> list[FieldProblem]:
        """Problems of ``params`` with input paths taken relative to the session directory.

        The parameter classes check input files relative to the working directory; here the
        check runs on a copy whose relative paths are made absolute within the session, so it
        is thread-safe and independent of the caller's working directory.
        """
        probe = type(params)(**{n: getattr(params, n) for n in params.fields()})
        pipe = self.read_pipeline()
        pending: set[str] = set()
        for name in params.fields():
            meta = params.param[name].metadata or {}
            value = getattr(probe, name)
            if ("node" in meta or "pattern" in meta) and isinstance(value, str) and value \
                    and not os.path.isabs(value):
                real = pipe.resolve_alias_path(value)
                setattr(probe, name, str(self.root / real))
                producer = pipe.producer_of(real)
                if producer is not None and pipe.process(producer).status in (SCHEDULED, RUNNING):
                    pending.add(name)  # a future output of a queued job: RELION accepts it too
        return [p for p in probe.problems()
                if not (p.field in pending and p.message.startswith("file does not exist"))]

    # ---- creating jobs --------------------------------------------------------------------

    def _existing_numbers(self) -> set[int]:
        numbers: set[int] = set()
        for child in self.root.iterdir():
            if not child.is_dir() or child.name.startswith("."):
                continue
            for sub in child.glob("job[0-9][0-9][0-9]*"):
                parsed = parse_job_number(f"{child.name}/{sub.name}/")
                if parsed and not sub.is_symlink():
                    numbers.add(parsed[1])
        return numbers

    def create_job(self, job_type: str | JobType, params: JobParameters, *, alias: str | None = None,
                   status: str = SCHEDULED, is_continue: bool = False) -> JobInfo:
        """Validate, then create ``<Dir>/jobNNN/`` with job.star and register it in the pipeline.

        Nothing is written when validation fails (:class:`JobValidationError`), and a failure
        while creating the directory removes it again, leaving the pipeline untouched.

        Parameters
        ----------
        job_type
            Registry name (``extract``) or :class:`JobType`.
        params
            The job's parameters (an instance of the type's parameter class).
        alias
            Optional alias (RELION rules, section 10.6).
        status
            Initial status (``Scheduled``; the runner sets ``Running`` when it launches).

        Returns
        -------
        JobInfo
        """
        jt = get_job_type(job_type) if isinstance(job_type, str) else job_type
        cls = jt.params_class
        if not isinstance(params, cls):
            raise TypeError(f"{jt.name} jobs take {cls.__name__}, not {type(params).__name__}")
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        problems = self.validate(params)
        if problems:
            raise JobValidationError(problems, cls)
        alias_clean = clean_alias(alias) if alias else None

        with self.lock(f"create {jt.name} job"):
            pipe = self.read_pipeline()
            number = pipe.next_job_number(self._existing_numbers())
            name = job_dir_name(cls.process_dir, number)
            alias_path = f"{cls.process_dir}/{alias_clean}/" if alias_clean else None
            if alias_path and pipe.find_process(alias_path):
                raise InputError(f"alias {alias_clean!r} is already used in {cls.process_dir}/", column="alias")
            if alias_clean and (self.root / cls.process_dir / alias_clean).exists() \
                    and not (self.root / cls.process_dir / alias_clean).is_symlink():
                raise InputError(f"{cls.process_dir}/{alias_clean} exists and is not an alias", column="alias")
            job_dir = self.root / name
            job_dir.parent.mkdir(parents=True, exist_ok=True)
            job_dir.mkdir()  # fails if it exists: never reuse a stray directory
            try:
                # Input paths through aliases become real job paths (as RELION does).
                for field in self._input_fields(params):
                    setattr(params, field, pipe.resolve_alias_path(getattr(params, field)))
                params.write_job_star(job_dir, is_continue=is_continue)
                proc = Process(name, params.process_type_label(), status, alias_path)
                pipe.processes.append(proc)
                self._register_nodes(pipe, proc, jt, params)
                pipe.job_counter = number + 1
                self._write_job_pipeline(pipe, proc)
                if alias_clean:
                    make_alias_link(self.root, cls.process_dir, alias_clean, name)
                pipe.write(self.pipeline_path)
            except BaseException:
                shutil.rmtree(job_dir, ignore_errors=True)
                if alias_clean:
                    link = self.root / cls.process_dir / alias_clean
                    if link.is_symlink() and os.readlink(link) == f"../{name}":
                        link.unlink()
                raise
            try:
                touch_process_nodes(self.root, pipe, proc)
            except OSError:
                pass
        return self._info(proc)

    def _register_nodes(self, pipe: Pipeline, proc: Process, jt: JobType, params: JobParameters) -> None:
        for field in self._input_fields(params):
            path = getattr(params, field)
            generic = params.param[field].metadata["node"]
            if pipe.node(path) is None:
                producer = next((p for p in pipe.processes if p is not proc and path.startswith(p.name)), None)
                label = generic
                if producer is not None:
                    pjt = job_type_for_label(producer.type_label)
                    rest = path[len(producer.name):]
                    for out in (pjt.outputs if pjt else ()):
                        if out.filename == rest:
                            label = out.type_label
                    pipe.add_node(path, label)
                    pipe.add_output_edge(producer.name, path)
                else:
                    pipe.add_node(path, label)
            pipe.add_input_edge(path, proc.name)
        for out in jt.outputs_for(params):
            node = pipe.add_node(proc.name + out.filename, out.type_label, out.depth)
            pipe.add_output_edge(proc.name, node.name)

    def refresh_output_nodes(self, job: str, params: JobParameters) -> None:
        """Before a continued run of a job whose outputs depend on its parameters (3D
        classification: the last iteration's files), as RELION's ``runJob`` does for Class3D,
        Refine3D, ...: output nodes whose files do not exist are dropped (unless another job
        takes them as input), and the outputs of the new parameters (more iterations) added."""
        jt = job_type_for_label(self.job(job).type_label)
        with self.edit_pipeline(f"refresh outputs of {job}") as pipe:
            proc = pipe.process(self.resolve_job(job))
            used = {n for n, _ in pipe.input_edges}
            for name in pipe.outputs_of(proc.name):
                if not (self.root / name).exists() and name not in used:
                    pipe.output_edges.remove((proc.name, name))
                    pipe.nodes = [n for n in pipe.nodes if n.name != name]
            for out in jt.outputs_for(params):
                node = pipe.add_node(proc.name + out.filename, out.type_label, out.depth)
                pipe.add_output_edge(proc.name, node.name)
            pipe.sort_edges()
            self._write_job_pipeline(pipe, proc)

    def _write_job_pipeline(self, pipe: Pipeline, proc: Process) -> None:
        """``<jobdir>/job_pipeline.star``: just this process, its input and output nodes."""
        mini = Pipeline(job_counter=2, processes=[Process(proc.name, proc.type_label, proc.status, proc.alias)])
        for node_name in pipe.inputs_of(proc.name) + pipe.outputs_of(proc.name):
            node = pipe.node(node_name)
            if node is not None:
                mini.add_node(node.name, node.type_label, node.depth)
        mini.input_edges = [(n, p) for n, p in pipe.input_edges if p == proc.name]
        mini.output_edges = [(p, n) for p, n in pipe.output_edges if p == proc.name]
        mini.write(self.root / proc.name / JOB_PIPELINE_FILE)

    def add_output_node(self, job: str, filename: str, type_label: str, depth: int = 1) -> None:
        """Register an extra output file of a job (e.g. one a job only knows at run time)."""
        with self.edit_pipeline("add output node") as pipe:
            proc = pipe.process(self.resolve_job(job))
            node = pipe.add_node(proc.name + filename, type_label, depth)
            pipe.add_output_edge(proc.name, node.name)

    # ---- status and aliases ---------------------------------------------------------------

    def set_status(self, job: str, status: str, *, touch_markers: bool = False) -> JobInfo:
        """Record ``status`` for ``job`` in the pipeline.

        With ``touch_markers``, a final status also leaves the matching RELION and CCP-EM exit
        markers in the job directory, so every reader agrees.
        """
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {STATUSES}")
        with self.edit_pipeline(f"set status {status}") as pipe:
            proc = pipe.process(self.resolve_job(job))
            proc.status = status
            job_dir = self.root / proc.name
            if touch_markers and status in (SUCCEEDED, FAILED, ABORTED):
                mark_final(job_dir, status)
            if status == SUCCEEDED:
                touch_process_nodes(self.root, pipe, proc)
            try:
                self._write_job_pipeline(pipe, proc)
            except OSError:
                pass
        return self._info(proc)

    def set_alias(self, job: str, alias: str | None) -> JobInfo:
        """Give a job an alias (``None`` or ``""`` removes it), with its symlink."""
        with self.edit_pipeline("set alias") as pipe:
            proc = pipe.process(self.resolve_job(job))
            if proc.alias:
                remove_alias_link(self.root, proc.alias)
                shutil.rmtree(self.root / ".Nodes", ignore_errors=True)  # a cache; rebuilt below
            if alias:
                cleaned = clean_alias(alias)
                alias_path = f"{proc.directory}/{cleaned}/"
                other = pipe.find_process(alias_path)
                if other is not None and other.name != proc.name:
                    raise InputError(f"alias {cleaned!r} is already used in {proc.directory}/", column="alias")
                make_alias_link(self.root, proc.directory, cleaned, proc.name)
                proc.alias = alias_path
            else:
                proc.alias = None
            for p in pipe.processes:
                if p.status in (SUCCEEDED, SCHEDULED):
                    touch_process_nodes(self.root, pipe, p)
        return self._info(proc)

    def remake_nodes(self) -> None:
        """Rebuild ``.Nodes/`` from the pipeline (RELION's File/Remake .Nodes)."""
        shutil.rmtree(self.root / ".Nodes", ignore_errors=True)
        pipe = self.read_pipeline()
        for p in pipe.processes:
            touch_process_nodes(self.root, pipe, p)


def mark_final(job_dir: Path, status: str) -> None:
    """Leave exactly the exit markers of ``status`` (RELION's and the CCP-EM pipeliner's)."""
    for marker, st in EXIT_MARKERS:
        if st != status:
            (job_dir / marker).unlink(missing_ok=True)
    for st, marker in PIPELINER_MARKERS.items():
        if st != status:
            (job_dir / marker).unlink(missing_ok=True)
    relion = next(m for m, st in EXIT_MARKERS if st == status)
    for name in (relion, PIPELINER_MARKERS[status]):
        if not (job_dir / name).exists():
            with atomic_write(job_dir / name) as handle:
                handle.write("")


def find_session(path: str | os.PathLike) -> tuple[Session, str | None]:
    """The session containing ``path`` and the job it names (``None`` for the session itself).

    ``path`` may be a session directory, a job directory or alias inside one, or a job name
    relative to the current directory.

    Raises
    ------
    InputError
        If no enclosing directory holds ``default_pipeline.star``.
    """
    p = Path(path)
    absolute = p if p.is_absolute() else Path.cwd() / p
    candidate = absolute
    while True:
        # A job directory holds a backup default_pipeline.star too, but also a job.star.
        if (candidate / PIPELINE_FILE).is_file() and not (candidate / "job.star").is_file():
            session = Session(candidate)
            if candidate == absolute:
                return session, None
            rel = absolute.relative_to(candidate).as_posix()
            return session, session.resolve_job(rel)
        if candidate.parent == candidate:
            raise InputError("not inside a session (no default_pipeline.star above it)", file=p)
        candidate = candidate.parent
