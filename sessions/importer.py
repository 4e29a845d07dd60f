"""Import a dataset into a session as an Import job (RELION 5 ``relion.importtomo``).

``Import/jobNNN/`` receives copies of the tomogram set and the particle set, with every
relative file path inside them rewritten so that it still points at the same file from the
session directory (session-relative when the file lies inside the session, absolute
otherwise), plus an ``optimisation_set.star`` naming both -- the input of the first Extract job.
The tilt images themselves stay where they are. The import runs in-process (it only copies
two small files) and is recorded as ``Succeeded`` with its exit markers.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pandas as pd
import param

from processing.errors import InputError
from processing.geometry.symmetry import normalise_symmetry_name
from processing.io.optimisation_set import OptimisationSet
from processing.io.particles import ParticleSet
from processing.io.tomograms import TomogramSet
from processing.io.paths import resolve_path
from processing.io.star import read_star, write_star
from processing.jobs.base import FieldProblem, JobParameters
from processing.jobs.extract import check_tilt_images

from .jobtypes import JobType, OutputNode, register_job_type
from .pipeline import SCHEDULED, SUCCEEDED
from .project import JobInfo, Session, write_note

__all__ = ["ImportTomoParameters", "IMPORT_JOB_TYPE", "import_dataset", "create_demo_session", "create_session",
           "dataset_summary"]

_PATH_SUFFIXES = (".star", ".mrc", ".mrcs", ".tlt", ".xf", ".edf", ".st", ".ali", ".rec", ".tif", ".tiff",
                  ".eer", ".mdoc", ".com")


class ImportTomoParameters(JobParameters):
    """Import a tomogram set and a particle set (picked coordinates) into the session."""

    job_type_label: ClassVar[str] = "relion.importtomo"
    process_dir: ClassVar[str] = "Import"
    is_tomo: ClassVar[bool] = False
    tabs: ClassVar[tuple[str, ...]] = ("General", "Coordinates", "Running")

    in_tomograms = param.String(
        "", label="Tomogram set (tomograms.star):",
        doc="The tomogram set to import: one row per tilt series, naming each tilt series' STAR "
            "file with its per-tilt CTF, dose and alignment.",
        metadata={"tab": "General", "var": "in_tomograms"},
    )
    do_coords = param.Boolean(
        True, label="Import coordinates?",
        doc="Also import a particle set (positions and initial orientations).",
        metadata={"tab": "Coordinates", "var": "do_coords"},
    )
    in_coords = param.String(
        "", label="Particle set (particles.star):",
        doc="The particle set to import (rlnTomoName + centred coordinates in Å).",
        metadata={"tab": "Coordinates", "var": "in_coords"},
    )

    def problems(self) -> list[FieldProblem]:
        out = super().problems()
        if not self.in_tomograms:
            out.append(FieldProblem("in_tomograms", "is required"))
        elif not os.path.isfile(self.in_tomograms):
            out.append(FieldProblem("in_tomograms", f"file does not exist: {self.in_tomograms}"))
        if self.do_coords:
            if not self.in_coords:
                out.append(FieldProblem("in_coords", "is required when importing coordinates"))
            elif not os.path.isfile(self.in_coords):
                out.append(FieldProblem("in_coords", f"file does not exist: {self.in_coords}"))
        return out


IMPORT_JOB_TYPE = register_job_type(JobType(
    name="import",
    params_class=ImportTomoParameters,
    module="",  # runs in-process: sessions.importer.import_dataset
    outputs=(
        OutputNode("tomograms.star", "TomogramGroupMetadata.star.relion.tomo.import"),
        OutputNode("particles.star", "ParticleGroupMetadata.star.relion.tomo.import"),
        OutputNode("optimisation_set.star", "TomoOptimisationSet.star.relion.tomo.import"),
    ),
    uses_mpi=False,
    description="Import tomograms and particles (relion.importtomo)",
), replace=True)


def _looks_like_path(value: object) -> bool:
    return isinstance(value, str) and bool(value) and (
        "/" in value or value.lower().endswith(_PATH_SUFFIXES)) and ":" not in value.split("/")[0][1:]


def _relocate(value: str, *, source: Path, session_root: Path) -> str:
    """The path ``value`` (relative to the source file's project) as seen from the session."""
    stem, at, rest = value.partition("@")  # image references "3@stack.mrcs"
    path_text = rest if at and stem.isdigit() else value
    if os.path.isabs(path_text):
        return value
    found = resolve_path(path_text, root=source.parent, referrer=source)
    if not found.exists():
        return value
    found = found.resolve()
    try:
        new = found.relative_to(session_root).as_posix()
    except ValueError:
        new = str(found)
    return f"{stem}@{new}" if at and stem.isdigit() else new


def _copy_star(source: Path, target: Path, session_root: Path) -> dict:
    """Copy a STAR file, relocating relative file paths; returns the blocks written."""
    blocks = read_star(source)
    for name, block in blocks.items():
        if isinstance(block, pd.DataFrame):
            for column in block.columns:
                if block[column].dtype.kind in "OSUT" and block[column].map(_looks_like_path).any():
                    block[column] = [
                        _relocate(v, source=source, session_root=session_root) if _looks_like_path(v) else v
                        for v in block[column]
                    ]
        else:
            for key, value in block.items():
                if _looks_like_path(value):
                    block[key] = _relocate(value, source=source, session_root=session_root)
    write_star(target, blocks)
    return blocks


def dataset_summary(tomograms_star: Path, particles_star: Path | None) -> dict:
    """Pixel size, tomogram and particle counts of an imported dataset (for tomodash.toml)."""
    summary: dict = {}
    blocks = read_star(tomograms_star)
    table = blocks.get("global")
    if isinstance(table, pd.DataFrame) and len(table):
        summary["n_tomograms"] = int(len(table))
        if "rlnTomoTiltSeriesPixelSize" in table:
            summary["pixel_size"] = float(table["rlnTomoTiltSeriesPixelSize"].iloc[0])
    if particles_star is not None:
        parts = read_star(particles_star).get("particles")
        if isinstance(parts, pd.DataFrame):
            summary["n_particles"] = int(len(parts))
    return summary


def check_dataset(tomograms: Path, particles: Path | None, *, symmetry: str | None = None) -> None:
    """Check a dataset the way the jobs after the import will read it, before importing it.

    The tomogram set (compulsory columns, finite numbers, positive pixel sizes and tomogram
    sizes), every tilt series' STAR file and tilt images (present, readable MRC headers of
    one size), the particle set (compulsory columns, numbers, known tomograms, at least one
    particle) and the symmetry name. Paths inside the files are resolved as the import
    resolves them (from each file's directory upwards).

    Raises
    ------
    InputError
        Naming the file, table, column and row at fault.
    """
    tomogram_set = TomogramSet.read(tomograms, root=tomograms.parent)
    if len(tomogram_set) == 0:
        raise InputError("the tomogram set has no tilt series", file=tomograms, table="global")
    for tomogram in tomogram_set:
        check_tilt_images(tomogram, root=tomograms.parent)
    if particles is not None:
        particle_set = ParticleSet.read(particles, tomogram_set)
        if len(particle_set) == 0:
            raise InputError("the particle set has no particles", file=particles, table="particles")
    if symmetry:
        try:
            normalise_symmetry_name(symmetry)
        except InputError as exc:
            raise InputError(exc.message, column="symmetry") from None


def import_dataset(session: Session, tomograms: str | os.PathLike, particles: str | os.PathLike | None,
                   *, alias: str | None = None, symmetry: str | None = None,
                   dataset_name: str | None = None) -> JobInfo:
    """Import ``tomograms`` (+ ``particles``) as a new Import job of ``session``.

    Parameters
    ----------
    session
        The target session.
    tomograms, particles
        tomograms.star and particles.star (paths relative to the current directory or
        absolute). ``particles`` may be ``None`` (tomograms only).
    alias
        Optional alias of the Import job.
    symmetry
        The particle's point group if known; stored in the session settings (part of the
        dataset fingerprint used by presets).
    dataset_name
        Stored in the settings (default: the tomograms file's directory name).

    Returns
    -------
    JobInfo
        The Import job (status ``Succeeded``).

    Raises
    ------
    InputError
        If a file is missing or unreadable; no job is left behind then.
    """
    tomo_src = Path(tomograms).resolve()
    part_src = Path(particles).resolve() if particles else None
    params = ImportTomoParameters(in_tomograms=str(tomo_src), do_coords=part_src is not None,
                                  in_coords=str(part_src) if part_src else "")
    problems = params.problems()
    if problems:
        from .project import JobValidationError
        raise JobValidationError(problems, ImportTomoParameters)
    # Check the whole dataset before creating anything, so bad input leaves no job directory.
    check_dataset(tomo_src, part_src, symmetry=symmetry)

    info = session.create_job(IMPORT_JOB_TYPE, params, alias=alias, status=SCHEDULED)
    job_dir = info.path
    try:
        _copy_star(tomo_src, job_dir / "tomograms.star", session.root)
        outputs = ["tomograms.star"]
        if part_src is not None:
            _copy_star(part_src, job_dir / "particles.star", session.root)
            outputs.append("particles.star")
            OptimisationSet(particles=f"{info.name}particles.star",
                            tomograms=f"{info.name}tomograms.star").write(job_dir / "optimisation_set.star")
        write_note(job_dir, [f"tomodash import {tomo_src}" + (f" {part_src}" if part_src else "")])
        with open(job_dir / "run.out", "a", encoding="utf-8") as out:
            out.write(f"Imported {tomo_src}\n" + (f"Imported {part_src}\n" if part_src else ""))
        (job_dir / "run.err").touch()
    except BaseException as exc:
        (job_dir / "run.err").write_text(f"ERROR: {exc}\n")
        session.set_status(info.name, "Failed", touch_markers=True)
        raise
    if part_src is None:
        with session.edit_pipeline("drop absent import outputs") as pipe:
            for node in (f"{info.name}particles.star", f"{info.name}optimisation_set.star"):
                pipe.output_edges = [e for e in pipe.output_edges if e[1] != node]
                pipe.nodes = [n for n in pipe.nodes if n.name != node]
    info = session.set_status(info.name, SUCCEEDED, touch_markers=True)

    summary = dataset_summary(job_dir / "tomograms.star", job_dir / "particles.star" if part_src else None)
    sim = tomo_src.parent / "simulation.json"
    if symmetry is None and sim.is_file():
        try:
            symmetry = json.loads(sim.read_text()).get("parameters", {}).get("symmetry")
        except (ValueError, AttributeError):
            symmetry = None
    session.update_settings(
        dataset=dataset_name or tomo_src.parent.name, dataset_tomograms=str(tomo_src),
        dataset_particles=str(part_src) if part_src else None, import_job=info.name,
        symmetry=symmetry, **summary,
    )
    return info


def create_session(root: str | os.PathLike, *, demo_preset: str | None = None,
                   import_files: tuple[str | os.PathLike, str | os.PathLike] | None = None,
                   title: str | None = None, symmetry: str | None = None,
                   log: Callable[[str], None] | None = None) -> Session:
    """A new session: with the simulated dataset of ``demo_preset`` imported as job 1, or with
    ``import_files`` (tomograms.star, particles.star) imported, or empty. What ``tomodash
    session new`` and the dashboard's "New session" form do."""
    if demo_preset and import_files:
        raise InputError("give a demo preset or files to import, not both", column="import_files")
    root_path = Path(root)
    if root_path.exists() and not root_path.is_dir():
        raise InputError("exists and is not a directory; choose a new directory for the session", file=root_path)
    if symmetry:
        try:
            normalise_symmetry_name(symmetry)
        except InputError as exc:
            raise InputError(exc.message, column="symmetry") from None
    if import_files:
        # Refuse a broken dataset before the session directory is made.
        check_dataset(Path(import_files[0]).resolve(), Path(import_files[1]).resolve(), symmetry=symmetry)
    existed = root_path.exists()
    before = {p.name for p in root_path.iterdir()} if existed else set()
    try:
        if demo_preset:
            session = create_demo_session(root, preset=demo_preset, log=log, title=title)
        else:
            session = Session.create(root, title=title)
            if import_files:
                import_dataset(session, import_files[0], import_files[1], symmetry=symmetry)
        if symmetry:
            session.update_settings(symmetry=symmetry)
    except BaseException:
        # A half-made session would block the retry ("directory is not empty"): remove what
        # this call made, and only that (a directory that existed keeps its earlier entries).
        if root_path.is_dir():
            if not existed:
                shutil.rmtree(root_path, ignore_errors=True)
            else:
                for child in root_path.iterdir():
                    if child.name not in before:
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child, ignore_errors=True)
                        else:
                            child.unlink(missing_ok=True)
        raise
    return session


