"""Parameters of "Mask creation" (``relion.maskcreate``), RELION's GUI form and job.star
variables (src/pipeline_jobs.cpp ``initialiseMaskcreateJob``)."""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import ClassVar

import param

from .base import FieldProblem, JobParameters
from .spec import JobSpec, OutputNode

__all__ = ["MaskCreateParameters", "SPEC", "MASK_FILE"]

#: The mask file a job writes in its directory (RELION's GUI: ``<job>/mask.mrc``).
MASK_FILE = "mask.mrc"


def _number(value: float) -> str:
    return f"{value:g}"


class MaskCreateParameters(JobParameters):
    """Make a soft mask from a map: low-pass, binarise at a threshold, extend, add a soft edge."""

    job_type_label: ClassVar[str] = "relion.maskcreate"
    process_dir: ClassVar[str] = "MaskCreate"
    is_tomo: ClassVar[bool] = False
    tabs: ClassVar[tuple[str, ...]] = ("I/O", "Mask", "Helix", "Running")
    program: ClassVar[str] = "relion_mask_create"
    cli_name: ClassVar[str] = "maskcreate"
    #: relion_mask_create flags that are not GUI fields: kept in ``other_args``.
    extra_flags: ClassVar[dict[str, dict]] = {
        "--invert": {"action": "store_true", "help": "invert the final mask (1 - mask)"},
    }
    #: relion_mask_create's own defaults for the GUI fields, used by ``tomodash maskcreate`` when
    #: a flag is left out (the form's defaults are the GUI's: low-pass 15 Å, extend 3, edge 3).
    program_defaults: ClassVar[dict[str, float]] = {
        "lowpass_filter": -1.0, "inimask_threshold": 0.01, "extend_inimask": 0.0, "width_mask_edge": 0.0,
    }

    # relion_mask_create runs without MPI: no "Number of MPI procs" field, no nr_mpi in job.star.
    nr_mpi = param.Integer(1, bounds=(1, 1), precedence=-1, doc="Mask creation runs as one process.", metadata={})

    fn_in = param.String(
        "", label="Input 3D map:",
        doc="The map to binarise, e.g. merged.mrc of Reconstruct particle or the final map of 3D "
            "auto-refine. It must be a cubic 3D MRC map.",
        metadata={"tab": "I/O", "var": "fn_in", "flag": "--i", "node": "DensityMap.mrc",
                  "pattern": "MRC map files (*.mrc)"},
    )
    lowpass_filter = param.Number(
        15.0, bounds=(-1, None), softbounds=(10, 100), step=5, label="Lowpass filter map (A)",
        doc="Lowpass filter that will be applied to the input map, prior to binarization. To "
            "calculate solvent masks, a lowpass filter of 15-20A may work well. 0 or less: no "
            "filter.",
        metadata={"tab": "Mask", "var": "lowpass_filter", "flag": "--lowpass"},
    )
    angpix = param.Number(
        -1.0, bounds=(-1, None), softbounds=(0.3, 5), step=0.1, label="Pixel size (A)",
        doc="Provide the pixel size of the input map in Angstroms to calculate the low-pass "
            "filter. This value is also used in the output image header. -1: the input map's "
            "header.",
        metadata={"tab": "Mask", "var": "angpix", "flag": "--angpix"},
    )
    inimask_threshold = param.Number(
        0.02, softbounds=(0, 0.5), step=0.01, label="Initial binarisation threshold:",
        doc="This threshold is used to make an initial binary mask from the (low-pass filtered) "
            "map: voxels at or above it are inside. If you don't know what value to use, display "
            "the map in a 3D surface rendering viewer and find the lowest threshold that gives "
            "no noise peaks outside the reconstruction.",
        metadata={"tab": "Mask", "var": "inimask_threshold", "flag": "--ini_threshold"},
    )
    extend_inimask = param.Number(
        3.0, softbounds=(0, 20), step=1, label="Extend binary map this many pixels:",
        doc="The initial binary mask is extended this number of pixels in all directions "
            "(a negative number shrinks it).",
        metadata={"tab": "Mask", "var": "extend_inimask", "flag": "--extend_inimask"},
    )
    width_mask_edge = param.Number(
        3.0, bounds=(0, 99), softbounds=(0, 20), step=1, label="Add a soft-edge of this many pixels:",
        doc="The extended binary mask is further extended with a raised-cosine soft edge of the "
            "specified width.",
        metadata={"tab": "Mask", "var": "width_mask_edge", "flag": "--width_soft_edge"},
    )
    do_helix = param.Boolean(
        False, label="Mask a 3D helix?",
        doc="Generate a mask for 3D helix which spans across Z axis of the box: only the central "
            "part along Z is kept.",
        metadata={"tab": "Helix", "var": "do_helix", "flag": "--helix"},
    )
    helical_z_percentage = param.Number(
        30.0, bounds=(10, 90), step=1, label="Central Z length (%):",
        doc="Reconstructed helix suffers from inaccuracies of orientation searches. The central "
            "part of the box contains more reliable information compared to the top and bottom "
            "parts along Z axis. Set this value (%) to the central part length along Z axis "
            "divided by the box size. Values around 30% are commonly used.",
        metadata={"tab": "Helix", "var": "helical_z_percentage"},
    )

    def problems(self) -> list[FieldProblem]:
        out = super().problems()
        if not self.fn_in:
            out.append(FieldProblem("fn_in", "is required"))
        elif not os.path.isfile(self.fn_in):
            out.append(FieldProblem("fn_in", f"file does not exist: {self.fn_in}"))
        if self.do_helix and self.width_mask_edge < 0.001:
            out.append(FieldProblem("width_mask_edge", "must be positive for a helical mask (the Z cut "
                                                       "uses the same soft edge)"))
        return out

    @property
    def helix_z_fraction(self) -> float | None:
        """``--z_percentage`` as relion_mask_create takes it (a fraction), None without --helix."""
        return self.helical_z_percentage / 100.0 if self.do_helix else None

    def own_command(self, job_dir: str | os.PathLike, *, is_continue: bool = False,
                    program: str | None = None) -> str:
        """The command (RELION GUI's token order) that makes this mask in ``job_dir``."""
        tokens = ["--i", self.fn_in,
                  "--o", str(Path(job_dir) / MASK_FILE)]
        if self.lowpass_filter > 0:
            tokens += ["--lowpass", _number(self.lowpass_filter)]
        if self.angpix > 0:
            tokens += ["--angpix", _number(self.angpix)]
        tokens += ["--ini_threshold", _number(self.inimask_threshold),
                   "--extend_inimask", _number(self.extend_inimask),
                   "--width_soft_edge", _number(self.width_mask_edge)]
        if self.do_helix:
            tokens += ["--helix", "--z_percentage", _number(self.helical_z_percentage / 100.0)]
        tokens += ["--j", str(self.nr_threads)]
        command = f"{program or 'tomodash ' + self.cli_name} {shlex.join(tokens)}"
        return f"{command} {self.other_args}" if self.other_args.strip() else command


SPEC = JobSpec(
    name="maskcreate",
    params_class=MaskCreateParameters,
    module="processing.jobs.maskcreate",
    outputs=(OutputNode(MASK_FILE, "Mask3D.mrc.relion"),),
    uses_mpi=False,
    description="Mask creation (relion.maskcreate)",
)
