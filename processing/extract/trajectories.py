"""Motion trajectories (``motion.star``, spec 1.6): per-particle, per-frame 3D shifts."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from processing.errors import InputError
from processing.io.star import numeric_column, read_star, write_star

__all__ = ["read_trajectories", "write_trajectories", "trajectory_shifts"]


def read_trajectories(path: str | os.PathLike) -> dict[str, NDArray[np.float64]]:
    """Particle name -> (n_frames, 3) shifts in Å (tomogram frame)."""
    path = Path(path)
    blocks = read_star(path)
    out: dict[str, NDArray[np.float64]] = {}
    for name, block in blocks.items():
        if name == "general" or not isinstance(block, pd.DataFrame):
            continue
        out[name] = np.stack(
            [numeric_column(block, f"rlnOrigin{a}Angst", file=path, table=name) for a in "XYZ"], axis=1
        )
    return out


def write_trajectories(path: str | os.PathLike, trajectories: dict[str, NDArray[np.float64]]) -> None:
    """Write ``motion.star`` for the given particles (general block + one table each)."""
    blocks: dict[str, object] = {"general": {"rlnParticleNumber": len(trajectories)}}
    for name, shifts in trajectories.items():
        blocks[name] = pd.DataFrame(
            {f"rlnOrigin{a}Angst": shifts[:, i] for i, a in enumerate("XYZ")}
        )
    write_star(path, blocks)


def trajectory_shifts(
    trajectories: dict[str, NDArray[np.float64]] | None,
    names: list[str],
    n_frames: int,
    pixel_size: float,
    *,
    source: str | os.PathLike | None = None,
) -> NDArray[np.float64]:
    """(n, n_frames, 3) per-frame shifts in ts-px (zeros without trajectories)."""
    out = np.zeros((len(names), n_frames, 3))
    if trajectories is None:
        return out
    for i, name in enumerate(names):
        shifts = trajectories.get(name)
        if shifts is None:
            raise InputError(f"no trajectory for particle {name!r}", file=source, table=name)
        if len(shifts) != n_frames:
            raise InputError(
                f"trajectory has {len(shifts)} frames, the tilt series {n_frames}", file=source, table=name
            )
        out[i] = shifts / pixel_size
    return out
