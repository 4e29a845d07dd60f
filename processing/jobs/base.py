"""Job parameter classes: one ``param.Parameterized`` class per job type.

A job's parameters are declared once. Each parameter carries, in ``metadata``:

* ``tab`` — the RELION GUI tab it lives on (I/O, Reference, ..., Running);
* ``var`` — its RELION job.star variable name (``rlnJobOptionVariable``);

and in the ordinary param slots its GUI ``label``, its help text (``doc``) and its bounds.
The same class then drives the browser form, the command line, validation and the saved
``job.star``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import param

from processing.errors import InputError
from processing.io.jobstar import JobStar

__all__ = ["JobParameters", "FieldProblem", "yes_no", "parse_yes_no", "bound_message", "CCPEM_OPTION_NAMES",
           "with_ccpem_keys"]


def yes_no(value: bool) -> str:
    """RELION's job.star spelling of a boolean."""
    return "Yes" if value else "No"


def parse_yes_no(text: str, *, field: str) -> bool:
    """Parse RELION's Yes/No (also accepting 1/0, true/false)."""
    lowered = str(text).strip().lower()
    if lowered in ("yes", "1", "true"):
        return True
    if lowered in ("no", "0", "false", ""):
        return False
    raise InputError(f"expected Yes or No, got {text!r}", column=field)


def bound_message(p: param.Parameter, value: Any, exc: Exception) -> str:
    """A user-facing sentence for a value param rejected."""
    bounds = getattr(p, "bounds", None)
    if bounds is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = bounds
        if lo is not None and value < lo:
            return f"must be at least {lo:g} (got {value:g})"
        if hi is not None and value > hi:
            return f"must be at most {hi:g} (got {value:g})"
    return f"has an invalid value {value!r}"


class FieldProblem(tuple):
    """A validation message attached to one field: ``(field_name, message)``."""

    __slots__ = ()

    def __new__(cls, field: str, message: str) -> "FieldProblem":
        return super().__new__(cls, (field, message))

    @property
    def field(self) -> str:
        return self[0]

    @property
    def message(self) -> str:
        return self[1]


#: job.star keys the CCP-EM pipeliner uses instead of RELION's (project spec 13.1), per type label.
CCPEM_OPTION_NAMES: dict[str, dict[str, str]] = {
    "relion.pseudosubtomo": {"binning": "binfactor", "use_direct_entries": "do_use_direct_entries",
                             "min_frames": "min_nr_frames", "do_stack2d": "do_output_2dstacks"},
    "relion.reconstructparticletomo": {"binning": "binfactor", "snr": "Wiener_SNR", "sym_name": "point_group",
                                       "use_direct_entries": "do_use_direct_entries", "do_helix": "do_helical"},
}


def with_ccpem_keys(type_label: str, options: dict[str, str]) -> dict[str, str]:
    """``options`` plus the CCP-EM pipeliner's names for the same values (extra rows that
    RELION and tomodash ignore), so both readers get the job's real settings (spec 13.1)."""
    out = dict(options)
    for relion_key, ccpem_key in CCPEM_OPTION_NAMES.get(type_label, {}).items():
        if relion_key in options and ccpem_key not in options:
            out[ccpem_key] = options[relion_key]
    if "nr_mpi" in options and "mpi_command" not in options:
        out["mpi_command"] = "mpirun -n XXXmpinodesXXX"
    return out



