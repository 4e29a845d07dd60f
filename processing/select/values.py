"""Selection on a metadata value range, as ``relion_star_handler --select LABEL --minval A
--maxval B`` does it (``subsetMetaDataTable``, src/metadata_table.cpp of RELION 5).

RELION keeps the rows whose value v satisfies ``minval <= v <= maxval`` (both inclusive). It
reads ``--minval`` and ``--maxval`` as single-precision floats (``textToFloat``, src/strings.cpp)
and compares them with the double-precision values of the table, so a bound that a float cannot
hold exactly moves a little: ``--minval 0.2`` is 0.2000000030, and a value 0.2 is left out. The
same rounding is applied here, so the subsets agree with RELION's to the row.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from processing.errors import InputError
from processing.io.particles import ParticleSet
from processing.io.star import numeric_column

from .subset import subset

__all__ = ["relion_bound", "value_mask", "select_on_value"]

#: Labels that hold names or paths: RELION refuses to select on them ("only numbers").
_TEXT_LABELS = ("rlnTomoName", "rlnTomoParticleName", "rlnImageName", "rlnCtfImage", "rlnMicrographName",
                "rlnOpticsGroupName")


def relion_bound(value: float) -> float:
    """A ``--minval``/``--maxval`` as RELION holds it: rounded to single precision."""
    return float(np.float32(value))


def value_mask(particles: ParticleSet, label: str, *, minval: float, maxval: float) -> NDArray[np.bool_]:
    """Which particles have ``minval <= label <= maxval`` (RELION's bounds, module docstring).

    Parameters
    ----------
    particles
        The particle set.
    label
        A numeric column of the particles table, e.g. ``rlnMaxValueProbDistribution``.
    minval, maxval
        Inclusive bounds in the column's own unit; ``minval <= maxval``.

    Returns
    -------
    (n,) bool

    Raises
    ------
    InputError
        The column is missing (naming the file, table and column), holds text, or a value that
        is not a number (naming the row); ``minval > maxval`` (column ``select_minval``).
    """
    if minval > maxval:
        raise InputError(f"the minimum value {minval:g} is larger than the maximum {maxval:g}",
                         column="select_minval")
    where = {"file": particles.path, "table": "particles"}
    if label not in particles.particles.columns:
        present = ", ".join(c for c in particles.particles.columns)
        raise InputError(f"no such column to select on (columns: {present})", column=label, **where)
    if label in _TEXT_LABELS:
        raise InputError("this column holds names, not numbers: RELION selects on numbers only",
                         column=label, **where)
    values = numeric_column(particles.particles, label, **where)
    return (values >= relion_bound(minval)) & (values <= relion_bound(maxval))


def select_on_value(particles: ParticleSet, label: str, *, minval: float, maxval: float
                    ) -> tuple[ParticleSet, NDArray[np.bool_]]:
    """The particles whose ``label`` lies in ``[minval, maxval]``, and the (n,) mask of them.

    See :func:`value_mask` for the rule and the errors.
    """
    keep = value_mask(particles, label, minval=minval, maxval=maxval)
    return subset(particles, keep), keep