def create_demo_session(root: str | os.PathLike, *, preset: str = "demo",
                        log: Callable[[str], None] | None = None, title: str | None = None,
                        duplicate_fraction: float = 0.0, decoy_fraction: float = 0.0) -> Session:
    """A new session holding the simulated demo dataset (``Dataset/``) imported as job 1.

    Parameters
    ----------
    root
        New session directory.
    preset
        Simulator preset (``demo``; ``test`` is a tiny dataset for tests).
    log
        Progress messages of the simulation.
    duplicate_fraction
        Fraction of the particles picked a second time a few Å away (the simulator's planted
        duplicates, listed in ``Dataset/simulation.json``), for duplicate removal to find.
    decoy_fraction
        Fraction of the lattice sites picked with no complex there (the simulator's planted
        decoys: empty membrane), for 3D classification to separate.
    """
    import dataclasses

    from processing.simulate import get_preset, simulate_dataset

    sim_params = get_preset(preset)
    if duplicate_fraction or decoy_fraction:
        sim_params = dataclasses.replace(sim_params, duplicate_fraction=duplicate_fraction,
                                         decoy_fraction=decoy_fraction)
    session = Session.create(root, title=title or f"tomodash {preset} session")
    result = simulate_dataset(sim_params, session.root / "Dataset", log=log)
    import_dataset(session, result.files["tomograms"], result.files["particles"],
                   symmetry=sim_params.symmetry, dataset_name=f"simulated ({preset})")
    session.update_settings(simulation_preset=preset, default_preset="demo" if preset == "demo" else None,
                            truth_map=Path(result.files["truth_map"]).resolve().relative_to(session.root).as_posix())
    return session
