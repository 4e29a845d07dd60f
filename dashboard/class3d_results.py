"""What a 3D classification leaves on disk, for its monitor: per iteration the occupancy and
resolution of each class (``run_itNNN_model.star``) and the class maps
(``run_itNNN_classKKK.mrc``); and its result in one line once it has finished.

relion_refine writes for every iteration N of a classification (N = 0: the initial references)
``run_itNNN_model.star`` with ``data_model_general`` (``rlnNrClasses``, ``rlnCurrentResolution``,
``rlnPixelSize``, ...), the ``data_model_classes`` loop (one row per class:
``rlnReferenceImage``, ``rlnClassDistribution``, ``rlnAccuracyRotations``,
``rlnAccuracyTranslationsAngst``, ``rlnEstimatedResolution``, ``rlnOverallFourierCompleteness``)
and a per-shell table ``data_model_class_K`` per class. There are no half maps and no FSC.
Pure functions of files (the watcher caches them by modification time).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from processing.errors import InputError

from .results import Headline, format_duration

__all__ = ["ClassIteration", "format_resolution", "classification_iterations", "read_class_iteration", "class_map_file",
           "class_model_file", "class_optimiser_file", "class3d_headline", "class3d_forecast",
           "is_classification_listing"]

_MODEL = re.compile(r"^run_it(\d{3,})_model\.star$")


@dataclass(frozen=True)
class ClassIteration:
    """One iteration of a classification, as its ``run_itNNN_model.star`` gives it; the arrays
    have one value per class, class 1 first."""

    iteration: int
    resolution: float                  # rlnCurrentResolution (Å)
    pixel_size: float                  # rlnPixelSize (Å)
    ori_size: int                      # rlnOriginalImageSize (px)
    distribution: np.ndarray           # rlnClassDistribution (fraction of the particles)
    class_resolution: np.ndarray       # rlnEstimatedResolution (Å)
    accuracy_rotations: np.ndarray     # rlnAccuracyRotations (°; 999: not estimated)
    accuracy_translations: np.ndarray  # rlnAccuracyTranslationsAngst (Å)
    completeness: np.ndarray           # rlnOverallFourierCompleteness
    maps: tuple[str, ...]              # file name of each class map (run_itNNN_classKKK.mrc)

    @property
    def n_classes(self) -> int:
        return int(self.distribution.size)

    @property
    def classes(self) -> list[int]:
        """The class numbers, 1..K."""
        return list(range(1, self.n_classes + 1))


def classification_iterations(names: list[str]) -> list[int]:
    """Iteration numbers with a ``run_itNNN_model.star`` in a directory listing, ascending."""
    return sorted(int(m.group(1)) for n in names if (m := _MODEL.match(n)))


def is_classification_listing(names: list[str]) -> bool:
    """A listing of a classification's directory: iteration models without half models."""
    return bool(classification_iterations(names)) and not any(n.endswith("_half1_model.star") for n in names)


def class_model_file(job_dir: Path, iteration: int) -> Path:
    return Path(job_dir) / f"run_it{iteration:03d}_model.star"


def class_optimiser_file(job_dir: Path, iteration: int) -> Path:
    return Path(job_dir) / f"run_it{iteration:03d}_optimiser.star"


def class_map_file(job_dir: Path, iteration: int, class_number: int) -> Path:
    return Path(job_dir) / f"run_it{iteration:03d}_class{class_number:03d}.mrc"


