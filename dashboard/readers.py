"""Reading what jobs leave on disk, for the dashboard: progress, logs, per-iteration refine
statistics, FSC curves and orthoslices of maps.

Pure functions of files (no web imports); :mod:`dashboard.watcher` caches their results by
file modification time so twenty viewers cost one read.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from processing.errors import InputError

__all__ = ["read_progress", "tail_text", "RefineIteration", "read_refine_iteration", "refine_iterations",
           "FscCurve", "read_fsc_star", "final_iteration", "refine_model_files", "FINAL_MODEL", "read_volume", "orthoslices", "MAP_NAMES", "input_candidates",
           "pattern_globs", "ParticleStats", "read_particle_stats", "refine_data_file"]

_IT_MODEL = re.compile(r"^run_it(\d{3,})_half1_model\.star$")


def read_progress(path: Path) -> dict | None:
    """``progress.json`` as a dict (``None`` if absent or unreadable)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def tail_text(path: Path, lines: int = 80, max_bytes: int = 64_000) -> str:
    """The last ``lines`` lines of a text file (reads at most ``max_bytes`` from its end)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    # Progress bars use carriage returns: keep only the last state of each line.
    out = [line.rsplit("\r", 1)[-1] for line in text.rstrip("\n").split("\n")]
    return "\n".join(out[-lines:])


@dataclass(frozen=True)
class FscCurve:
    """An FSC curve: spatial frequency (1/Å), FSC per shell."""

    frequency: np.ndarray
    fsc: np.ndarray

    def resolution_at(self, threshold: float) -> float | None:
        """Resolution (Å) where the curve first drops below ``threshold`` (linear interpolation)."""
        f, c = self.frequency, self.fsc
        for i in range(1, len(c)):
            if c[i] < threshold:
                if c[i - 1] == c[i]:
                    x = f[i]
                else:
                    x = f[i - 1] + (c[i - 1] - threshold) / (c[i - 1] - c[i]) * (f[i] - f[i - 1])
                return float(1.0 / x) if x > 0 else None
        return None


@dataclass(frozen=True)
class RefineIteration:
    """What the dashboard plots of one refine iteration (from its model and sampling files)."""

    iteration: int
    resolution: float                  # rlnCurrentResolution (Å)
    fsc: FscCurve                      # rlnGoldStandardFsc
    accuracy_rotations: float          # degrees (999: not yet estimated)
    accuracy_translations: float       # Å
    angular_step: float | None         # degrees, after oversampling (psi step / 2)
    healpix_order: int | None
    offset_step: float | None          # Å
    ori_size: int
    pixel_size: float
    final: bool = False                # the converged iteration (run_model.star, halves joined)

    @property
    def nyquist(self) -> float:
        """Å: two pixels."""
        return 2.0 * self.pixel_size

    @property
    def nyquist_limited(self) -> bool:
        """The FSC stays above 0.143 up to the last shell before Nyquist: the map is limited by
        the pixel size (re-extract at a smaller binning), not by the data."""
        last = self.ori_size // 2 - 1
        values = self.fsc.fsc
        return bool(values.size > last >= 1 and np.all(values[1:last + 1] >= 0.143))


#: The converged iteration's model (relion_refine writes it without ``_itNNN`` once the halves are joined).
FINAL_MODEL = "run_model.star"


def refine_iterations(names: list[str]) -> list[int]:
    """Iteration numbers with a half1 model in a directory listing, ascending (the converged
    iteration, written as ``run_model.star``, is not among them: see :func:`final_iteration`)."""
    return sorted(int(m.group(1)) for n in names if (m := _IT_MODEL.match(n)))


def final_iteration(names: list[str]) -> int | None:
    """The number of the converged iteration (one after the last ``run_itNNN`` model) when the
    listing holds ``run_model.star``, else None."""
    if FINAL_MODEL not in names:
        return None
    numbers = refine_iterations(names)
    return numbers[-1] + 1 if numbers else 1


def refine_model_files(job_dir: Path, iteration: int, *, final: bool = False) -> tuple[Path, Path]:
    """(model, sampling) files of one iteration; ``final``: the converged iteration's."""
    root = Path(job_dir) / ("run" if final else f"run_it{iteration:03d}")
    return Path(f"{root}_model.star" if final else f"{root}_half1_model.star"), Path(f"{root}_sampling.star")


