"""``tomodash.toml``: small per-session settings (dataset name, pixel size, default preset...).

Flat ``key = value`` pairs (strings, numbers, booleans) in one ``[session]`` table, written
atomically; read with :mod:`tomllib`.
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from processing.io.atomic import atomic_write

__all__ = ["SETTINGS_FILE", "read_settings", "write_settings"]

SETTINGS_FILE = "tomodash.toml"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # JSON string escaping is valid TOML basic-string escaping


def read_settings(root: str | Path) -> dict[str, Any]:
    """The ``[session]`` table of ``root/tomodash.toml`` (empty if absent)."""
    path = Path(root) / SETTINGS_FILE
    if not path.exists():
        return {}
    with open(path, "rb") as handle:
        return dict(tomllib.load(handle).get("session", {}))


def write_settings(root: str | Path, settings: dict[str, Any]) -> None:
    """Write ``settings`` (``None`` values are dropped) as ``root/tomodash.toml``."""
    lines = ["# tomodash session settings", "[session]"]
    for key in sorted(settings):
        value = settings[key]
        if value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    with atomic_write(Path(root) / SETTINGS_FILE) as handle:
        handle.write("\n".join(lines) + "\n")
