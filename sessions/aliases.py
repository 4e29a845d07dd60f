"""Job aliases as RELION makes them (project spec section 10.6).

An alias is stored in the pipeline as ``<Dir>/<alias>/`` and materialised as a relative
symlink ``<Dir>/<alias> -> ../<Dir>/jobNNN/``.
"""
from __future__ import annotations

import os
from pathlib import Path

from processing.errors import InputError

__all__ = ["FORBIDDEN_ALIAS_CHARS", "clean_alias", "make_alias_link", "remove_alias_link"]

#: Characters RELION refuses in an alias.
FORBIDDEN_ALIAS_CHARS = '*?()/"\\|#<>&%{}$'


def clean_alias(alias: str) -> str:
    """Validate an alias by RELION's rules and return it with spaces turned into ``_``.

    Rules: at least 2 characters, must not start with ``job``, none of
    ``* ? ( ) / " \\ | # < > & % { } $``.

    Raises
    ------
    InputError
        Naming the rule that was broken.
    """
    text = alias.strip().replace(" ", "_")
    if len(text) < 2:
        raise InputError(f"alias {alias!r} is too short (at least 2 characters)", column="alias")
    if text.startswith("job"):
        raise InputError(f"alias {alias!r} must not start with 'job'", column="alias")
    bad = sorted({c for c in text if c in FORBIDDEN_ALIAS_CHARS or c in "\n\r\t"})
    if bad:
        raise InputError(f"alias {alias!r} contains forbidden characters {''.join(bad)!r}", column="alias")
    return text


def make_alias_link(root: Path, directory: str, alias: str, process_name: str) -> Path:
    """Create (or replace) ``root/<directory>/<alias> -> ../<process_name>``."""
    link = root / directory / alias
    target = f"../{process_name}"
    if link.is_symlink():
        if os.readlink(link) == target:
            return link
        link.unlink()
    elif link.exists():
        raise InputError(f"{link} exists and is not an alias link", column="alias")
    tmp = link.with_name(f".{alias}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return link


def remove_alias_link(root: Path, alias_path: str) -> None:
    """Remove the symlink of an alias ``Dir/alias/`` if it is one."""
    link = root / alias_path.rstrip("/")
    if link.is_symlink():
        link.unlink()