def read_refine_iteration(job_dir: Path, iteration: int, *, final: bool = False) -> RefineIteration:
    from processing.io.refine_star import ModelStarContents, SamplingStarContents, shell_resolutions

    model_path, sampling_path = refine_model_files(job_dir, iteration, final=final)
    model = ModelStarContents.read(model_path)
    frequency, _ = shell_resolutions(model.ori_size, model.pixel_size)
    angular = order = offset = None
    if sampling_path.is_file():
        try:
            sampling = SamplingStarContents.read(sampling_path)
            order, angular, offset = sampling.healpix_order, sampling.psi_step / 2.0, sampling.offset_step / 2.0
        except InputError:
            pass
    return RefineIteration(
        iteration=iteration, resolution=float(model.current_resolution),
        fsc=FscCurve(np.asarray(frequency, float), np.asarray(model.gold_standard_fsc, float)),
        accuracy_rotations=float(model.accuracy_rotations),
        accuracy_translations=float(model.accuracy_translations_angst),
        angular_step=angular, healpix_order=order, offset_step=offset,
        ori_size=int(model.ori_size), pixel_size=float(model.pixel_size), final=final,
    )


def read_fsc_star(path: Path) -> FscCurve:
    """``fsc.star`` of Reconstruct particle (``data_fsc``) or a postprocess-like FSC table."""
    from processing.io.star import read_star

    blocks = read_star(path)
    table = blocks.get("fsc")
    if table is None:
        table = next(iter(blocks.values()))
    column = next((c for c in ("rlnFourierShellCorrelationUnmaskedMaps", "rlnFourierShellCorrelationCorrected",
                               "rlnFourierShellCorrelation", "rlnGoldStandardFsc") if c in table), None)
    if column is None or "rlnResolution" not in table:
        raise InputError("no FSC column", file=path)
    return FscCurve(np.asarray(table["rlnResolution"], float), np.asarray(table[column], float))


@dataclass(frozen=True)
class ParticleStats:
    """Per-particle results of one refine iteration (``run_itNNN_data.star``), ``(n,)`` each."""

    rot: np.ndarray          # degrees
    tilt: np.ndarray         # degrees
    pmax: np.ndarray         # rlnMaxValueProbDistribution
    n_significant: np.ndarray  # rlnNrOfSignificantSamples
    tomogram: np.ndarray     # rlnTomoName (str)
    #: Å, the particle's centre in its tomogram (rlnCenteredCoordinate{X,Y,Z}Angst); NaN when absent
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray


def refine_data_file(job_dir: Path, iteration: int, *, final: bool = False) -> Path:
    """``run_itNNN_data.star`` (``run_data.star`` for the converged iteration)."""
    return Path(job_dir) / ("run_data.star" if final else f"run_it{iteration:03d}_data.star")


def read_particle_stats(path: Path) -> ParticleStats:
    """The per-particle columns of a refinement's data file the monitor plots."""
    from processing.io.star import read_star

    table = read_star(path).get("particles")
    if table is None:
        raise InputError("no particles table", file=path, table="particles")
    n = len(table)

    def column(label: str, default: float = np.nan) -> np.ndarray:
        if label not in table:
            return np.full(n, default)
        return np.asarray(table[label], dtype=np.float64)

    return ParticleStats(
        rot=column("rlnAngleRot", 0.0), tilt=column("rlnAngleTilt", 0.0), pmax=column("rlnMaxValueProbDistribution"),
        n_significant=column("rlnNrOfSignificantSamples"),
        tomogram=np.asarray(table["rlnTomoName"], dtype=str) if "rlnTomoName" in table else np.full(n, ""),
        x=column("rlnCenteredCoordinateXAngst"), y=column("rlnCenteredCoordinateYAngst"),
        z=column("rlnCenteredCoordinateZAngst"),
    )


