"""RELION ``job.star`` files (project spec section 7).

::

    # version 50001
    data_job                      (list)
    _rlnJobTypeLabel    relion.refine3d.tomo
    _rlnJobIsContinue   0
    _rlnJobIsTomo       1
    # version 50001
    data_joboptions_values        (loop)
    _rlnJobOptionVariable #1
    _rlnJobOptionValue #2

Option values are strings: booleans ``Yes``/``No``, radio options the displayed text
(``"7.5 degrees"``, quoted because of the space), numbers formatted shortest (``1``,
``4.75``), empty strings ``""``. Rows are written sorted by variable name in byte order
(RELION keeps them in a ``std::map``). The same format serves presets and ``.gui_*job.star``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import pandas as pd

from ..errors import InputError
from .star import list_value, read_star, require_columns, write_star

__all__ = ["JobStar", "read_job_star", "write_job_star", "format_option", "option_is_true"]


def format_option(value: object) -> str:
    """An option value as job.star stores it: bool -> ``Yes``/``No``, numbers shortest."""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return "" if value is None else str(value)


def option_is_true(value: str) -> bool:
    """Interpret a job.star boolean (``Yes``/``No``; also true/false/1/0).

    Raises
    ------
    InputError
        For any other text.
    """
    text = str(value).strip().lower()
    if text in ("yes", "true", "1"):
        return True
    if text in ("no", "false", "0"):
        return False
    raise InputError(f"expected Yes or No, found {value!r}")


@dataclass
class JobStar:
    """Contents of a job.star.

    Attributes
    ----------
    type_label
        ``rlnJobTypeLabel``, e.g. ``relion.refine3d.tomo``.
    is_continue
        ``rlnJobIsContinue``.
    is_tomo
        ``rlnJobIsTomo`` (False when absent).
    options
        Option variable -> value string.
    """

    type_label: str
    is_continue: bool = False
    is_tomo: bool = False
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: str | PathLike) -> JobStar:
        """Read a job.star (``rlnJobTypeLabel`` or legacy integer ``rlnJobType``).

        Raises
        ------
        InputError
            Missing/corrupt file, missing ``data_job``/``data_joboptions_values`` tables or
            labels.
        """
        path = Path(path)
        blocks = read_star(path, parse_as_string=["rlnJobTypeLabel", "rlnJobOptionVariable", "rlnJobOptionValue"])
        job = blocks.get("job")
        if not isinstance(job, dict):
            raise InputError("list table data_job not found", file=path, table="job")
        if "rlnJobTypeLabel" in job:
            label = list_value(job, "rlnJobTypeLabel", str, file=path, table="job")
        elif "rlnJobType" in job:
            label = str(list_value(job, "rlnJobType", int, file=path, table="job"))
        else:
            raise InputError("compulsory label is missing", file=path, table="job", column="rlnJobTypeLabel")
        is_continue = list_value(job, "rlnJobIsContinue", bool, file=path, table="job", default=False)
        is_tomo = list_value(job, "rlnJobIsTomo", bool, file=path, table="job", default=False)
        options: dict[str, str] = {}
        table = blocks.get("joboptions_values")
        if table is None:
            raise InputError("table data_joboptions_values not found", file=path, table="joboptions_values")
        if isinstance(table, dict):  # a single option may have been written as a list
            table = pd.DataFrame([table])
        require_columns(table, ["rlnJobOptionVariable", "rlnJobOptionValue"], file=path, table="joboptions_values")
        for key, value in zip(table["rlnJobOptionVariable"].tolist(), table["rlnJobOptionValue"].tolist()):
            options[str(key)] = "" if value is None else str(value)
        return cls(type_label=label, is_continue=is_continue, is_tomo=is_tomo, options=options)

    def write(self, path: str | PathLike) -> None:
        """Write atomically, options sorted by variable name (byte order)."""
        keys = sorted(self.options, key=lambda k: k.encode())
        table = pd.DataFrame(
            {
                "rlnJobOptionVariable": pd.Series(keys, dtype=object),
                "rlnJobOptionValue": pd.Series([format_option(self.options[k]) for k in keys], dtype=object),
            }
        )
        job = {
            "rlnJobTypeLabel": self.type_label,
            "rlnJobIsContinue": bool(self.is_continue),
            "rlnJobIsTomo": bool(self.is_tomo),
        }
        write_star(path, {"job": job, "joboptions_values": table})

    def flag(self, name: str) -> bool:
        """A Yes/No option as bool (:class:`InputError` if absent or not Yes/No)."""
        if name not in self.options:
            raise InputError("job option is missing", column=name)
        try:
            return option_is_true(self.options[name])
        except InputError:
            raise InputError(f"expected Yes or No, found {self.options[name]!r}", column=name) from None

    def update(self, values: Mapping[str, object]) -> None:
        """Set options from Python values (formatted with :func:`format_option`)."""
        for key, value in values.items():
            self.options[key] = format_option(value)


def read_job_star(path: str | PathLike) -> JobStar:
    """Read a job.star; see :meth:`JobStar.read`."""
    return JobStar.read(path)


def write_job_star(job: JobStar, path: str | PathLike) -> None:
    """Write a job.star; see :meth:`JobStar.write`."""
    job.write(path)
