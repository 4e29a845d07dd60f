"""Writers of the simulated dataset: thin wrappers over :mod:`processing.io`.

Equal inputs give byte-identical files (no time stamps), and every file is written atomically.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from numpy.typing import NDArray

from processing.io import atomic_write
from processing.io import write_mrc as _io_write_mrc
from processing.io import write_star as _io_write_star

__all__ = ["write_star", "write_mrc", "write_json"]

_MRC_LABEL = "tomodash simulate"


def write_star(
    path: str | os.PathLike, blocks: Mapping[str, Mapping[str, Any]], loops: Sequence[str] = ()
) -> None:
    """Write STAR blocks: ``loops`` name the blocks given as columns (label -> sequence),
    the others are list blocks (label -> value)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    converted = {
        name: pd.DataFrame({label: list(values) for label, values in content.items()})
        if name in loops else dict(content)
        for name, content in blocks.items()
    }
    _io_write_star(path, converted)


def write_mrc(path: str | os.PathLike, data: NDArray, pixel_size: float) -> None:
    """Write a float32 MRC image or map with the pixel size (Å) in the header."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _io_write_mrc(path, data, pixel_size, label=_MRC_LABEL)


def write_json(path: str | os.PathLike, content: Mapping[str, Any]) -> None:
    """Write pretty-printed, key-sorted JSON."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        handle.write(json.dumps(content, indent=2, sort_keys=True) + "\n")
