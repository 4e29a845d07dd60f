"""The tomography input block shared by Extract subtomos, Reconstruct particle and 3D auto-refine.

Either an optimisation set, or direct entries (particles, tomograms, optional trajectories),
as RELION's ``addTomoInputOptions``.
"""
from __future__ import annotations

import os
from pathlib import Path

import param

from processing.io.optimisation_set import OptimisationSet
from processing.io.paths import resolve_path

from .base import FieldProblem, JobParameters

__all__ = ["TomoInputParameters", "ResolvedTomoInputs"]


class ResolvedTomoInputs(param.Parameterized):
    """The three input files after the optimisation set and direct entries were combined."""

    particles = param.String("")
    tomograms = param.String("")
    trajectories = param.String("")


class TomoInputParameters(JobParameters):
    """Job parameters whose I/O tab starts with RELION's tomography input block."""

    in_optimisation = param.String(
        "", label="Input optimisation set: ",
        doc="The optimisation set (optimisation_set.star) written by the previous job: it "
            "names the particle set, the tomogram set and, if any, the motion trajectories.",
        metadata={"tab": "I/O", "var": "in_optimisation", "flag": "--i", "node": "TomoOptimisationSet.star.relion",
                  "pattern": "*optimisation_set.star"},
    )
    use_direct_entries = param.Boolean(
        False, label="OR: use direct entries?",
        doc="Give the particle set, tomogram set and trajectories directly instead of an "
            "optimisation set.",
        metadata={"tab": "I/O", "var": "use_direct_entries"},
    )
    in_particles = param.String(
        "", label="Input particle set: ",
        doc="particles.star with the particles' tomograms, positions and orientations.",
        metadata={"tab": "I/O", "var": "in_particles", "flag": "--p", "node": "ParticleGroupMetadata.star.relion",
                  "pattern": "*.star"},
    )
    in_tomograms = param.String(
        "", label="Input tomogram set: ",
        doc="tomograms.star describing the tilt series: CTF, dose and alignment of every tilt.",
        metadata={"tab": "I/O", "var": "in_tomograms", "flag": "--t", "node": "TomogramGroupMetadata.star.relion",
                  "pattern": "*.star"},
    )
    in_trajectories = param.String(
        "", label="Input trajectory set: ",
        doc="Optional motion.star with per-particle motion trajectories from frame alignment.",
        metadata={"tab": "I/O", "var": "in_trajectories", "flag": "--mot", "node": "TomoTrajectoryData.star.relion",
                  "pattern": "*.star"},
    )

    def problems(self) -> list[FieldProblem]:
        out = super().problems()
        if self.use_direct_entries:
            if self.in_optimisation:
                out.append(FieldProblem(
                    "in_optimisation", "must be empty when direct entries are used"))
            for name in ("in_particles", "in_tomograms"):
                if not getattr(self, name):
                    out.append(FieldProblem(name, "is required with direct entries"))
            checked = ("in_particles", "in_tomograms", "in_trajectories")
        else:
            if not self.in_optimisation:
                out.append(FieldProblem(
                    "in_optimisation", "is required (or choose direct entries)"))
            checked = ("in_optimisation",)
        for name in checked:
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                out.append(FieldProblem(name, f"file does not exist: {path}"))
        return out

    def resolve_inputs(self) -> ResolvedTomoInputs:
        """Particles, tomograms and trajectories this job reads (direct entries override)."""
        if self.use_direct_entries:
            return ResolvedTomoInputs(
                particles=self.in_particles, tomograms=self.in_tomograms,
                trajectories=self.in_trajectories,
            )
        opt = OptimisationSet.read(Path(self.in_optimisation))

        def find(entry: str | None) -> str:
            # Paths in the set are relative to the project directory (the working directory);
            # failing that, to the set's own directory or one of its parents (io.paths rule).
            if not entry:
                return ""
            return str(resolve_path(entry, referrer=self.in_optimisation))

        return ResolvedTomoInputs(
            particles=find(opt.particles), tomograms=find(opt.tomograms),
            trajectories=find(opt.trajectories),
        )


def box_crop_problems(box_size: int, crop_size: int) -> list[FieldProblem]:
    """Problems of a ``box_size`` / ``crop_size`` pair (binned pixels; crop -1 = no cropping),
    shared by the Extract and Reconstruct forms."""
    out = []
    if box_size % 2:
        out.append(FieldProblem("box_size", "must be even"))
    if crop_size > 0:
        if crop_size % 2:
            out.append(FieldProblem("crop_size", "must be even"))
        if crop_size > box_size:
            out.append(FieldProblem("crop_size", f"({crop_size}) cannot be larger than the box size ({box_size})"))
    elif crop_size != -1:
        out.append(FieldProblem("crop_size", "must be -1 (no cropping) or a positive size"))
    return out