class JobParameters(param.Parameterized):
    """Base of all job parameter classes.

    Subclasses set the class variables below and declare their parameters with
    ``metadata={"tab": ..., "var": ...}``. The Running tab (MPI, threads, queue) is shared.
    """

    #: RELION process type label written to job.star (``rlnJobTypeLabel``).
    job_type_label: ClassVar[str] = ""
    #: Directory of this job type in a project (``Extract``, ``Reconstruct``, ``Refine3D``).
    process_dir: ClassVar[str] = ""
    #: ``rlnJobIsTomo`` as RELION writes it for this type.
    is_tomo: ClassVar[bool] = False
    #: GUI tabs, in order.
    tabs: ClassVar[tuple[str, ...]] = ("Running",)

    nr_mpi = param.Integer(
        1, bounds=(1, 64), label="Number of MPI procs:",
        doc="Number of MPI processes. Each process handles its own share of the data; "
            "more processes use more memory but finish sooner.",
        metadata={"tab": "Running", "var": "nr_mpi"},
    )
    nr_threads = param.Integer(
        1, bounds=(1, 64), label="Number of threads:",
        doc="Threads inside each MPI process (shared-memory parallelism).",
        metadata={"tab": "Running", "var": "nr_threads", "flag": "--j"},
    )
    do_queue = param.Boolean(
        False, label="Submit to queue?",
        doc="Submit the job to a cluster queue through the submission template instead of "
            "running it on this machine.",
        metadata={"tab": "Running", "var": "do_queue"},
    )
    queuename = param.String(
        "openmpi", label="Queue name: ",
        doc="Name of the queue (partition) to submit to; replaces XXXqueueXXX in the template.",
        metadata={"tab": "Running", "var": "queuename"},
    )
    qsub = param.String(
        "sbatch", label="Queue submit command:",
        doc="Command used to submit the script, e.g. sbatch.",
        metadata={"tab": "Running", "var": "qsub"},
    )
    qsubscript = param.String(
        "", label="Standard submission script:",
        doc="Template of the submission script, with RELION's XXX...XXX placeholders.",
        metadata={"tab": "Running", "var": "qsubscript"},
    )
    min_dedicated = param.Integer(
        1, bounds=(1, 64), label="Minimum dedicated cores per node:",
        doc="Minimum number of dedicated cores per node (XXXdedicatedXXX in the template).",
        metadata={"tab": "Running", "var": "min_dedicated"},
    )
    other_args = param.String(
        "", label="Additional arguments:",
        doc="Extra command-line arguments appended to the program's command line.",
        metadata={"tab": "Running", "var": "other_args"},
    )

    # ---- introspection -------------------------------------------------------------------

    @classmethod
    def fields(cls) -> list[str]:
        """Names of the job's parameters (those with a job.star variable), in declaration order."""
        return [
            name for name, p in cls.param.objects("existing").items()
            if p.metadata and "var" in p.metadata
        ]

    @classmethod
    def fields_by_tab(cls) -> dict[str, list[str]]:
        """Parameter names grouped by GUI tab, tabs in ``cls.tabs`` order."""
        grouped: dict[str, list[str]] = {tab: [] for tab in cls.tabs}
        for name in cls.fields():
            tab = cls.param[name].metadata["tab"]
            if tab not in grouped:
                raise RuntimeError(f"{cls.__name__}.{name}: tab {tab!r} not in {cls.tabs}")
            grouped[tab].append(name)
        return grouped

    # ---- job.star ------------------------------------------------------------------------

    def to_job_options(self) -> dict[str, str]:
        """All options as job.star strings, keyed by job.star variable."""
        options: dict[str, str] = {}
        for name in self.fields():
            p = self.param[name]
            value = getattr(self, name)
            options[p.metadata["var"]] = self._format_value(p, value)
        return options

    def own_command(self, job_dir: str | os.PathLike, *, is_continue: bool = False,
                    program: str | None = None) -> str | None:
        """This job's command line when its program takes no tomography input block (mask
        creation, post-processing, subset selection); None: the common form built by
        :func:`processing.jobs.relion_params.relion_command` from the declared flags.
        ``program`` replaces ``tomodash <cli_name>`` (RELION's program name, for note.txt)."""
        return None

    def process_type_label(self) -> str:
        """This job's full process type label (``rlnJobTypeLabel``): the class's label plus any
        sub-label RELION appends for the chosen options (``relion.select.removeduplicates``)."""
        return type(self).job_type_label

    def write_job_star(self, job_dir: str | os.PathLike, *, is_continue: bool = False) -> None:
        """Write ``job_dir/job.star`` (atomically): the options under RELION's keys, plus the
        CCP-EM pipeliner's names for the same values. The one job.star writer of every job."""
        label = self.process_type_label()
        JobStar(type_label=label, is_continue=is_continue, is_tomo=type(self).is_tomo,
                options=with_ccpem_keys(label, self.to_job_options())).write(Path(job_dir) / "job.star")

    @staticmethod
    def _format_value(p: param.Parameter, value: Any) -> str:
        if isinstance(p, param.Boolean):
            return yes_no(bool(value))
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)

    @classmethod
    def from_job_options(cls, options: dict[str, str], *, source: str | None = None) -> "JobParameters":
        """Build parameters from job.star strings; unknown variables are ignored as RELION does."""
        by_var = {cls.param[name].metadata["var"]: name for name in cls.fields()}
        values: dict[str, Any] = {}
        for var, text in options.items():
            name = by_var.get(var)
            if name is None:
                continue
            values[name] = cls._parse_value(cls.param[name], text, field=var, source=source)
        return cls.from_values(values, source=source)

    @classmethod
    def from_values(cls, values: dict[str, Any], *, source: str | None = None) -> "JobParameters":
        """Build parameters from Python values, turning param's bound/type errors into
        :class:`InputError` messages that name the field (e.g. an MPI count below 1)."""
        obj = cls()
        for name, value in values.items():
            try:
                setattr(obj, name, value)
            except ValueError as exc:
                p = cls.param[name]
                raise InputError(
                    f"{p.label.strip()} {bound_message(p, value, exc)}",
                    file=source, column=p.metadata.get("var", name) if p.metadata else name,
                ) from None
        return obj

    @staticmethod
    def _parse_value(p: param.Parameter, text: str, *, field: str, source: str | None) -> Any:
        try:
            if isinstance(p, param.Boolean):
                return parse_yes_no(text, field=field)
            if isinstance(p, param.Integer):
                return int(float(text))
            if isinstance(p, param.Number):
                return float(text)
            if isinstance(p, param.Selector):
                return text
            return str(text)
        except InputError as exc:
            raise InputError(exc.message, file=source, table="joboptions_values", column=field) from None
        except ValueError:
            raise InputError(
                f"value {text!r} is not a number", file=source, table="joboptions_values", column=field
            ) from None

    # ---- validation ----------------------------------------------------------------------

    def problems(self) -> list[FieldProblem]:
        """Everything wrong with the current values, each attached to a field.

        Subclasses extend this with cross-field rules; bounds are enforced by param itself.
        """
        out: list[FieldProblem] = []
        if self.nr_mpi < 1:
            out.append(FieldProblem("nr_mpi", "the number of MPI processes must be at least 1"))
        return out

    def check(self) -> None:
        """Raise :class:`InputError` naming the first problem's field, if any."""
        found = self.problems()
        if found:
            first = found[0]
            label = self.param[first.field].label
            raise InputError(f"{label.strip()} {first.message}", column=first.field)


