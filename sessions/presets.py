"""Presets: named parameter sets per job type, keyed by the dataset they were made for.

A preset holds the job.star options it sets (only those), the job type, and a *fingerprint*
of the dataset it fits: tilt-series pixel size, binning, particle box and symmetry. Applying
a preset to a dataset with a different fingerprint works but warns
(:class:`PresetMismatchWarning`) and says what differs.

Where presets live, searched in this order:

1. the session: ``<session>/presets/<name>.star``;
2. the user: ``$TOMODASH_PRESETS`` or ``~/.config/tomodash/presets/<name>.star``;
3. built in: the RELION 5 STA tutorial's settings (HIV VLPs, 1.35 Å tilt series) and a
   scaled set for the simulated demo dataset (2.7 Å tilt series, bin 3).

File format: a job.star (``data_job`` + ``data_joboptions_values``, so RELION can read it as a
job) plus a ``data_tomodash_preset`` table with the name, description and fingerprint.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from processing.errors import InputError
from processing.io.jobstar import JobStar
from processing.io.star import read_star, write_star
from processing.jobs.base import JobParameters

from .jobtypes import get_job_type, job_type_for_label

__all__ = [
    "Fingerprint", "Preset", "PresetMismatchWarning", "BUILTIN_PRESETS", "user_preset_dir",
    "list_presets", "find_preset", "save_preset", "dataset_fingerprint", "apply_preset",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class PresetMismatchWarning(UserWarning):
    """A preset was applied to a dataset it was not made for."""


@dataclass(frozen=True)
class Fingerprint:
    """What a dataset (or the dataset a preset was made for) looks like.

    Attributes
    ----------
    pixel_size : tilt-series pixel size (Å).
    binning : binning of the particles the job works on (or produces, for Extract).
    box : final particle box in binned pixels (the cropped size).
    symmetry : point group of the particle.
    """

    pixel_size: float | None = None
    binning: float | None = None
    box: int | None = None
    symmetry: str | None = None

    def describe(self) -> str:
        parts = []
        if self.pixel_size is not None:
            parts.append(f"tilt-series pixel {self.pixel_size:g} Å")
        if self.binning is not None:
            parts.append(f"binning {self.binning:g}")
        if self.box is not None:
            parts.append(f"box {self.box}")
        if self.symmetry:
            parts.append(f"symmetry {self.symmetry}")
        return ", ".join(parts) or "unspecified"

    def mismatches(self, other: "Fingerprint", fields: tuple[str, ...] = ("pixel_size", "binning", "box",
                                                                           "symmetry")) -> list[str]:
        """What differs between ``self`` (the preset's) and ``other`` (the dataset's); fields
        unknown on either side are not compared."""
        out = []
        if "pixel_size" in fields and self.pixel_size and other.pixel_size and \
                not math.isclose(self.pixel_size, other.pixel_size, rel_tol=0.01):
            out.append(f"pixel size {self.pixel_size:g} Å vs {other.pixel_size:g} Å")
        if "binning" in fields and self.binning and other.binning and \
                not math.isclose(self.binning, other.binning, rel_tol=1e-3):
            out.append(f"binning {self.binning:g} vs {other.binning:g}")
        if "box" in fields and self.box and other.box and self.box != other.box:
            out.append(f"box {self.box} vs {other.box}")
        if "symmetry" in fields and self.symmetry and other.symmetry and \
                self.symmetry.upper() != other.symmetry.upper():
            out.append(f"symmetry {self.symmetry} vs {other.symmetry}")
        return out


@dataclass(frozen=True)
class Preset:
    """A named parameter set for one job type."""

    name: str
    job_type: str
    options: dict[str, str]
    fingerprint: Fingerprint = Fingerprint()
    description: str = ""
    source: str = "builtin"
    path: Path | None = field(default=None, compare=False)

    def params(self, base: JobParameters | None = None) -> JobParameters:
        """Parameters with this preset's options applied over ``base`` (or the defaults).

        Raises
        ------
        InputError
            If an option does not fit the job type's class.
        """
        cls = get_job_type(self.job_type).params_class
        options = base.to_job_options() if base is not None else {}
        options.update(self.options)
        by_var = {cls.param[n].metadata["var"] for n in cls.fields()}
        unknown = sorted(set(self.options) - by_var)
        if unknown:
            raise InputError(f"preset {self.name!r}: {cls.__name__} has no option(s) {', '.join(unknown)}")
        return cls.from_job_options(options, source=f"preset {self.name}")

    # ---- files -------------------------------------------------------------------------------

    def write(self, path: str | os.PathLike) -> Path:
        """Write as ``<name>.star`` in job.star format (+ ``data_tomodash_preset``)."""
        path = Path(path)
        cls = get_job_type(self.job_type).params_class
        keys = sorted(self.options, key=lambda k: k.encode())
        fp = self.fingerprint
        write_star(path, {
            "job": {"rlnJobTypeLabel": cls.job_type_label, "rlnJobIsContinue": 0,
                    "rlnJobIsTomo": int(bool(cls.is_tomo))},
            "joboptions_values": pd.DataFrame({
                "rlnJobOptionVariable": pd.Series(keys, dtype=object),
                "rlnJobOptionValue": pd.Series([str(self.options[k]) for k in keys], dtype=object)}),
            "tomodash_preset": {
                "tomodashPresetName": self.name,
                "tomodashPresetJobType": self.job_type,
                "tomodashPresetDescription": self.description,
                "tomodashPresetPixelSize": -1.0 if fp.pixel_size is None else float(fp.pixel_size),
                "tomodashPresetBinning": -1.0 if fp.binning is None else float(fp.binning),
                "tomodashPresetBox": -1 if fp.box is None else int(fp.box),
                "tomodashPresetSymmetry": fp.symmetry or "",
            },
        })
        return path

    @classmethod
    def read(cls, path: str | os.PathLike, *, source: str = "file") -> "Preset":
        """Read a preset file (a plain job.star is accepted too: no fingerprint then)."""
        path = Path(path)
        star = JobStar.read(path)
        meta = read_star(path, parse_as_string=["tomodashPresetName", "tomodashPresetDescription",
                                                "tomodashPresetSymmetry", "tomodashPresetJobType"]
                         ).get("tomodash_preset", {})
        meta = meta if isinstance(meta, dict) else {}
        jt_name = str(meta.get("tomodashPresetJobType") or "")
        if not jt_name:
            jt = job_type_for_label(star.type_label)
            if jt is None:
                raise InputError(f"unknown job type {star.type_label!r}", file=path, column="rlnJobTypeLabel")
            jt_name = jt.name

        def num(key: str) -> float | None:
            value = meta.get(key)
            try:
                value = float(value)
            except (TypeError, ValueError):
                return None
            return None if value <= 0 else value

        box = num("tomodashPresetBox")
        fp = Fingerprint(num("tomodashPresetPixelSize"), num("tomodashPresetBinning"),
                         int(box) if box else None, str(meta.get("tomodashPresetSymmetry") or "") or None)
        return cls(name=str(meta.get("tomodashPresetName") or path.stem), job_type=jt_name,
                   options=dict(star.options), fingerprint=fp,
                   description=str(meta.get("tomodashPresetDescription") or ""), source=source, path=path)


# ---- built-in presets ------------------------------------------------------------------------

_TUTORIAL_PX = 1.35  # RELION 5 STA tutorial (HIV VLPs): tilt-series pixel size after motion correction
_DEMO_PX = 2.7       # processing.simulate DEMO preset

_BUILTIN: list[Preset] = [
    Preset("tutorial-bin6-extract", "extract",
           {"binning": "6", "box_size": "192", "crop_size": "96", "max_dose": "50", "min_frames": "1",
            "do_stack2d": "Yes", "do_float16": "Yes"},
           Fingerprint(_TUTORIAL_PX, 6, 96, "C6"),
           "RELION 5 STA tutorial: Extract subtomos at bin 6 (box 192, crop 96, max dose 50)"),
    Preset("tutorial-bin6-reconstruct", "reconstruct",
           {"binning": "6", "box_size": "192", "crop_size": "96", "sym_name": "C6"},
           Fingerprint(_TUTORIAL_PX, 6, 96, "C6"),
           "RELION 5 STA tutorial: Reconstruct particle at bin 6, C6"),
    Preset("tutorial-bin6-refine3d", "refine3d",
           {"ref_correct_greyscale": "Yes", "ini_high": "60", "sym_name": "C6", "particle_diameter": "500",
            "sampling": "7.5 degrees", "auto_local_sampling": "1.8 degrees", "sigma_tilt": "10",
            "nr_pool": "30", "nr_mpi": "5", "nr_threads": "6"},
           Fingerprint(_TUTORIAL_PX, 6, 96, "C6"),
           "RELION 5 STA tutorial: 3D auto-refine at bin 6 (mask 500 Å, C6, low-pass 60 Å, 7.5°, "
           "local from 1.8°, tilt prior 10°, pool 30, 5 MPI x 6 threads)"),
    Preset("tutorial-bin2-extract", "extract",
           {"binning": "2", "box_size": "256", "crop_size": "128", "max_dose": "50", "min_frames": "1",
            "do_stack2d": "Yes", "do_float16": "Yes"},
           Fingerprint(_TUTORIAL_PX, 2, 128, "C6"),
           "RELION 5 STA tutorial: re-extract at bin 2 (box 256, crop 128, max dose 50, 2D stacks, float16)"),
    Preset("tutorial-bin2-reconstruct", "reconstruct",
           {"binning": "2", "box_size": "256", "crop_size": "128", "sym_name": "C6"},
           Fingerprint(_TUTORIAL_PX, 2, 128, "C6"),
           "RELION 5 STA tutorial: Reconstruct particle at bin 2, C6"),
    Preset("tutorial-bin2-refine3d", "refine3d",
           {"ref_correct_greyscale": "Yes", "ini_high": "20", "sym_name": "C6", "particle_diameter": "230",
            "sampling": "7.5 degrees", "auto_local_sampling": "1.8 degrees", "sigma_tilt": "10",
            "nr_pool": "30", "nr_mpi": "5", "nr_threads": "6"},
           Fingerprint(_TUTORIAL_PX, 2, 128, "C6"),
           "RELION 5 STA tutorial: 3D auto-refine at bin 2 (low-pass 20 Å, mask 230 Å)"),
    Preset("demo-extract", "extract",
           {"binning": "3", "box_size": "64", "crop_size": "40", "max_dose": "30", "min_frames": "1",
            "do_stack2d": "Yes", "do_float16": "Yes", "nr_threads": "2"},
           Fingerprint(_DEMO_PX, 3, 40, "C6"),
           "Simulated demo dataset: Extract subtomos at bin 3 (8.1 Å), box 64, crop 40, max dose 30"),
    Preset("demo-reconstruct", "reconstruct",
           {"binning": "3", "box_size": "64", "crop_size": "40", "sym_name": "C6", "nr_threads": "2"},
           Fingerprint(_DEMO_PX, 3, 40, "C6"),
           "Simulated demo dataset: Reconstruct particle at bin 3, box 64, crop 40, C6"),
    Preset("demo-refine3d", "refine3d",
           # Reconstruct particle's map is not on the refinement's greyscale (as RELION's own is
           # not): cross-correlation in iteration 1 (tests/test_refine_demo.py).
           {"ref_correct_greyscale": "No", "ini_high": "60", "sym_name": "C6", "particle_diameter": "250",
            "sampling": "7.5 degrees", "auto_local_sampling": "1.8 degrees", "sigma_tilt": "10",
            "offset_range": "4", "offset_step": "1", "auto_faster": "Yes",
            "nr_pool": "8", "nr_mpi": "3", "nr_threads": "1"},
           Fingerprint(_DEMO_PX, 3, 40, "C6"),
           "Simulated demo dataset: 3D auto-refine at bin 3 (reference not on absolute greyscale, "
           "low-pass 60 Å, C6, 7.5°, local from 1.8°, tilt prior 10°, mask 250 Å, offsets 4/1 px, "
           "finer sampling faster, 3 MPI)"),
    Preset("demo-bin2-extract", "extract",
           {"binning": "2", "box_size": "96", "crop_size": "64", "max_dose": "30", "min_frames": "1",
            "do_stack2d": "Yes", "do_float16": "Yes", "nr_threads": "2"},
           Fingerprint(_DEMO_PX, 2, 64, "C6"),
           "Simulated demo dataset: re-extract at bin 2 (5.4 Å), box 96, crop 64, with the refined poses"),
    Preset("demo-bin2-reconstruct", "reconstruct",
           {"binning": "2", "box_size": "96", "crop_size": "64", "sym_name": "C6", "nr_threads": "2"},
           Fingerprint(_DEMO_PX, 2, 64, "C6"),
           "Simulated demo dataset: Reconstruct particle at bin 2, box 96, crop 64, C6"),
    Preset("demo-bin2-refine3d", "refine3d",
           # the reference is the bin-2 Reconstruct particle's half1.mrc, as in the tutorial: not on
           # the refinement's greyscale either
           {"ref_correct_greyscale": "No", "ini_high": "30", "sym_name": "C6", "particle_diameter": "250",
            "sampling": "3.7 degrees", "auto_local_sampling": "1.8 degrees", "sigma_tilt": "10",
            "offset_range": "3", "offset_step": "1", "auto_faster": "Yes",
            "nr_pool": "8", "nr_mpi": "3", "nr_threads": "1"},
           Fingerprint(_DEMO_PX, 2, 64, "C6"),
           "Simulated demo dataset: 3D auto-refine at bin 2 from the bin-2 half1 map (low-pass 30 Å, "
           "C6, 3.7°, local from 1.8°, tilt prior 10°, mask 250 Å, offsets 3/1 px, 3 MPI)"),
    Preset("demo-class3d", "class3d",
           # after the bin-2 refinement and the duplicate removal: its map is on the particles'
           # greyscale; local searches around the refined poses keep the demo short
           {"ref_correct_greyscale": "Yes", "ini_high": "30", "sym_name": "C6", "nr_classes": "2", "tau_fudge": "1",
            "nr_iter": "5", "particle_diameter": "250", "sampling": "7.5 degrees", "do_local_ang_searches": "Yes",
            "sigma_angles": "15", "offset_range": "3", "offset_step": "1", "sigma_tilt": "10",
            "nr_pool": "8", "nr_mpi": "3", "nr_threads": "1"},
           Fingerprint(_DEMO_PX, 2, 64, "C6"),
           "Simulated demo dataset: 3D classification at bin 2 into 2 classes, 5 iterations, from the bin-2 "
           "refined map (absolute greyscale, low-pass 30 Å, C6, T 1, mask 250 Å, local searches +/-15° at "
           "7.5°, offsets 3/1 px, tilt prior 10°, 3 MPI)"),
    Preset("demo-select-class", "select",
           {"do_remove_duplicates": "No", "do_select_values": "No"},
           Fingerprint(),
           "Subset selection of classes of a 3D classification (fill in 'Select classes from job' and "
           "'Classes to keep', or tick the classes in the classification's monitor)"),
    Preset("demo-remove-duplicates", "select",
           {"do_remove_duplicates": "Yes", "duplicate_threshold": "30"},
           Fingerprint(),
           "Remove duplicate particles closer than 30 Å (the tutorial's first pass)"),
    Preset("demo-maskcreate", "maskcreate",
           {"lowpass_filter": "20", "extend_inimask": "2", "width_mask_edge": "4"},
           Fingerprint(),
           "Solvent mask of the simulated demo map: low-pass 20 Å, extend 2 px, soft edge 4 px "
           "(the initial threshold depends on the map)"),
    Preset("demo-postprocess", "postprocess",
           {"do_auto_bfac": "Yes", "autob_lowres": "30"},
           Fingerprint(),
           "Post-processing of the simulated demo refinement: automatic B-factor fitted from 30 Å "
           "(the demo's maps stop short of RELION's default 10 Å)"),
]

#: Built-in presets by name.
BUILTIN_PRESETS: dict[str, Preset] = {p.name: p for p in _BUILTIN}


def user_preset_dir() -> Path:
    """``$TOMODASH_PRESETS`` or ``~/.config/tomodash/presets`` (``$XDG_CONFIG_HOME`` honoured)."""
    env = os.environ.get("TOMODASH_PRESETS")
    if env:
        return Path(env)
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "tomodash" / "presets"


def _read_dir(directory: Path, source: str) -> list[Preset]:
    out = []
    if directory.is_dir():
        for path in sorted(directory.glob("*.star")):
            try:
                out.append(Preset.read(path, source=source))
            except InputError as exc:
                warnings.warn(f"ignoring unreadable preset {path}: {exc}", stacklevel=3)
    return out


def list_presets(session=None, job_type: str | None = None) -> list[Preset]:
    """All presets visible from ``session`` (session, user, built-in; a name defined in an
    earlier place hides the later ones), optionally only those of ``job_type``."""
    found: dict[str, Preset] = {}
    places = []
    if session is not None:
        places.append(_read_dir(Path(session.root) / "presets", "session"))
    places.append(_read_dir(user_preset_dir(), "user"))
    places.append(list(BUILTIN_PRESETS.values()))
    for presets in places:
        for p in presets:
            found.setdefault(p.name, p)
    return [p for p in found.values() if job_type is None or p.job_type == get_job_type(job_type).name]


def find_preset(name: str, job_type: str | None = None, session=None) -> Preset:
    """The preset ``name``, or ``<name>-<job type>`` (so ``--preset demo`` works for every type).

    Raises
    ------
    InputError
        Unknown name, or a preset of another job type.
    """
    presets = {p.name: p for p in list_presets(session)}
    candidates = [name]
    if job_type is not None:
        candidates.append(f"{name}-{get_job_type(job_type).name}")
    for candidate in candidates:
        preset = presets.get(candidate)
        if preset is None:
            continue
        if job_type is not None and preset.job_type != get_job_type(job_type).name:
            continue
        return preset
    names = sorted(p.name for p in presets.values()
                   if job_type is None or p.job_type == get_job_type(job_type).name)
    raise InputError(f"no preset {name!r}" + (f" for {job_type} jobs" if job_type else "")
                     + f"; available: {', '.join(names) or 'none'}", column="preset")


def save_preset(preset: Preset, *, session=None, user: bool = False) -> Path:
    """Save in the session's ``presets/`` (default) or, with ``user=True``, the user folder."""
    if not _NAME_RE.match(preset.name):
        raise InputError(f"preset name {preset.name!r}: use letters, digits, '-', '_', '.', '+'", column="preset")
    directory = user_preset_dir() if user or session is None else Path(session.root) / "presets"
    directory.mkdir(parents=True, exist_ok=True)
    return preset.write(directory / f"{preset.name}.star")


