"""STAR files as RELION reads and writes them (spec 1.1), through the ``starfile`` package.

A STAR file is an ordered mapping ``{block name: block}``; the block name is the text after
``data_``. A *loop* block is a :class:`pandas.DataFrame` (one column per ``_rln`` label, one
row per table row); a *list* block ("isList", label/value pairs) is a ``dict``.

On top of ``starfile`` this module adds:

* errors: a missing file, a corrupted file, a missing compulsory column or a non-numeric value
  raise :class:`~processing.errors.InputError` naming the file, table, column, row (and the
  line when the file itself is malformed) -- never a bare pandas/starfile exception;
* RELION vector values (``[1,0,1]``, ``[0.08,-0.99,0.01,3618.2]``) become 1-D numpy arrays
  (int64 when every element of the column is an integer, else float64), written back as one
  token without spaces, 12 significant digits;
* labels that hold names and paths (``rlnTomoName``, ``rlnImageName``, ...) are kept as
  strings, so a tomogram called ``01`` does not turn into the integer 1;
* RELION's writing dialect: ``# version 50001`` before each block, ``_label #n`` column
  numbers, booleans as ``1``/``0``, quoting of empty strings and strings with spaces, atomic
  writes.

Dialect notes. RELION 5 writes ``# version 50001`` (``CURRENT_MDT_VERSION``; files written by
RELION 3.1/4 carry ``30001``); pass ``version=30001`` to :func:`write_star` to imitate the
older files. RELION does not write empty tables; here an empty *loop* table is written (its
column labels survive a round trip), an empty *list* block is skipped.
"""
from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd
import starfile
from numpy.typing import NDArray

from ..errors import InputError
from .atomic import atomic_write

__all__ = [
    "Block",
    "StarData",
    "STRING_LABELS",
    "read_star",
    "read_star_block",
    "write_star",
    "star_to_string",
    "require_columns",
    "numeric_column",
    "string_column",
    "vector_column",
    "bool_column",
    "list_value",
    "format_vector",
    "parse_vector",
]

Block = Union[pd.DataFrame, dict]
StarData = dict  # dict[str, Block], insertion order = block order in the file

#: Labels whose values are names or paths and must never be coerced to numbers.
STRING_LABELS: frozenset[str] = frozenset(
    {
        "rlnTomoName",
        "rlnTomoParticleName",
        "rlnOpticsGroupName",
        "rlnMicrographName",
        "rlnMicrographNameEven",
        "rlnMicrographNameOdd",
        "rlnMicrographMovieName",
        "rlnMicrographMetadata",
        "rlnImageName",
        "rlnCtfImage",
        "rlnCtfPowerSpectrum",
        "rlnReferenceImage",
        "rlnGroupName",
        "rlnTomoTiltSeriesName",
        "rlnTomoTiltSeriesStarFile",
        "rlnTomoReconstructedTomogram",
        "rlnTomoReconstructedTomogramHalf1",
        "rlnTomoReconstructedTomogramHalf2",
        "rlnTomoFiducialsStarFile",
        "rlnEtomoDirectiveFile",
        "rlnTomoParticlesFile",
        "rlnTomoTomogramsFile",
        "rlnTomoTrajectoriesFile",
        "rlnTomoManifoldsFile",
        "rlnTomoReferenceMap1File",
        "rlnTomoReferenceMap2File",
        "rlnTomoReferenceMaskFile",
        "rlnTomoReferenceFscFile",
        "rlnJobTypeLabel",
        "rlnJobOptionVariable",
        "rlnJobOptionValue",
        "rlnPipeLineProcessName",
        "rlnPipeLineProcessAlias",
        "rlnPipeLineProcessTypeLabel",
        "rlnPipeLineProcessStatusLabel",
        "rlnPipeLineNodeName",
        "rlnPipeLineNodeTypeLabel",
        "rlnPipeLineEdgeFromNode",
        "rlnPipeLineEdgeToNode",
        "rlnPipeLineEdgeProcess",
        "rlnSymmetryGroup",
        "rlnOutputRootName",
        "rlnSolventMaskName",
        "rlnSolventMask2Name",
        "rlnTauSpectrumName",
        "rlnTomoDeformationType",
    }
)

_STRING_SUFFIXES = ("Name", "File", "FileName", "Label")
_DEFAULT_VERSION = 50001
_LABEL_RE = re.compile(r"^[ \t]*_(\S+)", re.MULTILINE)


def _is_string_label(label: str) -> bool:
    return label in STRING_LABELS or label.endswith(_STRING_SUFFIXES)


# --------------------------------------------------------------------------------------------
# vectors