def read_class_iteration(job_dir: Path, iteration: int) -> ClassIteration:
    """The classes of one iteration (``run_itNNN_model.star``).

    Raises
    ------
    InputError
        A missing or unreadable file, or a missing table or column (named).
    """
    from processing.io.star import numeric_column, read_star

    path = class_model_file(job_dir, iteration)
    blocks = read_star(path)
    general = blocks.get("model_general")
    if not isinstance(general, dict):
        raise InputError("no data_model_general table", file=path, table="model_general")
    table = blocks.get("model_classes")
    if table is None or isinstance(table, dict):
        raise InputError("no data_model_classes loop", file=path, table="model_classes")
    where = {"file": path, "table": "model_classes"}

    def column(label: str, default: float | None = None) -> np.ndarray:
        if label not in table and default is not None:
            return np.full(len(table), default, dtype=float)
        return np.asarray(numeric_column(table, label, **where), dtype=float)

    def scalar(label: str) -> float:
        if label not in general:
            raise InputError("missing value", file=path, table="model_general", column=label)
        try:
            return float(general[label])
        except (TypeError, ValueError):
            raise InputError(f"not a number: {general[label]!r}", file=path, table="model_general",
                             column=label) from None

    n = len(table)
    if "rlnNrClasses" in general and int(scalar("rlnNrClasses")) != n:
        raise InputError(f"rlnNrClasses is {int(scalar('rlnNrClasses'))} but data_model_classes has {n} rows",
                         file=path, table="model_general", column="rlnNrClasses")
    references = [str(v) for v in table["rlnReferenceImage"]] if "rlnReferenceImage" in table else []
    maps = tuple(Path(r).name if r else class_map_file(job_dir, iteration, k).name
                 for k, r in zip(range(1, n + 1), references or [""] * n))
    return ClassIteration(
        iteration=iteration, resolution=scalar("rlnCurrentResolution"), pixel_size=scalar("rlnPixelSize"),
        ori_size=int(scalar("rlnOriginalImageSize")),
        distribution=column("rlnClassDistribution"), class_resolution=column("rlnEstimatedResolution"),
        accuracy_rotations=column("rlnAccuracyRotations", 999.0),
        accuracy_translations=column("rlnAccuracyTranslationsAngst", 999.0),
        completeness=column("rlnOverallFourierCompleteness", np.nan), maps=maps,
    )


def format_resolution(angstrom: float) -> str:
    """``36.0 Å``, or ``–`` for a resolution not estimated yet (RELION writes inf at iteration 0)."""
    return f"{angstrom:.1f} Å" if np.isfinite(angstrom) and 0 < angstrom < 999 else "–"


def class3d_headline(history: list[ClassIteration], *, job_dir: str, elapsed: float | None) -> Headline | None:
    """A finished classification's result: its classes after the last iteration, the most
    populated first (occupancy and resolution of each); None before any iteration."""
    if not history:
        return None
    last = history[-1]
    order = np.argsort(-last.distribution, kind="stable")
    best = int(order[0]) + 1
    n = last.iteration
    facts = [f"{n} iteration{'s' if n != 1 else ''}" + (f" · {format_duration(elapsed)}" if elapsed is not None else "")]
    facts += [f"class {k + 1}: {100 * last.distribution[k]:.0f}% of the particles, "
              f"{format_resolution(last.class_resolution[k])}" for k in order]
    facts.append(f"maps: {job_dir}run_it{n:03d}_class001.mrc … class{last.n_classes:03d}.mrc")
    resolution = float(last.class_resolution[best - 1])
    return Headline(title=f"{last.n_classes} classes; largest: class {best} "
                          f"({100 * last.distribution[best - 1]:.0f}%, {format_resolution(resolution)})",
                    facts=tuple(facts), value=resolution if np.isfinite(resolution) else None)


def class3d_forecast(history: list[ClassIteration], iteration_seconds: list[float], total: int | None) -> str:
    """What is left of a running classification: ``iteration 3 of 25 done · ~12 min left``
    (the time from the recent iterations' pace); ``""`` before the first iteration."""
    if not history:
        return ""
    done = history[-1].iteration
    if not total:
        return f"iteration {done} done"
    text = f"iteration {done} of {total} done"
    recent = [t for t in iteration_seconds[-3:] if t > 0]
    if recent and total > done:
        text += f" · ~{format_duration(float(np.median(recent)) * (total - done))} left"
    return text
