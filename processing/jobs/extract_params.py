"""Parameters of "Extract subtomos" (RELION ``relion.pseudosubtomo``, relion_tomo_subtomo)."""
from __future__ import annotations

from typing import ClassVar

import param

from .base import FieldProblem
from .spec import JobSpec, OutputNode
from .tomo_inputs import TomoInputParameters, box_crop_problems

__all__ = ["ExtractParameters", "SPEC"]


class ExtractParameters(TomoInputParameters):
    """Extract pseudo-subtomograms: CTF-premultiplied, dose-weighted tilt-image patches."""

    job_type_label: ClassVar[str] = "relion.pseudosubtomo"
    process_dir: ClassVar[str] = "Extract"
    is_tomo: ClassVar[bool] = False
    tabs: ClassVar[tuple[str, ...]] = ("I/O", "Reconstruct", "Running")
    program: ClassVar[str] = "relion_tomo_subtomo"
    cli_name: ClassVar[str] = "extract"
    #: relion_tomo_subtomo flags that are not GUI fields: kept in ``other_args``.
    extra_flags: ClassVar[dict[str, dict]] = {
        "--no_ctf": {"action": "store_true", "help": "do not premultiply by the CTF (dose weight only)"},
        "--no_ic": {"action": "store_true", "help": "keep the original contrast (default: invert)"},
        "--no_circle_crop": {"action": "store_true", "help": "no soft circular mask before cropping"},
        "--dont_apply_offsets": {"action": "store_true",
                                 "help": "extract at the coordinates, ignoring rlnOrigin*Angst"},
    }

    binning = param.Number(
        1.0, bounds=(1, 16), step=1, label="Binning factor:",
        doc="Binning relative to the tilt-series pixel size. The output pixel is binning x "
            "the tilt-series pixel. The tutorial starts at binning 6 for a fast first "
            "refinement, then re-extracts at binning 2 and 1 with the refined poses.",
        metadata={"tab": "Reconstruct", "var": "binning", "flag": "--bin"},
    )
    box_size = param.Integer(
        128, bounds=(32, 512), step=16, label="Box size (binned pix):",
        doc="Box in binned pixels in which each tilt-image patch is extracted and CTF-"
            "premultiplied. Make it large enough (about twice the particle) to hold the "
            "signal the CTF delocalises; the output is then cropped to the cropped box size.",
        metadata={"tab": "Reconstruct", "var": "box_size", "flag": "--b"},
    )
    crop_size = param.Integer(
        -1, bounds=(-1, 512), step=16, label="Cropped box size (binned pix):",
        doc="Final box of the extracted particles, in binned pixels (-1: same as the box "
            "size). Cropping after CTF premultiplication saves memory and time in refinement.",
        metadata={"tab": "Reconstruct", "var": "crop_size", "flag": "--crop"},
    )
    max_dose = param.Number(
        -1.0, bounds=(-1, 200), step=1, label="Maximum dose (e/A^2):",
        doc="Tilt images with a pre-exposure above this dose are not used (-1: use all). "
            "Late, high-dose tilts carry little high-resolution signal; the tutorial uses 50.",
        metadata={"tab": "Reconstruct", "var": "max_dose", "flag": "--max_dose"},
    )
    min_frames = param.Integer(
        1, bounds=(1, 40), step=1, label="Minimum nr. frames:",
        doc="Particles visible in fewer usable tilt images than this are dropped.",
        metadata={"tab": "Reconstruct", "var": "min_frames", "flag": "--min_frames"},
    )
    do_stack2d = param.Boolean(
        True, label="Write output as 2D stacks?",
        doc="Write each particle as a stack of 2D tilt-image patches (RELION 5 default). "
            "No: write 3D pseudo-subtomograms with a CTF^2 and multiplicity weights volume "
            "(the RELION 4 layout).",
        metadata={"tab": "Reconstruct", "var": "do_stack2d", "flag": "--stack2d"},
    )
    do_float16 = param.Boolean(
        True, label="Write output in float16?",
        doc="Write the particle images in half precision (MRC mode 12): half the disc space "
            "and I/O, with no practical loss for refinement.",
        metadata={"tab": "Reconstruct", "var": "do_float16", "flag": "--float16"},
    )

    @property
    def effective_crop_size(self) -> int:
        """The cropped box in binned pixels (the box when cropping is off)."""
        return self.box_size if self.crop_size <= 0 else self.crop_size

    def problems(self) -> list[FieldProblem]:
        out = super().problems()
        out += box_crop_problems(self.box_size, self.crop_size)
        return out


SPEC = JobSpec(
    name="extract",
    params_class=ExtractParameters,
    module="processing.jobs.extract",
    outputs=(
        OutputNode("optimisation_set.star", "TomoOptimisationSet.star.relion.tomo.extract"),
        OutputNode("particles.star", "ParticleGroupMetadata.star.relion.tomo.extract"),
    ),
    description="Extract subtomos (relion.pseudosubtomo)",
)
