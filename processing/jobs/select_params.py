"""Parameters of "Subset selection" (``relion.select``) for tomography particle sets: removal of
duplicates (``relion.select.removeduplicates``), selection on a metadata value range
(``relion.select.onvalue``) or selection of classes of a 3D classification
(``relion.select.interactive``), each optionally after re-centring on a point of the reference.

RELION's Select job (src/pipeline_jobs.cpp ``initialiseSelectJob`` / ``getCommandsSelectJob``)
runs ``relion_star_handler`` on a particles.star (``fn_data``) and does one task per job; the
process label gets the task's sub-label. Here the job also takes an optimisation set, whose
other entries (tomograms, trajectories, references) the output optimisation set carries on, and
offers ``relion_star_handler --center`` (which RELION's GUI leaves to the command line).

Classes: RELION selects them by clicking class averages in relion_display (the "interactive"
task, from "Select classes from job:" = a run_itNNN_optimiser.star). Here the classes are a
field, "Classes to keep" (job.star ``select_classes``, which RELION ignores), which the 3D
classification monitor fills from its tick boxes; the output is the same particles.star.
"""
from __future__ import annotations

import os
from typing import ClassVar

import param

from processing.select.classes import parse_class_list

from .base import FieldProblem, JobParameters
from .spec import JobSpec, OutputNode

__all__ = ["SelectParameters", "SPEC", "REMOVE_DUPLICATES_LABEL", "ON_VALUE_LABEL", "CLASSES_LABEL",
           "RELION_SELECT_DEFAULTS"]

REMOVE_DUPLICATES_LABEL = "relion.select.removeduplicates"
ON_VALUE_LABEL = "relion.select.onvalue"
#: RELION's label of a selection of classes (made in relion_display from an optimiser.star)
CLASSES_LABEL = "relion.select.interactive"

#: RELION's other Select options (classes, micrographs, discarding, splitting, filaments) at
#: their GUI defaults: written to job.star so that RELION's GUI and the CCP-EM pipeliner find
#: every option of the job type; this job does not use them.
RELION_SELECT_DEFAULTS: dict[str, str] = {
    "fn_mic": "", "do_class_ranker": "No", "rank_threshold": "0.5",
    "select_nr_parts": "-1", "select_nr_classes": "-1", "do_recenter": "No", "do_regroup": "No",
    "nr_groups": "1", "do_discard": "No", "discard_label": "rlnImageName", "discard_sigma": "4",
    "do_split": "No", "do_random": "No", "split_size": "100", "nr_split": "-1", "do_filaments": "No",
    "dendrogram_threshold": "0.85", "dendrogram_minclass": "-1000",
}


