"""The answer a finished job gives, as its monitor, the pipeline table and the compare page show
it: 3D auto-refine's final resolution (and whether the pixel size limits it), iterations,
accuracies and maps; Reconstruct particle's half-map resolution; Extract's particles and tilt
images. Pure functions of what the jobs wrote (the watcher caches the files they read).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from processing.errors import InputError
from processing.fourier.fsc import resolution_shell

from .readers import FscCurve, RefineIteration

__all__ = ["Headline", "RefineForecast", "refine_forecast", "refine_headline", "reconstruct_headline", "extract_headline", "read_extract_counts",
           "format_duration"]


@dataclass(frozen=True)
class Headline:
    """A job's result in one line (``title``), a few facts, and a warning where the number is not
    what it seems."""

    title: str
    facts: tuple[str, ...] = ()
    warning: str = ""
    #: the headline number: Å for resolutions, particles for an extraction
    value: float | None = None

    @property
    def badge(self) -> str:
        """The short form for tables: the title, marked when there is a warning."""
        if self.warning.startswith("Nyquist"):
            return self.title + " (Nyquist)"
        if self.warning.startswith("Not converged"):
            return self.title + " (not converged)"
        return self.title


def format_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s" if seconds < 600 else f"{round(seconds / 60)} min"
    return f"{seconds // 3600} h {(seconds % 3600) // 60} min"


def _nyquist_warning(pixel_size: float) -> str:
    return (f"Nyquist-limited: the FSC stays above 0.143 up to the pixel size's limit "
            f"({2 * pixel_size:.2f} Å). The data may hold more: re-extract at a smaller binning.")


def refine_headline(history: list[RefineIteration], *, job_dir: str, elapsed: float | None) -> Headline | None:
    """A refinement's result: the converged iteration's, or the last one's with a warning when
    ``--auto_iter_max`` stopped it first; None before any iteration.

    Parameters
    ----------
    history
        Every iteration, the converged one (``final``) last.
    job_dir
        The job's directory as the session names it (``Refine3D/job004/``), for the map paths.
    elapsed
        Seconds from launch to the end, when known.
    """
    if not history:
        return None
    last = history[-1]
    n = len(history) - 1
    facts = [f"{n} iteration{'s' if n != 1 else ''} after the initial model"
             + (f" · {format_duration(elapsed)}" if elapsed is not None else "")]
    if not last.final:
        # relion_refine writes the joined map only at convergence; --auto_iter_max ended it first.
        return Headline(title=f"{last.resolution:.2f} Å", facts=tuple(facts), value=last.resolution,
                        warning=f"Not converged: --auto_iter_max stopped the run after iteration {last.iteration}, "
                                "before the half maps were joined; this is a half map's resolution.")
    measured = [it for it in history if it.accuracy_rotations < 999]
    if measured:
        facts.append(f"accuracy {measured[-1].accuracy_rotations:.2f}° (rotations), "
                     f"{measured[-1].accuracy_translations:.2f} Å (translations)")
    facts.append(f"map: {job_dir}run_class001.mrc")
    facts.append(f"half maps: {job_dir}run_half1_class001_unfil.mrc, {job_dir}run_half2_class001_unfil.mrc")
    return Headline(title=f"{last.resolution:.2f} Å", facts=tuple(facts),
                    warning=_nyquist_warning(last.pixel_size) if last.nyquist_limited else "",
                    value=last.resolution)


@dataclass(frozen=True)
class RefineForecast:
    """How much of a running refinement is left, at least."""

    #: HEALPix refinements still needed before the sampling is fine enough for the accuracy
    refinements: int
    #: iterations left: two per refinement (one that makes the sampling finer, one without a
    #: resolution gain that allows the next), one that finds the sampling fine enough, the final one
    iterations: int
    #: seconds, from the recent iterations' pace; None before two iterations are timed
    seconds: float | None

    def text(self) -> str:
        eta = f", ~{format_duration(self.seconds)}" if self.seconds is not None else ""
        return f"≥ {self.iterations} more iteration{'s' if self.iterations != 1 else ''}{eta} to convergence"


def refine_forecast(history: list[RefineIteration], iteration_seconds: list[float]) -> RefineForecast | None:
    """A lower bound on what is left of a running auto-refine, from RELION's schedule
    (``updateAngularSampling``: the angular step halves until it is below 0.75 × the estimated
    rotational accuracy; convergence needs that and an iteration without resolution gain),
    assuming the accuracy stays where it is. None when converged or before an accuracy exists."""
    if not history or history[-1].final:
        return None
    last = history[-1]
    if last.angular_step is None or not 0 < last.accuracy_rotations < 999:
        return None
    target = 0.75 * last.accuracy_rotations
    refinements, step = 0, last.angular_step
    while step >= target and refinements < 12:
        step /= 2.0
        refinements += 1
    iterations = 2 * refinements + 2
    if refinements == 0 and len(history) >= 2 and history[-2].angular_step == last.angular_step \
            and last.resolution >= history[-2].resolution - 1e-6:
        # the sampling was already found fine enough and this iteration gained nothing: the
        # next one is the final one
        iterations = 1
    recent = [t for t in iteration_seconds[-3:] if t > 0]
    seconds = float(np.median(recent)) * iterations if recent else None
    return RefineForecast(refinements=refinements, iterations=iterations, seconds=seconds)


def reconstruct_headline(fsc: FscCurve | None, listing: list[str]) -> Headline | None:
    """The half-map resolution of Reconstruct particle, by RELION's rule (the last shell before
    the FSC first drops below 0.143, as the job's log reports it); the merged map alone when the
    particles had no half sets; None before the maps exist."""
    if "merged.mrc" not in listing:
        return None
    if fsc is None or fsc.fsc.size < 2:
        return Headline(title="map written", facts=("no half maps (the particles have no random half sets)",))
    shell = resolution_shell(fsc.fsc, threshold=0.143)
    if shell == 0:
        return Headline(title="no resolution", facts=("the half maps do not agree even at the lowest shell",),
                        warning="The half-map FSC is below 0.143 at the first shell: check the particles.")
    resolution = 1.0 / float(fsc.frequency[shell])
    never_below = bool(np.all(fsc.fsc[1:] >= 0.143))
    return Headline(title=f"{resolution:.2f} Å", facts=("half-map FSC 0.143 (unmasked)",), value=resolution,
                    warning=_nyquist_warning(resolution / 2) if never_below else "")


def read_extract_counts(particles_star: Path) -> tuple[int, int]:
    """(particles, tilt images) an extraction wrote: rows of its particles table, and the
    visible frames summed over them (``rlnTomoVisibleFrames``; every frame when absent)."""
    from processing.io.star import read_star

    blocks = read_star(particles_star)
    table = blocks.get("particles")
    if table is None:
        raise InputError("no particles table", file=particles_star, table="particles")
    n = len(table)
    if "rlnTomoVisibleFrames" not in table:
        return n, 0
    tilts = 0
    for value in table["rlnTomoVisibleFrames"]:
        if isinstance(value, str):           # "[1,1,0,...]" when the reader left it as text
            value = [v for v in value.strip("[] ").split(",") if v.strip()]
        tilts += int(np.count_nonzero(np.asarray(value, dtype=float)))
    return n, tilts


def extract_headline(counts: tuple[int, int] | None) -> Headline | None:
    if counts is None:
        return None
    particles, tilts = counts
    return Headline(title=f"{particles} particles",
                    facts=(f"{tilts} tilt images ({tilts / particles:.1f} per particle)",) if particles and tilts else (),
                    value=float(particles))
