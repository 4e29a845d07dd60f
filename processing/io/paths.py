"""Resolution of the relative paths stored inside RELION metadata files.

RELION stores every path relative to the *project directory* (the directory the pipeline runs
from). A file may, however, be read from elsewhere (a test, a copied job directory). The rule
used throughout :mod:`processing.io`:

1. an absolute path is used as it is;
2. otherwise ``root / path`` when it exists, with ``root`` the project directory given by the
   caller (default: the current working directory);
3. otherwise ``d / path`` for ``d`` = the directory of the STAR file that holds the path, then
   each of its parent directories in turn (a project file such as
   ``Tomograms/job007/tomograms.star`` finds the project two levels up);
4. if none exists, ``root / path`` is returned, so that the error names the expected place.
"""
from __future__ import annotations

from os import PathLike
from pathlib import Path

__all__ = ["resolve_path"]


def resolve_path(
    path: str | PathLike,
    *,
    root: str | PathLike | None = None,
    referrer: str | PathLike | None = None,
) -> Path:
    """Find the file a relative metadata path refers to (rule in the module docstring).

    Parameters
    ----------
    path
        The path as stored in the metadata file.
    root
        Project directory; default the current working directory.
    referrer
        The STAR file in which ``path`` was found.

    Returns
    -------
    Path
        The first existing candidate, else ``root / path``.
    """
    p = Path(path)
    if p.is_absolute():
        return p
    base = Path(root) if root is not None else Path.cwd()
    first = base / p
    if first.exists():
        return first
    if referrer is not None:
        directory = Path(referrer).resolve().parent
        for candidate_dir in (directory, *directory.parents):
            candidate = candidate_dir / p
            if candidate.exists():
                return candidate
    return first
