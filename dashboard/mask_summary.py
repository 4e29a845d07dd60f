"""The result of a Mask creation job in one line: how much of the box the mask covers, its soft
edge, and a warning when it looks like no useful mask (most of the box, or cut by the box edge)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from processing.errors import InputError
from processing.io.jobstar import JobStar

from .results import Headline

__all__ = ["MASK_FILE", "mask_headline", "mask_job_headline", "mask_input_path", "COVERS_MOST"]

MASK_FILE = "mask.mrc"
#: above this fraction of the box the mask hardly separates particle from solvent
COVERS_MOST = 0.6


def _option(options: dict[str, str], key: str) -> float | None:
    try:
        return float(options[key])
    except (KeyError, ValueError):
        return None


def mask_headline(mask: NDArray, pixel_size: float, options: dict[str, str]) -> Headline:
    """What a mask covers.

    Parameters
    ----------
    mask
        ``[z, y, x]`` mask values in [0, 1].
    pixel_size
        Å per voxel (0: unknown, then no volume in nm³).
    options
        The job's job.star options (``width_mask_edge``, ``extend_inimask``, ...).

    Returns
    -------
    Headline
        Title: the per cent of the box (soft voxels counted by their value); ``value``: that
        fraction (0..1).
    """
    m = np.asarray(mask, dtype=np.float64)
    fraction = float(m.mean()) if m.size else 0.0
    inside = int(np.count_nonzero(m > 0.999))
    edge = int(np.count_nonzero((m > 0.001) & (m < 0.999)))
    facts = [f"{inside:,} voxels inside, {edge:,} in the soft edge (of {m.size:,})"]
    if pixel_size > 0:
        facts.append(f"mask volume {float(m.sum()) * pixel_size ** 3 / 1000.0:,.0f} nm³")
    width = _option(options, "width_mask_edge")
    extend = _option(options, "extend_inimask")
    threshold = _option(options, "inimask_threshold")
    lowpass = _option(options, "lowpass_filter")
    settings = []
    if width is not None:
        settings.append(f"soft edge {width:g} px" + (f" ({width * pixel_size:.1f} Å)" if pixel_size > 0 else ""))
    if extend is not None:
        settings.append(f"extended {extend:g} px" if extend >= 0 else f"shrunk {-extend:g} px")
    if threshold is not None:
        settings.append(f"threshold {threshold:g}")
    if lowpass is not None:
        settings.append(f"low-pass {lowpass:g} Å" if lowpass > 0 else "no low-pass")
    inverted = "--invert" in options.get("other_args", "")
    if inverted:
        settings.append("inverted")
    if settings:
        facts.append(", ".join(settings))
    warning = ""
    if inverted:
        pass  # a solvent mask covers most of the box and its edges by design
    elif fraction > COVERS_MOST:
        warning = (f"The mask covers {100 * fraction:.0f}% of the box: the threshold may be below the noise "
                   "(or the mask is inverted).")
    elif m.ndim == 3 and m.size and max(float(np.abs(face).max()) for face in
                                        (m[0], m[-1], m[:, 0], m[:, -1], m[:, :, 0], m[:, :, -1])) > 0.001:
        warning = ("The mask reaches the edge of the box, so it cuts off density there: use a smaller extension "
                   "or soft edge, or a larger box.")
    return Headline(title=f"{100 * fraction:.1f}% of the box", facts=tuple(facts), warning=warning, value=fraction)


def mask_input_path(job_dir: Path, root: Path) -> Path | None:
    """The map a Mask creation job was made from (its ``fn_in``, relative to the project
    directory ``root``); None when job.star is unreadable or names none."""
    try:
        options = JobStar.read(Path(job_dir) / "job.star").options
    except (OSError, InputError, ValueError, KeyError):
        return None
    name = options.get("fn_in", "")
    if not name:
        return None
    path = Path(name)
    return path if path.is_absolute() else Path(root) / path


def mask_job_headline(watcher, info) -> Headline | None:
    """The headline of a finished Mask creation job (through the watcher's cache); None before
    ``mask.mrc`` exists or when it cannot be read."""
    try:
        mask, pixel_size = watcher.volume(info.path / MASK_FILE)
        options = watcher.read(info.path / "job.star", lambda p: JobStar.read(p).options, kind="jobstar_options")
    except (OSError, InputError, ValueError, KeyError):
        return None
    return mask_headline(mask, pixel_size, options)