def preset_from_params(name: str, job_type: str, params: JobParameters, *, fields: list[str] | None = None,
                       fingerprint: Fingerprint | None = None, description: str = "") -> Preset:
    """A preset holding ``params``' values (all fields, or the named ones)."""
    options = params.to_job_options()
    if fields is not None:
        by_name = {n: params.param[n].metadata["var"] for n in params.fields()}
        options = {by_name[f]: options[by_name[f]] for f in fields}
    return Preset(name, get_job_type(job_type).name, options, fingerprint or Fingerprint(), description, "new")


# ---- fitting a dataset ---------------------------------------------------------------------

def _particles_geometry(session, params: JobParameters) -> tuple[float | None, int | None]:
    """Binning and box of the particles a job reads (from their optics table), if known."""
    from processing.io.optimisation_set import OptimisationSet

    root = Path(session.root)
    path = ""
    try:
        if getattr(params, "use_direct_entries", False):
            path = getattr(params, "in_particles", "")
        elif getattr(params, "in_optimisation", ""):
            opt = OptimisationSet.read(root / session.read_pipeline().resolve_alias_path(params.in_optimisation))
            path = str(opt.particles or "")
        if not path:
            return None, None
        p = Path(path) if os.path.isabs(path) else root / path
        optics = read_star(p).get("optics")
    except (InputError, OSError):
        return None, None
    if not isinstance(optics, pd.DataFrame) or not len(optics):
        return None, None
    binning = float(optics["rlnTomoSubtomogramBinning"].iloc[0]) if "rlnTomoSubtomogramBinning" in optics else None
    box = int(optics["rlnImageSize"].iloc[0]) if "rlnImageSize" in optics else None
    return binning, box