def parse_vector(token: str) -> NDArray:
    """Parse one RELION vector token ``[v0,v1,...]`` (``[]`` = empty) into a 1-D array.

    Returns int64 when every element is an integer literal, float64 otherwise.

    Raises
    ------
    ValueError
        If the token is not a bracketed, comma-separated list of numbers.
    """
    text = token.strip()
    if len(text) < 2 or text[0] != "[" or text[-1] != "]":
        raise ValueError(f"{token!r} is not a [v0,v1,...] vector")
    inner = text[1:-1].strip()
    if not inner:
        return np.zeros(0, dtype=np.int64)
    parts = [p.strip() for p in inner.split(",")]
    try:
        return np.array([int(p) for p in parts], dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{token!r} is not a vector of numbers") from None


def format_vector(values: Iterable[Any]) -> str:
    """Format a 1-D sequence as RELION's single vector token ``[v0,v1,...]``.

    Integers are written as integers, floats with 12 significant digits; no spaces.
    """
    parts = []
    for v in np.asarray(values).ravel().tolist():
        if isinstance(v, bool):
            parts.append("1" if v else "0")
        elif isinstance(v, int):
            parts.append(str(v))
        else:
            parts.append(format(float(v), ".12g"))
    return "[" + ",".join(parts) + "]"


def _looks_like_vector(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("[") and value.endswith("]")


def _parse_vector_columns(df: pd.DataFrame, *, file: Path, table: str) -> pd.DataFrame:
    for column in df.columns:
        series = df[column]
        if len(series) == 0 or series.dtype.kind in "biufc":
            continue
        values = series.tolist()
        if not all(_looks_like_vector(v) for v in values):
            continue
        parsed = np.empty(len(values), dtype=object)
        for i, token in enumerate(values):
            try:
                parsed[i] = parse_vector(token)
            except ValueError as exc:
                raise InputError(str(exc), file=file, table=table, column=column, row=i + 1) from None
        if any(a.dtype.kind == "f" for a in parsed):
            for i, a in enumerate(parsed):
                parsed[i] = a.astype(np.float64)
        df[column] = pd.Series(parsed, index=df.index, dtype=object)
    return df


# --------------------------------------------------------------------------------------------
# reading


def _split_tokens(line: str) -> list[str]:
    if '"' in line or "'" in line:
        return shlex.split(line, comments=False, posix=True)
    return line.split()


def _diagnose(text: str) -> tuple[int, str, str | None] | None:
    """Find the first structural error of a STAR text: (line number, message, block) or None."""
    state = "top"
    block: str | None = None
    n_columns = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_"):
            state, block, n_columns = "block", line[5:], 0
            continue
        if state == "top":
            continue  # like RELION, text before the first data_ block is ignored
        if line.startswith("loop_"):
            if state != "block":
                return number, "loop_ must directly follow a data_ header", block
            state = "labels"
            continue
        if line.startswith("_"):
            if state in ("block", "list"):
                try:
                    tokens = _split_tokens(line)
                except ValueError as exc:
                    return number, f"cannot split {line[:60]!r}: {exc}", block
                if len(tokens) != 2:
                    return number, f"expected '_label value', found {len(tokens)} tokens in {line[:60]!r}", block
                state = "list"
            elif state == "labels":
                n_columns += 1
            else:
                return number, f"column label {line.split()[0]!r} after the data rows of a loop", block
            continue
        if state == "labels":
            if n_columns == 0:
                return number, "loop_ without any column labels", block
            state = "rows"
        if state == "rows":
            try:
                tokens = _split_tokens(line.split("#", 1)[0])
            except ValueError as exc:
                return number, f"cannot split row: {exc}", block
            if len(tokens) != n_columns:
                return number, f"row has {len(tokens)} values but the table has {n_columns} columns", block
            continue
        return number, f"unexpected text {line[:40]!r}", block
    if state == "labels" and n_columns == 0:
        return len(text.splitlines()), "loop_ without any column labels", block
    return None


def _corrupted(path: Path, text: str, detail: str) -> InputError:
    found = _diagnose(text)
    if found is None:
        return InputError(f"not a readable STAR file ({detail})", file=path)
    number, message, block = found
    return InputError(f"line {number}: {message}", file=path, table=block)


def read_star(
    path: str | PathLike,
    *,
    parse_as_string: Iterable[str] = (),
) -> StarData:
    """Read every block of a STAR file, in file order.

    Parameters
    ----------
    path
        The STAR file.
    parse_as_string
        Extra labels to keep as strings (names/paths in :data:`STRING_LABELS` and labels
        ending in ``Name``/``File``/``Label`` always are).

    Returns
    -------
    dict
        ``{block name: DataFrame (loop) or dict (list)}`` in file order. Vector tokens are
        1-D numpy arrays (object column); numbers are int64/float64; strings are ``str``.

    Raises
    ------
    InputError
        Missing or unreadable file, no ``data_`` block, or a syntax error (with the line).
    """
    path = Path(path)
    if not path.exists():
        raise InputError("file not found", file=path)
    if path.is_dir():
        raise InputError("expected a STAR file but found a directory", file=path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not a text (STAR) file: {exc.reason} at byte {exc.start}", file=path) from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", file=path) from None

    labels = set(_LABEL_RE.findall(text))
    strings = sorted({label for label in labels if _is_string_label(label)} | set(parse_as_string))
    try:
        # starfile reads through linecache, which keys on the name as given: a relative name
        # read again from another working directory would return the other file's lines.
        blocks = starfile.read(path.resolve(), always_dict=True, parse_as_string=strings)
    except Exception as exc:  # starfile/pandas raise many types for malformed input
        raise _corrupted(path, text, f"{type(exc).__name__}: {exc}") from None
    if not blocks:
        raise _corrupted(path, text, "no data_ block found")

    out: StarData = {}
    for name, block in blocks.items():
        if block is None:
            raise _corrupted(path, text, f"data block {name!r} is empty")
        if isinstance(block, pd.DataFrame):
            # Rows with too few values are padded with NaN by pandas: check the text.
            if block.shape[1] and block.isna().to_numpy().any():
                found = _diagnose(text)
                if found is not None:
                    number, message, where = found
                    raise InputError(f"line {number}: {message}", file=path, table=where)
            block = block.reset_index(drop=True)
            block = _parse_vector_columns(block, file=path, table=name)
            if hasattr(block, "name"):
                try:
                    del block.name
                except AttributeError:
                    pass
        else:
            block = dict(block)
            for key, value in block.items():
                if _looks_like_vector(value):
                    try:
                        block[key] = parse_vector(value)
                    except ValueError as exc:
                        raise InputError(str(exc), file=path, table=name, column=key) from None
                elif key in strings and not isinstance(value, str):
                    block[key] = str(value)
        out[name] = block
    return out


def read_star_block(
    path: str | PathLike,
    name: str,
    *,
    loop: bool | None = None,
    parse_as_string: Iterable[str] = (),
) -> Block:
    """Read one named block (``name`` without ``data_``) of a STAR file.

    Parameters
    ----------
    loop
        ``True`` to require a loop table (DataFrame), ``False`` a list block (dict), ``None``
        for either.

    Raises
    ------
    InputError
        If the block is absent or of the wrong kind (and for every error of :func:`read_star`).
    """
    blocks = read_star(path, parse_as_string=parse_as_string)
    if name not in blocks:
        present = ", ".join(f"data_{b}" for b in blocks) or "none"
        raise InputError(f"table data_{name} not found (tables present: {present})", file=path, table=name)
    block = blocks[name]
    if loop is True and not isinstance(block, pd.DataFrame):
        raise InputError("expected a loop_ table, found a list of label/value pairs", file=path, table=name)
    if loop is False and isinstance(block, pd.DataFrame):
        raise InputError("expected a list of label/value pairs, found a loop_ table", file=path, table=name)
    return block


# --------------------------------------------------------------------------------------------
# writing


def _format_float(value: float, float_format: str) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = format(value, float_format)
    if not any(c in text for c in ".eEn"):
        text += ".0"
    return text


def _quote(text: str) -> str:
    if text == "":
        return '""'
    if any(c.isspace() for c in text) or text[0] in "\"'#_" or text.startswith(("data_", "loop_")):
        if '"' in text:
            return "'" + text + "'"
        return '"' + text + '"'
    return text


def _format_value(value: Any, float_format: str) -> str:
    if value is None:
        return '""'
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return _format_float(float(value), float_format)
    if isinstance(value, (np.ndarray, list, tuple)):
        return format_vector(value)
    if isinstance(value, (str, PathLike)):
        return _quote(str(value))
    if value is pd.NA:
        return "nan"
    return _quote(str(value))


def _format_column(series: pd.Series, float_format: str) -> list[str]:
    kind = series.dtype.kind
    if kind == "b":
        return ["1" if v else "0" for v in series.tolist()]
    if kind in "iu":
        return [str(v) for v in series.tolist()]
    if kind == "f":
        return [_format_float(v, float_format) for v in series.tolist()]
    return [_format_value(v, float_format) for v in series.tolist()]


def _loop_lines(df: pd.DataFrame, float_format: str) -> list[str]:
    lines = ["loop_ "]
    lines += [f"_{label} #{i} " for i, label in enumerate(df.columns, start=1)]
    if len(df) == 0:
        return lines
    columns = []
    for label in df.columns:
        values = _format_column(df[label], float_format)
        width = max(10, max(len(v) for v in values))
        columns.append([v.rjust(width) for v in values])
    lines += [" ".join(row) + " " for row in zip(*columns)]
    return lines


def _list_lines(block: Mapping[str, Any], float_format: str) -> list[str]:
    width = max(len(k) for k in block) + 1
    return [f"_{key.ljust(width)} {_format_value(value, float_format)}" for key, value in block.items()]


def star_to_string(
    blocks: Mapping[str, Block],
    *,
    version: int | None = _DEFAULT_VERSION,
    float_format: str = ".12g",
    comments: Iterable[str] = (),
) -> str:
    """Render blocks as STAR text in RELION's dialect (see :func:`write_star`)."""
    out: list[str] = [f"# {c}" for c in comments]
    previous_empty_loop = False
    for name, block in blocks.items():
        if isinstance(block, pd.DataFrame):
            body = _loop_lines(block, float_format)
        elif isinstance(block, Mapping):
            if not block:
                continue  # an empty list block cannot be represented (RELION skips it too)
            body = _list_lines(block, float_format)
        else:
            raise TypeError(f"block {name!r} must be a DataFrame or a dict, not {type(block).__name__}")
        out.append("")
        # A comment line right after a row-less loop would be read (by starfile) as its data.
        if version is not None and not previous_empty_loop:
            out += [f"# version {version}", ""]
        out += [f"data_{name}", ""]
        out += body
        out.append(" ")
        previous_empty_loop = isinstance(block, pd.DataFrame) and len(block) == 0
    return "\n".join(out) + "\n"


def write_star(
    path: str | PathLike,
    blocks: Mapping[str, Block],
    *,
    version: int | None = _DEFAULT_VERSION,
    float_format: str = ".12g",
    comments: Iterable[str] = (),
) -> None:
    """Write blocks to a STAR file atomically, in the order given.

    Parameters
    ----------
    path
        Output file (its directory must exist).
    blocks
        ``{block name (without data_): DataFrame or dict}``. DataFrame columns and dict keys
        are labels without the leading underscore (``rlnTomoName``).
    version
        Number of the ``# version N`` line written before each block (``None``: none).
    float_format
        Python format spec for floats (default 12 significant digits); a float always keeps
        a decimal point or exponent so that it reads back as a float.
    comments
        Lines written as ``# ...`` at the top (e.g. the command line).

    Notes
    -----
    Booleans are written ``1``/``0``; sequences and arrays as vector tokens; empty strings
    as ``""``; strings with white space are double-quoted.
    """
    text = star_to_string(blocks, version=version, float_format=float_format, comments=comments)
    with atomic_write(path) as handle:
        handle.write(text)


# --------------------------------------------------------------------------------------------
# typed access with located errors


def require_columns(
    df: pd.DataFrame,
    columns: Iterable[str],
    *,
    file: str | PathLike | None = None,
    table: str | None = None,
) -> None:
    """Raise :class:`InputError` naming the first compulsory column absent from ``df``."""
    for column in columns:
        if column not in df.columns:
            raise InputError("compulsory column is missing", file=file, table=table, column=column)


def _column_or_default(df, column, default, file, table):
    if column in df.columns:
        return df[column]
    if default is None:
        raise InputError("compulsory column is missing", file=file, table=table, column=column)
    return None


def numeric_column(
    df: pd.DataFrame,
    column: str,
    *,
    file: str | PathLike | None = None,
    table: str | None = None,
    default: float | None = None,
    integer: bool = False,
    finite: bool = False,
) -> NDArray:
    """A column as a float64 (or int64) array, shape (n_rows,).

    Parameters
    ----------
    default
        Value for every row when the column is absent; ``None`` makes the column compulsory.
    integer
        Require integral values and return int64.
    finite
        Refuse ``nan`` and ``inf`` (which ``float()`` accepts): for input data such as
        coordinates, angles and CTF values, where they can only be a mistake.

    Raises
    ------
    InputError
        Missing compulsory column, or the first (1-based) row whose value is not a number
        (or not an integer when ``integer``, or not finite when ``finite``).
    """
    series = _column_or_default(df, column, default, file, table)
    if series is None:
        return np.full(len(df), default, dtype=np.int64 if integer else np.float64)
    if series.dtype.kind in "biuf":
        values = series.to_numpy(dtype=np.float64)
    else:
        raw = series.tolist()
        values = np.empty(len(raw), dtype=np.float64)
        for i, value in enumerate(raw):
            try:
                if isinstance(value, (np.ndarray, list, tuple)):
                    raise ValueError
                values[i] = float(value)
            except (TypeError, ValueError):
                raise InputError(
                    f"expected a number, found {_format_value(value, '.12g')!r}",
                    file=file, table=table, column=column, row=i + 1,
                ) from None
    if finite:
        bad = ~np.isfinite(values)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"expected a finite number, found {values[i]!r}", file=file, table=table,
                             column=column, row=i + 1)
    if integer:
        bad = ~np.isfinite(values) | (values != np.round(values))
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(
                f"expected an integer, found {values[i]!r}", file=file, table=table, column=column, row=i + 1
            )
        return values.astype(np.int64)
    return values


def string_column(
    df: pd.DataFrame,
    column: str,
    *,
    file: str | PathLike | None = None,
    table: str | None = None,
    default: str | None = None,
) -> NDArray[np.object_]:
    """A column as an object array of Python ``str``, shape (n_rows,).

    ``default`` fills an absent column; ``None`` makes it compulsory.
    """
    series = _column_or_default(df, column, default, file, table)
    if series is None:
        return np.array([default] * len(df), dtype=object)
    return np.array([str(v) for v in series.tolist()], dtype=object)


def vector_column(
    df: pd.DataFrame,
    column: str,
    *,
    file: str | PathLike | None = None,
    table: str | None = None,
    dtype: type = np.float64,
    length: int | None = None,
) -> list[NDArray]:
    """A vector-valued column (e.g. ``rlnTomoVisibleFrames``) as a list of 1-D arrays.

    Parameters
    ----------
    dtype
        Element type of the returned arrays (``np.int64`` or ``np.float64``).
    length
        Required length of every vector, if given.

    Raises
    ------
    InputError
        Missing column, a value that is not a vector, or a vector of the wrong length.
    """
    require_columns(df, [column], file=file, table=table)
    out = []
    for i, value in enumerate(df[column].tolist()):
        if isinstance(value, str):
            try:
                value = parse_vector(value)
            except ValueError as exc:
                raise InputError(str(exc), file=file, table=table, column=column, row=i + 1) from None
        if not isinstance(value, (np.ndarray, list, tuple)):
            raise InputError(
                f"expected a vector [v0,v1,...], found {value!r}", file=file, table=table, column=column, row=i + 1
            )
        array = np.asarray(value)
        if length is not None and array.size != length:
            raise InputError(
                f"expected a vector of length {length}, found length {array.size}",
                file=file, table=table, column=column, row=i + 1,
            )
        if np.dtype(dtype).kind in "iu" and array.size and array.dtype.kind == "f":
            if np.any(array != np.round(array)):
                raise InputError("expected integers in the vector", file=file, table=table, column=column, row=i + 1)
        out.append(array.astype(dtype))
    return out


def bool_column(
    df: pd.DataFrame,
    column: str,
    *,
    file: str | PathLike | None = None,
    table: str | None = None,
    default: bool | None = None,
) -> NDArray[np.bool_]:
    """A RELION boolean column (``0``/``1``) as a bool array, shape (n_rows,)."""
    if column not in df.columns and default is not None:
        return np.full(len(df), bool(default))
    values = numeric_column(df, column, file=file, table=table)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"expected 0 or 1, found {values[i]!r}", file=file, table=table, column=column, row=i + 1)
    return values.astype(bool)


def list_value(
    block: Mapping[str, Any],
    key: str,
    kind: type = float,
    *,
    file: str | PathLike | None = None,
    table: str | None = None,
    default: Any = None,
) -> Any:
    """One typed value of a list block.

    Parameters
    ----------
    kind
        ``float``, ``int``, ``bool`` (RELION ``0``/``1``) or ``str``.
    default
        Returned when the key is absent; ``None`` makes it compulsory.

    Raises
    ------
    InputError
        Missing compulsory key or a value of the wrong type.
    """
    if key not in block:
        if default is None:
            raise InputError("compulsory label is missing", file=file, table=table, column=key)
        return default
    value = block[key]
    try:
        if kind is str:
            return "" if value is None else str(value)
        if kind is bool:
            number = float(value)
            if number not in (0.0, 1.0):
                raise ValueError
            return bool(number)
        if kind is int:
            number = float(value)
            if number != round(number):
                raise ValueError
            return int(number)
        return float(value)
    except (TypeError, ValueError):
        expected = {bool: "0 or 1", int: "an integer"}.get(kind, "a number")
        raise InputError(f"expected {expected}, found {value!r}", file=file, table=table, column=key) from None
