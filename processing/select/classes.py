"""Selection of the particles of chosen classes of a classification, as RELION's Subset
selection does it from a 2D/3D classification's ``run_itNNN_optimiser.star``
(``relion.select.interactive``: relion_display keeps the rows of the iteration's data.star whose
``rlnClassNumber`` is one of the selected classes, in their order, every column kept).
"""
from __future__ import annotations

import re
from collections.abc import Iterable

import numpy as np
from numpy.typing import NDArray

from processing.errors import InputError
from processing.io.particles import ParticleSet
from processing.io.star import numeric_column

from .subset import subset

__all__ = ["parse_class_list", "format_class_list", "class_mask", "select_classes", "CLASS_LABEL"]

#: The column of a classification's data.star that holds each particle's class (1..K).
CLASS_LABEL = "rlnClassNumber"


def parse_class_list(text: str | Iterable[int]) -> tuple[int, ...]:
    """Class numbers from ``"1 3"``, ``"1,3"`` or ``[1, 3]``: sorted, without repeats.

    Raises
    ------
    ValueError
        A token that is not a positive whole number (the message names it).
    """
    if isinstance(text, str):
        tokens = [t for t in re.split(r"[\s,;]+", text.strip()) if t]
    else:
        tokens = [str(t) for t in text]
    out = set()
    for token in tokens:
        if not re.fullmatch(r"\d+", token) or int(token) < 1:
            raise ValueError(f"{token!r} is not a class number (1, 2, ...)")
        out.add(int(token))
    return tuple(sorted(out))


def format_class_list(classes: Iterable[int]) -> str:
    """``"1 3"``: the job.star spelling of a class list."""
    return " ".join(str(int(c)) for c in sorted(set(classes)))


def class_mask(particles: ParticleSet, classes: Iterable[int]) -> NDArray[np.bool_]:
    """Which particles are in one of ``classes`` (``rlnClassNumber``), ``(n,)``.

    Raises
    ------
    InputError
        No ``rlnClassNumber`` column (not a classification's particles: the message says so,
        naming the file, table and column), a value that is not a number (naming the row), or
        no particle in any of the chosen classes (naming the classes there are).
    """
    chosen = tuple(classes)
    where = {"file": particles.path, "table": "particles"}
    if CLASS_LABEL not in particles.particles.columns:
        raise InputError("no class numbers: these particles are not from a classification "
                         "(give a run_itNNN_optimiser.star or run_itNNN_data.star of a 3D classification)",
                         column=CLASS_LABEL, **where)
    numbers = numeric_column(particles.particles, CLASS_LABEL, **where)
    keep = np.isin(numbers, np.asarray(chosen, dtype=float))
    if not keep.any():
        present = ", ".join(str(int(c)) for c in np.unique(numbers[np.isfinite(numbers)]))
        raise InputError(f"no particle is in class {format_class_list(chosen).replace(' ', ', ')} "
                         f"(the particles are in classes {present or 'none'})", column=CLASS_LABEL, **where)
    return keep


def select_classes(particles: ParticleSet, classes: Iterable[int]) -> tuple[ParticleSet, NDArray[np.bool_]]:
    """The particles of ``classes`` and the ``(n,)`` mask of them (see :func:`class_mask`)."""
    keep = class_mask(particles, classes)
    return subset(particles, keep), keep
