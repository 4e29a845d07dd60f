"""Parameters of "Post-processing" (RELION ``relion.postprocess``, relion_postprocess).

The job.star variables, labels, defaults and tabs of RELION's GUI (``initialisePostprocessJob``
in src/pipeline_jobs.cpp): fn_in, fn_mask, angpix; do_auto_bfac, autob_lowres, do_adhoc_bfac,
adhoc_bfac, fn_mtf, mtf_angpix; do_skip_fsc_weighting, low_pass; and the Running tab without MPI
or threads (relion_postprocess runs as one process). relion_postprocess flags that are not GUI
fields (``--i2``, ``--autob_highres``, ...) travel in ``other_args``.
"""
from __future__ import annotations

import os
import shlex
from typing import ClassVar

import param

from processing.postprocess.run import other_half

from .base import FieldProblem, JobParameters
from .spec import JobSpec, OutputNode

__all__ = ["PostprocessParameters", "SPEC"]


def _number(value: float) -> str:
    return f"{value:g}"


class PostprocessParameters(JobParameters):
    """Post-process two unfiltered half maps: corrected FSC, final resolution, sharpened map."""

    job_type_label: ClassVar[str] = "relion.postprocess"
    process_dir: ClassVar[str] = "PostProcess"
    is_tomo: ClassVar[bool] = True
    tabs: ClassVar[tuple[str, ...]] = ("I/O", "Sharpen", "Filter", "Running")
    program: ClassVar[str] = "relion_postprocess"
    cli_name: ClassVar[str] = "postprocess"
    #: relion_postprocess flags that are not GUI fields: kept in ``other_args``.
    extra_flags: ClassVar[dict[str, dict]] = {
        "--i2": {"default": None, "help": "the second half map (default: --i with half1 -> half2)"},
        "--autob_highres": {"type": float, "default": 0.0,
                            "help": "highest resolution (A) in the B-factor fit (0: no limit)"},
        "--randomize_at_fsc": {"type": float, "default": 0.8,
                               "help": "randomise phases from where the unmasked FSC drops below this"},
        "--randomize_at_A": {"type": float, "default": -1.0,
                             "help": "randomise phases from this resolution (A) if positive"},
        "--filter_edge_width": {"type": int, "default": 2,
                                "help": "width (shells) of the raised cosine of the low-pass filter"},
        "--force_mask": {"action": "store_true",
                         "help": "use the mask even when the unmasked FSC reaches further"},
        "--random_seed": {"type": int, "default": 0, "help": "seed of the random phases (>= 0)"},
    }

    # relion_postprocess runs as one process: no MPI or thread fields (not in its job.star).
    nr_mpi = param.Integer(1, bounds=(1, 1), label="Number of MPI procs:", precedence=-1,
                           doc="relion_postprocess runs as one process.", metadata={"tab": "Running"})
    nr_threads = param.Integer(1, bounds=(1, 1), label="Number of threads:", precedence=-1,
                               doc="relion_postprocess runs as one thread.", metadata={"tab": "Running"})

    fn_in = param.String(
        "", label="One of the 2 unfiltered half-maps:",
        doc="Provide one of the two unfiltered half-reconstructions that were output upon "
            "convergence of a 3D auto-refine run (run_half1_class001_unfil.mrc); the other is "
            "found by swapping half1 and half2 in its name.",
        metadata={"tab": "I/O", "var": "fn_in", "flag": "--i", "node": "DensityMap.mrc.halfmap",
                  "pattern": "*half1*.mrc"},
    )
    fn_mask = param.String(
        "", label="Solvent mask:",
        doc="A soft mask where the protein is white (1) and the solvent is black (0). Often, the "
            "softer the mask the higher resolution estimates you will get. A soft edge of 5-10 "
            "pixels is often a good edge width.",
        metadata={"tab": "I/O", "var": "fn_mask", "flag": "--mask", "node": "Mask3D.mrc", "pattern": "*.mrc"},
    )
    angpix = param.Number(
        -1.0, bounds=(-1, None), softbounds=(0.3, 5), step=0.1, label="Calibrated pixel size (A)",
        doc="The final, calibrated pixel size in Angstroms (-1: the half map's header). The "
            "X-axis of the FSC plot uses this value.",
        metadata={"tab": "I/O", "var": "angpix", "flag": "--angpix"},
    )
    do_auto_bfac = param.Boolean(
        True, label="Estimate B-factor automatically?",
        doc="Use the procedure of Rosenthal and Henderson (2003): fit a straight line through the "
            "Guinier plot of the FSC-weighted map from the lowest resolution below to the end of "
            "the FSC, and sharpen with B = 4 x its slope. The map must extend well beyond that "
            "lowest resolution.",
        metadata={"tab": "Sharpen", "var": "do_auto_bfac", "flag": "--auto_bfac"},
    )
    autob_lowres = param.Number(
        10.0, bounds=(0, None), softbounds=(8, 15), step=0.5, label="Lowest resolution for auto-B fit (A):",
        doc="The lowest resolution (in Angstroms) included in the linear fit of the Guinier plot. "
            "Don't use values much lower or higher than 10 Angstroms.",
        metadata={"tab": "Sharpen", "var": "autob_lowres", "flag": "--autob_lowres"},
    )
    do_adhoc_bfac = param.Boolean(
        False, label="Use your own B-factor?",
        doc="Instead of the automated B-factor estimation, provide your own value (negative to "
            "sharpen); useful when the map does not extend beyond 10 Angstroms.",
        metadata={"tab": "Sharpen", "var": "do_adhoc_bfac"},
    )
    adhoc_bfac = param.Number(
        -1000.0, softbounds=(-2000, 0), step=50, label="User-provided B-factor:",
        doc="Use negative values for sharpening. Be careful: if you over-sharpen your map, you may "
            "end up interpreting noise for signal!",
        metadata={"tab": "Sharpen", "var": "adhoc_bfac", "flag": "--adhoc_bfac"},
    )
    fn_mtf = param.String(
        "", label="MTF of the detector (STAR file)",
        doc="The MTF of your detector (a STAR file with rlnResolutionInversePixel and "
            "rlnMtfValue); the map is divided by it before sharpening. Leave empty to include "
            "the MTF in the overall B-factor.",
        metadata={"tab": "Sharpen", "var": "fn_mtf", "flag": "--mtf", "pattern": "*.star"},
    )
    mtf_angpix = param.Number(
        1.0, bounds=(-1, None), softbounds=(0.3, 2.0), step=0.1, label="Original detector pixel size:",
        doc="The original pixel size (in Angstroms) of the raw (non-super-resolution!) "
            "micrographs (-1: the calibrated pixel size).",
        metadata={"tab": "Sharpen", "var": "mtf_angpix", "flag": "--mtf_angpix"},
    )
    do_skip_fsc_weighting = param.Boolean(
        False, label="Skip FSC-weighting?",
        doc="If No (the default), the map is low-pass filtered by the mask-corrected gold-standard "
            "FSC (sqrt(2 FSC/(1+FSC))). If Yes, give an ad-hoc low-pass filter below instead.",
        metadata={"tab": "Filter", "var": "do_skip_fsc_weighting", "flag": "--skip_fsc_weighting"},
    )
    low_pass = param.Number(
        5.0, softbounds=(1, 40), step=1, label="Ad-hoc low-pass filter (A):",
        doc="Low-pass filter the map at this resolution (Angstroms), with a raised-cosine edge of "
            "2 shells; used when FSC weighting is skipped. 0: no filter; negative: the final "
            "resolution.",
        metadata={"tab": "Filter", "var": "low_pass", "flag": "--low_pass"},
    )

    @property
    def half2(self) -> str | None:
        """The other half map, by RELION's name rule (``None`` if the name has no half1/half2)."""
        return other_half(self.fn_in) if self.fn_in else None

    def problems(self) -> list[FieldProblem]:
        out = super().problems()
        if not self.fn_in:
            out.append(FieldProblem("fn_in", "is required (one of the two unfiltered half maps)"))
        elif not os.path.isfile(self.fn_in):
            out.append(FieldProblem("fn_in", f"file does not exist: {self.fn_in}"))
        elif self.half2 is None and "--i2" not in self.other_args:
            out.append(FieldProblem("fn_in", "the file name contains neither 'half1' nor 'half2', so the "
                                             "other half map cannot be found"))
        elif self.half2 is not None and "--i2" not in self.other_args and not os.path.isfile(self.half2):
            out.append(FieldProblem("fn_in", f"the other half map does not exist: {self.half2}"))
        if self.fn_mask and not os.path.isfile(self.fn_mask):
            out.append(FieldProblem("fn_mask", f"file does not exist: {self.fn_mask}"))
        if self.fn_mtf and not os.path.isfile(self.fn_mtf):
            out.append(FieldProblem("fn_mtf", f"file does not exist: {self.fn_mtf}"))
        if self.angpix == 0:
            out.append(FieldProblem("angpix", "must be positive (or -1 for the header's pixel size)"))
        if self.do_auto_bfac and self.do_adhoc_bfac:
            out.append(FieldProblem("do_adhoc_bfac", "choose either the automatic B-factor or your own, not both"))
        if self.do_auto_bfac and self.autob_lowres <= 0:
            out.append(FieldProblem("autob_lowres", "must be positive"))
        return out

    def command_args(self, job_dir: str, *, relion_output: bool = True) -> list[str]:
        """The argv for these parameters, in the GUI's order (``getCommandsPostprocessJob``),
        without the program name. ``relion_output``: ``--o`` is RELION's rootname
        ``<job_dir>/postprocess``; otherwise the job directory (``tomodash postprocess``)."""
        args: list[str] = []
        if self.fn_mask:
            args += ["--mask", self.fn_mask]
        job = str(job_dir).rstrip("/") + "/"
        args += ["--i", self.fn_in, "--o", job + "postprocess" if relion_output else job]
        if self.angpix > 0:
            args += ["--angpix", _number(self.angpix)]
        if self.fn_mtf:
            args += ["--mtf", self.fn_mtf]
            if self.mtf_angpix > 0:
                args += ["--mtf_angpix", _number(self.mtf_angpix)]
        if self.do_auto_bfac:
            args += ["--auto_bfac", "--autob_lowres", _number(self.autob_lowres)]
        if self.do_adhoc_bfac:
            args += ["--adhoc_bfac", _number(self.adhoc_bfac)]
        if self.do_skip_fsc_weighting:
            args += ["--skip_fsc_weighting", "--low_pass", _number(self.low_pass)]
        if self.other_args:
            args.append(self.other_args)
        return args


    def own_command(self, job_dir: str | os.PathLike, *, is_continue: bool = False,
                    program: str | None = None) -> str:
        """The command line: :meth:`command_args` after ``program`` (RELION's rootname for
        ``--o`` when it is RELION's program) or ``tomodash postprocess``."""
        args = self.command_args(str(job_dir), relion_output=program is not None)
        return " ".join([program or f"tomodash {self.cli_name}",
                         *(shlex.quote(t) if " " not in t.strip() else t for t in args)])

SPEC = JobSpec(
    name="postprocess",
    params_class=PostprocessParameters,
    module="processing.jobs.postprocess",
    outputs=(
        OutputNode("postprocess.mrc", "DensityMap.mrc.relion.postprocess"),
        OutputNode("postprocess_masked.mrc", "DensityMap.mrc.relion.postprocess.masked"),
        OutputNode("logfile.pdf", "LogFile.pdf.relion.postprocess"),
        OutputNode("postprocess.star", "ProcessData.star.relion.postprocess"),
    ),
    uses_mpi=False,
    description="Post-processing (relion.postprocess)",
)