def dataset_fingerprint(session, params: JobParameters | None = None) -> Fingerprint:
    """The fingerprint of a session's dataset, and of the particles ``params`` would read."""
    settings = session.settings
    px = settings.get("pixel_size")
    binning = box = None
    if params is not None:
        binning, box = _particles_geometry(session, params)
    return Fingerprint(float(px) if px else None, binning, box, settings.get("symmetry") or None)


def apply_preset(preset: Preset, session=None, params: JobParameters | None = None) -> tuple[JobParameters, list[str]]:
    """Apply a preset; warn (:class:`PresetMismatchWarning`) if it does not fit the dataset.

    Returns
    -------
    (JobParameters, list of str)
        The parameters and the mismatch messages (empty when it fits or nothing is known).
    """
    new = preset.params(params)
    problems: list[str] = []
    if session is not None:
        fields = ("pixel_size", "symmetry") if preset.job_type == "extract" else \
            ("pixel_size", "binning", "box", "symmetry")
        problems = preset.fingerprint.mismatches(dataset_fingerprint(session, new), fields)
        if problems:
            warnings.warn(
                f"preset {preset.name!r} was made for a dataset with {preset.fingerprint.describe()}; "
                f"this one differs: {'; '.join(problems)}. Check the values before running.",
                PresetMismatchWarning, stacklevel=2)
    return new, problems


__all__ += ["preset_from_params"]