class SelectParameters(JobParameters):
    """Select a subset of particles: remove duplicates, keep a metadata value range, or keep the
    particles of chosen classes of a 3D classification."""

    job_type_label: ClassVar[str] = "relion.select"
    process_dir: ClassVar[str] = "Select"
    is_tomo: ClassVar[bool] = False
    tabs: ClassVar[tuple[str, ...]] = ("I/O", "Class options", "Duplicates", "Subsets", "Recenter", "Running")
    program: ClassVar[str] = "relion_star_handler"
    cli_name: ClassVar[str] = "select"
    extra_flags: ClassVar[dict[str, dict]] = {}

    fn_model = param.String(
        "", label="Select classes from job:",
        doc="The run_itNNN_optimiser.star of an iteration of a 3D classification: the particles "
            "of the classes chosen in 'Classes to keep' (Class options tab) are taken from that "
            "iteration's data.star, and its optimisation set (tomograms, trajectories) is carried "
            "on. The 3D classification monitor fills this in when you select classes there.",
        metadata={"tab": "I/O", "var": "fn_model", "flag": "--opt", "node": "OptimiserData.star.relion",
                  "pattern": "STAR files (*_optimiser.star)"},
    )
    in_optimisation = param.String(
        "", label="Input optimisation set: ",
        doc="The optimisation set of the previous job (e.g. Extract/job002/optimisation_set.star). "
            "Its particles are selected from, and the job writes an optimisation_set.star with the "
            "selected particles and the same tomograms, trajectories and references, which the "
            "next Extract, Reconstruct or 3D auto-refine job takes directly.",
        metadata={"tab": "I/O", "var": "in_optimisation", "flag": "--ios", "node": "TomoOptimisationSet.star.relion",
                  "pattern": "*optimisation_set.star"},
    )
    fn_data = param.String(
        "", label="OR select from particles.star:",
        doc="A particles.star to select from instead of the optimisation set's particles (with "
            "an optimisation set as well, this file replaces its particles).",
        metadata={"tab": "I/O", "var": "fn_data", "flag": "--i", "node": "ParticleGroupMetadata.star.relion",
                  "pattern": "*.star"},
    )

    select_classes = param.String(
        "", label="Classes to keep:",
        doc="Class numbers (1..K) of the classification whose particles are kept, separated by "
            "spaces or commas, e.g. '2' or '1 3'. RELION chooses them by clicking the class maps in "
            "its display window; here the 3D classification monitor's tick boxes fill this field. "
            "With a particles.star or optimisation set as input, its rlnClassNumber column is used.",
        metadata={"tab": "Class options", "var": "select_classes", "flag": "--classes"},
    )

    do_remove_duplicates = param.Boolean(
        False, label="OR: remove duplicates?",
        doc="Remove particles that lie within a given distance of another particle of the same "
            "tomogram, leaving one. Duplicates appear when two picks hit one particle or when "
            "particles drift onto the same position during refinement; they inflate and "
            "invalidate the gold-standard FSC. Of a close pair RELION keeps the later one in the "
            "file.",
        metadata={"tab": "Duplicates", "var": "do_remove_duplicates", "flag": "--do_remove_duplicates"},
    )
    duplicate_threshold = param.Number(
        30.0, softbounds=(0, 1000), step=1, label="Minimum inter-particle distance (A)",
        doc="Particles this close (Å, 3D, origins applied) or closer are duplicates. The tutorial "
            "uses 30 Å, later 50 Å.",
        metadata={"tab": "Duplicates", "var": "duplicate_threshold", "flag": "--remove_duplicates"},
    )
    image_angpix = param.Number(
        -1.0, bounds=(-1, None), softbounds=(-1, 10), step=0.01, label="Pixel size before extraction (A)",
        doc="For single-particle micrographs only: tomography particles have their coordinates "
            "in Å, so RELION (and this job) ignore it for them.",
        metadata={"tab": "Duplicates", "var": "image_angpix", "flag": "--image_angpix"},
    )

    do_select_values = param.Boolean(
        False, label="Select based on metadata values?",
        doc="Keep only the particles whose value in a column lies between a minimum and a maximum "
            "(both included), e.g. rlnMaxValueProbDistribution or rlnLogLikeliContribution of a "
            "refinement.",
        metadata={"tab": "Subsets", "var": "do_select_values", "flag": "--do_select_values"},
    )
    select_label = param.String(
        "rlnMaxValueProbDistribution", label="Metadata label for subset selection:",
        doc="The column of the particles table to select on (a number per particle).",
        metadata={"tab": "Subsets", "var": "select_label", "flag": "--select"},
    )
    select_minval = param.Number(
        -9999.0, label="Minimum metadata value:",
        doc="Particles with a value larger than or equal to this are kept.",
        metadata={"tab": "Subsets", "var": "select_minval", "flag": "--minval"},
    )
    select_maxval = param.Number(
        9999.0, label="Maximum metadata value:",
        doc="Particles with a value smaller than or equal to this are kept.",
        metadata={"tab": "Subsets", "var": "select_maxval", "flag": "--maxval"},
    )

    do_center = param.Boolean(
        False, label="Re-center on a point of the reference?",
        doc="Before the selection, move every particle's origin onto a point of the reference "
            "(relion_star_handler --center): origin -= A(rot, tilt, psi) · point · pixel size. The "
            "next extraction then centres the boxes on that point. Use it when the feature of "
            "interest is off the box centre of the reference (the tutorial re-centres on the "
            "capsid layer with --center_Z).",
        metadata={"tab": "Recenter", "var": "do_center", "flag": "--center"},
    )
    center_x = param.Number(
        0.0, label="X of the new centre (pix):",
        doc="X of the point in the reference, pixels of the particle images from the box centre.",
        metadata={"tab": "Recenter", "var": "center_X", "flag": "--center_X"},
    )
    center_y = param.Number(
        0.0, label="Y of the new centre (pix):",
        doc="Y of the point in the reference, pixels of the particle images from the box centre.",
        metadata={"tab": "Recenter", "var": "center_Y", "flag": "--center_Y"},
    )
    center_z = param.Number(
        0.0, label="Z of the new centre (pix):",
        doc="Z of the point in the reference, pixels of the particle images from the box centre.",
        metadata={"tab": "Recenter", "var": "center_Z", "flag": "--center_Z"},
    )

    @property
    def selects_classes(self) -> bool:
        """Whether this job keeps classes (no other task chosen, classes given)."""
        return not self.do_remove_duplicates and not self.do_select_values and bool(self.select_classes.strip())

    def process_type_label(self) -> str:
        """``relion.select.removeduplicates``, ``relion.select.onvalue`` or, for classes,
        ``relion.select.interactive`` (RELION appends the task to the label when it makes the
        command)."""
        if self.do_remove_duplicates:
            return REMOVE_DUPLICATES_LABEL
        if self.do_select_values:
            return ON_VALUE_LABEL
        if self.selects_classes:
            return CLASSES_LABEL
        return type(self).job_type_label

    def to_job_options(self) -> dict[str, str]:
        return {**RELION_SELECT_DEFAULTS, **super().to_job_options()}

    def problems(self) -> list[FieldProblem]:
        out = super().problems()
        if not self.in_optimisation and not self.fn_data and not self.fn_model:
            out.append(FieldProblem("in_optimisation", "is required (or give a particles.star, or an "
                                    "optimiser.star to select classes from)"))
        for name in ("fn_model", "in_optimisation", "fn_data"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                out.append(FieldProblem(name, f"file does not exist: {path}"))
        tasks = [name for name in ("do_remove_duplicates", "do_select_values") if getattr(self, name)]
        if len(tasks) > 1:
            out.append(FieldProblem("do_select_values", "cannot be combined with removing duplicates: "
                                    "RELION's Select does one task per job"))
        elif not tasks and not self.select_classes.strip():
            out.append(FieldProblem("do_remove_duplicates", "or Select based on metadata values must be "
                                    "chosen, or classes to keep (Class options tab)"))
        if self.select_classes.strip():
            if tasks:
                out.append(FieldProblem("select_classes", "must be empty when another task is chosen: "
                                        "RELION's Select does one task per job"))
            try:
                parse_class_list(self.select_classes)
            except ValueError as exc:
                out.append(FieldProblem("select_classes", f"must be class numbers separated by spaces or "
                                        f"commas: {exc}"))
        if self.fn_model:
            if not os.path.basename(self.fn_model).endswith("_optimiser.star"):
                out.append(FieldProblem("fn_model", "must be a run_itNNN_optimiser.star of a classification"))
            if tasks:
                out.append(FieldProblem("fn_model", "is for selecting classes: duplicate removal and value "
                                        "selection take a particles.star or optimisation set, as in RELION"))
            elif self.in_optimisation or self.fn_data:
                out.append(FieldProblem("fn_model", "selects classes from its own iteration's particles: "
                                        "leave the optimisation set and particles.star empty"))
        if self.duplicate_threshold < 0 or (self.do_remove_duplicates and not self.duplicate_threshold > 0):
            out.append(FieldProblem("duplicate_threshold", f"must be > 0 Å (got {self.duplicate_threshold:g})"))
        if self.do_select_values:
            if not self.select_label.startswith("rln") or " " in self.select_label.strip():
                out.append(FieldProblem("select_label", f"must be a STAR column label such as "
                                        f"rlnMaxValueProbDistribution (got {self.select_label!r})"))
            if self.select_minval > self.select_maxval:
                out.append(FieldProblem("select_minval", f"({self.select_minval:g}) is larger than the "
                                        f"maximum value ({self.select_maxval:g})"))
        return out

    def own_command(self, job_dir: str | os.PathLike, *, is_continue: bool = False,
                    program: str | None = None) -> str:
        """``tomodash select`` with the flags of ``relion_star_handler`` that this job uses."""
        tokens = [program or f"tomodash {type(self).cli_name}"]
        if self.fn_model:
            tokens += ["--opt", self.fn_model]
        if self.in_optimisation:
            tokens += ["--ios", self.in_optimisation]
        if self.fn_data:
            tokens += ["--i", self.fn_data]
        tokens += ["--o", str(job_dir).rstrip("/") + "/"]
        if self.do_center:
            tokens += ["--center", "--center_X", f"{self.center_x:g}", "--center_Y", f"{self.center_y:g}",
                       "--center_Z", f"{self.center_z:g}"]
        if self.do_remove_duplicates:
            tokens += ["--remove_duplicates", f"{self.duplicate_threshold:g}"]
            if self.image_angpix > 0:
                tokens += ["--image_angpix", f"{self.image_angpix:g}"]
        if self.do_select_values:
            tokens += ["--select", self.select_label, "--minval", f"{self.select_minval:g}",
                       "--maxval", f"{self.select_maxval:g}"]
        if self.selects_classes:
            tokens += ["--classes", ",".join(str(c) for c in parse_class_list(self.select_classes))]
        tokens += ["--j", str(self.nr_threads)]
        return " ".join(tokens)


SPEC = JobSpec(
    name="select",
    params_class=SelectParameters,
    module="processing.jobs.select",
    outputs=(
        OutputNode("particles.star", "ParticleGroupMetadata.star.relion"),
        OutputNode("optimisation_set.star", "TomoOptimisationSet.star.relion.tomo.select"),
    ),
    uses_mpi=False,
    description="Subset selection (relion.select.removeduplicates / .onvalue / .interactive)",
)