def queue_extra_parameters(environ: "os._Environ[str] | dict[str, str]") -> dict[str, param.String]:
    """The site's extra queue fields, as RELION's GUI makes them from its environment:
    ``RELION_QSUB_EXTRA_COUNT`` fields (default 2), field *i* shown only when
    ``RELION_QSUB_EXTRAi`` (its label) is set, with ``RELION_QSUB_EXTRAi_DEFAULT`` and
    ``RELION_QSUB_EXTRAi_HELP``. Their values fill ``XXXextraiXXX`` in the submission template
    (e.g. ``#SBATCH --gres=gpu:XXXextra1XXX`` for the GPUs of a GPU job)."""
    try:
        count = int(environ.get("RELION_QSUB_EXTRA_COUNT", "2"))
    except ValueError:
        count = 2
    fields = {}
    for i in range(1, count + 1):
        label = environ.get(f"RELION_QSUB_EXTRA{i}", "").strip()
        if not label:
            continue
        fields[f"qsub_extra{i}"] = param.String(
            environ.get(f"RELION_QSUB_EXTRA{i}_DEFAULT", ""), label=label,
            doc=environ.get(f"RELION_QSUB_EXTRA{i}_HELP", "") or f"Fills XXXextra{i}XXX in the submission template.",
            metadata={"tab": "Running", "var": f"qsub_extra{i}"})
    return fields


for _name, _field in queue_extra_parameters(os.environ).items():
    JobParameters.param.add_parameter(_name, _field)
