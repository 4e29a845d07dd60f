"""Optimisation sets: ``optimisation_set.star`` (spec 1.5).

One list-style table of file paths (block name irrelevant on reading; written as
``data_optimisation_set`` like RELION's Python tools). Command-line overrides (``--p --t
--mot --man --ref1 --ref2 --mask --fsc`` of the tomo programs; ``--i --tomograms
--trajectories`` of relion_refine with ``--ios``) replace the corresponding entry when given.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from os import PathLike
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError
from .star import read_star, write_star

__all__ = ["OptimisationSet", "read_optimisation_set", "write_optimisation_set", "OPTIMISATION_SET_LABELS"]

#: attribute -> label, in RELION's write order.
OPTIMISATION_SET_LABELS: dict[str, str] = {
    "particles": "rlnTomoParticlesFile",
    "tomograms": "rlnTomoTomogramsFile",
    "trajectories": "rlnTomoTrajectoriesFile",
    "manifolds": "rlnTomoManifoldsFile",
    "reference_map1": "rlnTomoReferenceMap1File",
    "reference_map2": "rlnTomoReferenceMap2File",
    "reference_mask": "rlnTomoReferenceMaskFile",
    "reference_fsc": "rlnTomoReferenceFscFile",
}

#: command-line option -> attribute (jaz programs, and relion_refine --ios equivalents).
OVERRIDE_OPTIONS: dict[str, str] = {
    "p": "particles",
    "i": "particles",
    "t": "tomograms",
    "tomograms": "tomograms",
    "mot": "trajectories",
    "trajectories": "trajectories",
    "man": "manifolds",
    "ref1": "reference_map1",
    "ref2": "reference_map2",
    "mask": "reference_mask",
    "fsc": "reference_fsc",
}


@dataclass(frozen=True)
class OptimisationSet:
    """Paths of the files an STA job works on. ``None`` = entry absent; ``""`` = written empty.

    Attributes
    ----------
    particles, tomograms, trajectories, manifolds
        particles.star, tomograms.star, motion.star, manifolds.star.
    reference_map1, reference_map2, reference_mask, reference_fsc
        Half maps, mask, postprocess FSC STAR.
    extra
        Any other label/value pairs of the table (round-tripped).
    path
        The file it was read from, if any.
    """

    particles: str | None = None
    tomograms: str | None = None
    trajectories: str | None = None
    manifolds: str | None = None
    reference_map1: str | None = None
    reference_map2: str | None = None
    reference_mask: str | None = None
    reference_fsc: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def read(cls, path: str | PathLike) -> OptimisationSet:
        """Read an optimisation set (the first block of the file, list or one-row loop).

        Raises
        ------
        InputError
            Missing/corrupt file, or no optimisation-set labels in it.
        """
        path = Path(path)
        blocks = read_star(path, parse_as_string=list(OPTIMISATION_SET_LABELS.values()))
        name, block = next(iter(blocks.items()))
        if isinstance(block, pd.DataFrame):
            if len(block) != 1:
                raise InputError(f"expected one row of file names, found {len(block)}", file=path, table=name)
            block = {k: v for k, v in block.iloc[0].to_dict().items()}
        labels = set(OPTIMISATION_SET_LABELS.values())
        if not labels & set(block):
            raise InputError("no optimisation-set labels (rlnTomoParticlesFile, rlnTomoTomogramsFile, ...)",
                             file=path, table=name)
        values = {attr: (None if label not in block else str(block[label]))
                  for attr, label in OPTIMISATION_SET_LABELS.items()}
        extra = {k: v for k, v in block.items() if k not in labels}
        return cls(**values, extra=extra, path=path)

    def to_block(self) -> dict[str, Any]:
        """The list block ``{label: value}`` (absent entries omitted)."""
        block = {label: getattr(self, attr) for attr, label in OPTIMISATION_SET_LABELS.items()
                 if getattr(self, attr) is not None}
        block.update(self.extra)
        return block

    def write(self, path: str | PathLike) -> None:
        """Write atomically as ``data_optimisation_set``."""
        write_star(path, {"optimisation_set": self.to_block()})

    def with_overrides(self, **overrides: str | PathLike | None) -> OptimisationSet:
        """A copy in which given, non-empty command-line values replace the entries.

        Keywords are option names (``p``, ``t``, ``mot``, ``man``, ``ref1``, ``ref2``,
        ``mask``, ``fsc``, or relion_refine's ``i``, ``tomograms``, ``trajectories``) or
        attribute names. ``None`` or ``""`` means "option not given": the set's entry stays.

        Examples
        --------
        >>> s = OptimisationSet(particles="a.star", tomograms="t.star")
        >>> s.with_overrides(p="b.star", t=None).particles
        'b.star'
        """
        changes: dict[str, str] = {}
        attributes = {f.name for f in fields(self)} - {"extra", "path"}
        for key, value in overrides.items():
            attr = OVERRIDE_OPTIONS.get(key, key)
            if attr not in attributes:
                raise TypeError(f"unknown optimisation-set override {key!r}")
            if value is None or str(value) == "":
                continue
            changes[attr] = str(value)
        return replace(self, **changes)

    def require(self, attribute: str) -> str:
        """The non-empty path stored for ``attribute``, or :class:`InputError` naming the label."""
        value = getattr(self, attribute)
        if not value:
            label = OPTIMISATION_SET_LABELS[attribute]
            raise InputError(f"no {attribute} file given (in the optimisation set or on the command line)",
                             file=self.path, column=label)
        return value


def read_optimisation_set(path: str | PathLike) -> OptimisationSet:
    """Read an optimisation set; see :meth:`OptimisationSet.read`."""
    return OptimisationSet.read(path)


def write_optimisation_set(optimisation_set: OptimisationSet, path: str | PathLike) -> None:
    """Write an optimisation set; see :meth:`OptimisationSet.write`."""
    optimisation_set.write(path)
