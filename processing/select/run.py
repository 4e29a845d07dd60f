"""A whole subset selection: read a particle set, re-centre, select (duplicates, a value range or
classes), write RELION's files.

Outputs in ``output_dir`` (all written atomically):

* ``particles.star`` — the selected particles, every block and column of the input;
* ``particles_removed.star`` — with duplicate removal, the removed particles as RELION writes
  them (the particles table alone);
* ``optimisation_set.star`` — the input optimisation set with ``rlnTomoParticlesFile`` pointing
  to the new ``particles.star`` (tomograms, trajectories, references carried over); only the
  particle entry when no optimisation set was given;
* ``selection.json`` — counts for the dashboard (input, kept, removed duplicates, outside range).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from processing.errors import InputError
from processing.io.atomic import atomic_write
from processing.io.optimisation_set import OptimisationSet
from processing.io.particles import CENTRED_LABELS, ParticleSet
from processing.io.paths import resolve_path
from processing.io.star import write_star
from processing.io.tomograms import TomogramSet

from .classes import format_class_list, select_classes
from .duplicates import remove_duplicates
from .recenter import recenter
from .subset import subset
from .values import select_on_value

__all__ = ["SelectionSettings", "Selection", "SelectionResult", "compute_selection", "select_particles",
           "read_summary", "SUMMARY_FILE", "REMOVED_FILE"]

SUMMARY_FILE = "selection.json"
REMOVED_FILE = "particles_removed.star"


@dataclass(frozen=True)
class SelectionSettings:
    """What a selection does: exactly one of ``min_distance_angst``, ``label`` and ``classes``.

    Attributes
    ----------
    min_distance_angst : remove duplicates closer than this (Å), or None.
    label, minval, maxval : keep the particles with ``minval <= label <= maxval``, or label None.
    classes : keep the particles of these classes (``rlnClassNumber``), or None.
    centre_px : re-centre first on this point of the reference (pixels of the particle images
        from the box centre), or None.
    """

    min_distance_angst: float | None = None
    label: str | None = None
    minval: float = -9999.0
    maxval: float = 9999.0
    centre_px: tuple[float, float, float] | None = None
    classes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.min_distance_angst, self.label, self.classes)) != 1:
            raise ValueError("give exactly one of min_distance_angst, label and classes")


@dataclass(frozen=True)
class Selection:
    """The outcome before anything is written."""

    n_input: int
    kept: ParticleSet
    removed: ParticleSet
    settings: SelectionSettings

    @property
    def summary(self) -> dict[str, Any]:
        s = self.settings
        out: dict[str, Any] = {"input": self.n_input, "kept": len(self.kept), "recentered": s.centre_px is not None}
        if s.min_distance_angst is not None:
            out.update(task="removeduplicates", duplicates_removed=len(self.removed),
                       min_distance_angst=s.min_distance_angst)
        elif s.classes is not None:
            out.update(task="classes", other_classes=len(self.removed), classes=list(s.classes))
        else:
            out.update(task="onvalue", outside_range=len(self.removed), label=s.label, minval=s.minval,
                       maxval=s.maxval)
        if s.centre_px is not None:
            out["centre_px"] = list(s.centre_px)
        return out


@dataclass(frozen=True)
class SelectionResult:
    """Where a selection wrote its files, and its counts (``selection.json``)."""

    particles_file: Path
    optimisation_set_file: Path
    removed_file: Path | None
    summary: dict[str, Any]


def _read_particles(particles_file: str | os.PathLike, optimisation_set: OptimisationSet | None,
                    root: str | os.PathLike | None) -> ParticleSet:
    particles = ParticleSet.read(particles_file)
    if not all(c in particles.particles.columns for c in CENTRED_LABELS) and optimisation_set is not None \
            and optimisation_set.tomograms:
        # RELION-4 rlnCoordinateX/Y/Z (ts-px): centred Å need the tomogram sizes and pixel sizes.
        tomograms = TomogramSet.read(resolve_path(optimisation_set.tomograms, root=root,
                                                  referrer=optimisation_set.path), root=root)
        particles.convert_relion4_coordinates(tomograms)
    return particles


def compute_selection(particles_file: str | os.PathLike, settings: SelectionSettings, *,
                      optimisation_set: OptimisationSet | None = None,
                      root: str | os.PathLike | None = None) -> Selection:
    """Read the particles and select them; nothing is written.

    Parameters
    ----------
    particles_file
        The particle set to select from.
    settings
        The selection.
    optimisation_set
        The set the particles came from, if any (its tomograms convert RELION-4 coordinates).
    root
        Project directory the set's entries are relative to (default: the working directory).

    Raises
    ------
    InputError
        Bad or missing file, table, column or value (named), or bad settings (named field).
    """
    particles = _read_particles(particles_file, optimisation_set, root)
    n = len(particles)
    if settings.centre_px is not None:
        particles = recenter(particles, settings.centre_px)
    if settings.min_distance_angst is not None:
        kept, removed, _ = remove_duplicates(particles, min_distance_angst=settings.min_distance_angst)
    elif settings.classes is not None:
        kept, mask = select_classes(particles, settings.classes)
        removed = subset(particles, ~mask)
    else:
        kept, mask = select_on_value(particles, settings.label or "", minval=settings.minval, maxval=settings.maxval)
        removed = subset(particles, ~mask)
    return Selection(n_input=n, kept=kept, removed=removed, settings=settings)


def _carried(entry: str | None, referrer: Path | None) -> str | None:
    """An entry of the input optimisation set as the output set names it: unchanged when it
    is absolute or found from the working (project) directory, else the file it resolves to."""
    if not entry or os.path.isabs(entry) or os.path.exists(entry):
        return entry
    found = resolve_path(entry, referrer=referrer)
    try:
        return str(found.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(found.resolve())


def select_particles(particles_file: str | os.PathLike, settings: SelectionSettings, *,
                     output_dir: str | os.PathLike, optimisation_set: OptimisationSet | None = None,
                     log=print) -> SelectionResult:
    """Select from ``particles_file`` and write the outputs (module docstring) in ``output_dir``.

    Paths written into ``optimisation_set.star`` are ``output_dir``-based as given (relative
    to the working directory, the project directory of a session).
    """
    selection = compute_selection(particles_file, settings, optimisation_set=optimisation_set)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    particles_out = out / "particles.star"
    selection.kept.write(particles_out)
    removed_out = None
    if settings.min_distance_angst is not None:
        removed_out = out / REMOVED_FILE
        write_star(removed_out, {"particles": selection.removed.particles})
    if optimisation_set is None:
        opt_out = OptimisationSet(particles=str(particles_out))
    else:
        ref = optimisation_set.path
        opt_out = replace(
            optimisation_set, particles=str(particles_out), path=None,
            **{name: _carried(getattr(optimisation_set, name), ref)
               for name in ("tomograms", "trajectories", "manifolds", "reference_map1", "reference_map2",
                            "reference_mask", "reference_fsc")},
        )
    opt_file = out / "optimisation_set.star"
    opt_out.write(opt_file)
    summary = selection.summary
    with atomic_write(out / SUMMARY_FILE) as handle:
        handle.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    if settings.centre_px is not None:
        log("Re-centred on ({:g}, {:g}, {:g}) px of the reference".format(*settings.centre_px))
    if settings.min_distance_angst is not None:
        log(f"Removed {len(selection.removed)} duplicated particles (closer than "
            f"{settings.min_distance_angst:g} Å) from {selection.n_input}; kept {len(selection.kept)}")
    elif settings.classes is not None:
        classes = settings.classes
        log(f"Kept the {len(selection.kept)} of {selection.n_input} particles in class{'es' if len(classes) > 1 else ''} "
            f"{format_class_list(classes).replace(' ', ', ')}")
    else:
        log(f"Kept {len(selection.kept)} of {selection.n_input} particles with "
            f"{settings.minval:g} <= {settings.label} <= {settings.maxval:g}")
    return SelectionResult(particles_out, opt_file, removed_out, summary)


def read_summary(job_dir: str | os.PathLike) -> dict[str, Any]:
    """``selection.json`` of a selection job.

    Raises
    ------
    InputError
        Missing or unreadable file.
    """
    path = Path(job_dir) / SUMMARY_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the selection summary: {exc}", file=path) from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), int) for k in ("input", "kept")):
        raise InputError("not a selection summary (no input/kept counts)", file=path)
    return data

