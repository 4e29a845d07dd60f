"""The one error type raised for bad input anywhere in tomodash.

A user who hands us a broken STAR or MRC file, or a form value that cannot work, must be told
exactly where the problem is: the file, the table (STAR data block), the column and the row.
"""
from __future__ import annotations

from os import PathLike

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input data or parameters, located as precisely as possible.

    Parameters
    ----------
    message
        What is wrong, in words a user can act on.
    file
        The file the problem is in, if any.
    table
        The STAR data block (without ``data_``), if any.
    column
        The STAR column label (e.g. ``rlnDefocusU``) or form field, if any.
    row
        The 1-based row number within the table, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | PathLike | None = None,
        table: str | None = None,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        self.message = message
        self.file = None if file is None else str(file)
        self.table = table
        self.column = column
        self.row = row
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if self.table is not None:
            where.append(f"table data_{self.table}")
        if self.column is not None:
            where.append(f"column {self.column}")
        if self.row is not None:
            where.append(f"row {self.row}")
        if not where:
            return self.message
        return f"{', '.join(where)}: {self.message}"