#: Map files of each kind of job the monitor can show, by role.
MAP_NAMES = {
    "reconstruct": {"half1": "half1.mrc", "half2": "half2.mrc", "merged": "merged.mrc"},
}


def read_volume(path: Path) -> tuple[np.ndarray, float]:
    """A map as float32 ``[z, y, x]`` and its pixel size (Å)."""
    from processing.io.mrc import read_mrc

    data = read_mrc(path)
    vol = np.asarray(data.data, dtype=np.float32)
    if vol.ndim != 3:
        raise InputError("not a 3D map", file=path)
    return vol, float(data.pixel_size)


def orthoslices(vol: np.ndarray, z: int | None = None, y: int | None = None,
                x: int | None = None) -> dict[str, np.ndarray]:
    """XY (at z), XZ (at y) and YZ (at x) sections; the centre by default. Arrays are
    ``[row, col]`` with rows the second-named axis (so XZ has z as rows)."""
    nz, ny, nx = vol.shape
    z = nz // 2 if z is None else int(np.clip(z, 0, nz - 1))
    y = ny // 2 if y is None else int(np.clip(y, 0, ny - 1))
    x = nx // 2 if x is None else int(np.clip(x, 0, nx - 1))
    return {"XY": np.ascontiguousarray(vol[z, :, :]), "XZ": np.ascontiguousarray(vol[:, y, :]),
            "YZ": np.ascontiguousarray(vol[:, :, x])}


def pattern_globs(pattern: str) -> list[str]:
    """File globs of a RELION file-chooser pattern: ``"Image Files (*.{spi,vol,mrc})"`` ->
    ``["*.spi", "*.vol", "*.mrc"]``; ``"*optimisation_set.star"`` -> itself."""
    inner = re.search(r"\(([^)]*)\)", pattern)
    text = inner.group(1) if inner else pattern
    out: list[str] = []
    for part in text.split():
        brace = re.match(r"^(.*)\{([^}]*)\}(.*)$", part)
        if brace:
            out += [f"{brace.group(1)}{alt}{brace.group(3)}" for alt in brace.group(2).split(",")]
        else:
            out.append(part)
    return out


def input_candidates(session, meta: dict, *, listing: Callable[[Any], list[str]] | None = None) -> list[str]:
    """Paths (relative to the session) an input field may take: pipeline nodes whose type starts
    with ``meta["node"]`` (files that exist first: a job registers its outputs when it is made,
    and one stopped early may never write some; then finished jobs first, newest first), then
    files in job directories matching ``meta["pattern"]``."""
    if session is None:
        return []
    pipe = session.read_pipeline()
    order = {p.name: i for i, p in enumerate(pipe.processes)}
    out: list[str] = []
    node_type = meta.get("node")
    if node_type:
        generic = node_type.split(".")[0]
        # A generic label's keywords (DensityMap.mrc.halfmap: "halfmap") may sit anywhere in a
        # job's label (DensityMap.mrc.relion.halfmap.refine3d), as in RELION's node browser.
        keywords = set(node_type.split(".")[2:])
        nodes = [n for n in pipe.nodes if n.type_label.startswith(node_type)
                 or n.type_label.split(".")[0] == generic and keywords <= set(n.type_label.split(".")[2:])]
        status = {p.name: p.status for p in pipe.processes}

        def rank(node):
            producer = pipe.producer_of(node.name) or ""
            return (not (session.root / node.name).exists(), status.get(producer) != "Succeeded",
                    -order.get(producer, -1))

        nodes.sort(key=rank)
        out += [n.name for n in nodes]
    globs = pattern_globs(meta.get("pattern", "")) if meta.get("pattern") else []
    if globs and not node_type:
        for proc in reversed(pipe.processes):
            names = listing(proc) if listing else _listdir(session.root / proc.name)
            for name in names:
                if any(fnmatch.fnmatch(name, g) for g in globs):
                    out.append(f"{proc.name}{name}")
    seen: set[str] = set()
    return [p for p in out if not (p in seen or seen.add(p))]


def _listdir(path: Path) -> list[str]:
    try:
        return sorted((p.name for p in path.iterdir()), reverse=True)
    except OSError:
        return []
