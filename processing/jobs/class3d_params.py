"""Parameters of "3D classification" in tomography mode (RELION ``relion.class3d``, job.star
``rlnJobIsTomo 1``; RELION adds no ``.tomo`` to this label).

Fields, job.star variables, labels, defaults and bounds are those of RELION 5's tomo 3D
classification form (src/pipeline_jobs.cpp ``initialiseClass3DJob``, tabs and order of
src/gui_jobwindow.cpp ``initialiseClass3DWindow``); :meth:`Class3DParameters.command_args`
builds the relion_refine command RELION's GUI builds (``getCommandsClass3DJob``), and
:meth:`~processing.jobs.relion_refine_params.RelionRefineParameters.to_options` parses it with
``tomodash refine``'s parser, as for 3D auto-refine.
"""
from __future__ import annotations

import os
from typing import ClassVar

import param

from .base import FieldProblem
from .relion_refine_params import (RelionRefineParameters, continue_args, mask_diameter_param, offset_range_param,
                                   offset_step_param, relion_number, sampling_param, sigma_tilt_param,
                                   zero_mask_param)
from .spec import JobSpec, OutputNode

__all__ = ["Class3DParameters", "SPEC", "output_nodes", "CLASS3D_LABELS"]

#: Output node labels RELION gives a tomo 3D classification (``getOutputNodesRefine``): the
#: particles carry 3D auto-refine's label in RELION 5 (LABEL_REFINE3D_PARTS), the rest class3d's.
CLASS3D_LABELS = {
    "data": "ParticleGroupMetadata.star.relion.refine3d",
    "optimiser": "OptimiserData.star.relion.class3d",
    "map": "DensityMap.mrc.relion.class3d",
    "optimisation_set": "TomoOptimisationSet.star.relion.class3d",
}

#: relion_refine needs at least this many iterations with --fast_subsets (tomodash refine's rule:
#: the subsets grow over the first 15 iterations; all particles are used after that).
FAST_SUBSETS_MIN_ITERATIONS = 20


class Class3DParameters(RelionRefineParameters):
    """3D classification of subtomograms: K maps refined together, each particle assigned to
    the class (and pose) that explains it best.

    Classes start from the same reference, each from a random subset of the particles in the
    first iteration, and grow apart over a fixed number of iterations; there is no gold-standard
    split and no convergence test, so the class maps may overfit (limit the E-step's
    resolution against it). The particles of chosen classes are then kept with Subset selection.

    Not supported (left out of the form, refused on the command line): Blush regularisation
    (Optimisation tab; needs RELION's neural-network denoiser), symmetry relaxation ("Relax
    symmetry") and coarser sampling ("Allow coarser sampling?") of the Sampling tab, and the
    whole Helix tab. Every field that is present changes what the classification does.
    """

    job_type_label: ClassVar[str] = "relion.class3d"
    process_dir: ClassVar[str] = "Class3D"
    is_tomo: ClassVar[bool] = True
    tabs: ClassVar[tuple[str, ...]] = (
        "I/O", "Reference", "CTF", "Optimisation", "Sampling", "Compute", "Running",
    )

    fn_cont = param.String(
        "", label="Continue from here: ",
        doc="To continue a classification that stopped, or to run more iterations, choose the "
            "run_itNNN_optimiser.star of the last completed iteration: the run resumes at "
            "iteration NNN+1 with all its state. 'Number of iterations' is the TOTAL number "
            "(10 done and 5 more: 15). The number of iterations, T, the mask diameter, the mask, "
            "the sampling, the Compute options and the threads can be changed on continuation.",
        metadata={"tab": "I/O", "var": "fn_cont", "pattern": "STAR Files (*_optimiser.star)"},
    )

    # ---- Optimisation ----------------------------------------------------------------------

    nr_classes = param.Integer(
        1, bounds=(1, None), softbounds=(1, 50), step=1, label="Number of classes:",
        doc="The number of classes (K). The classes are made without supervision from the one "
            "reference: in the first iteration each is reconstructed from a random subset of the "
            "particles. K=1 refines one map from all particles without a gold-standard split.",
        metadata={"tab": "Optimisation", "var": "nr_classes"},
    )
    tau_fudge = param.Number(
        1.0, bounds=(0, None), softbounds=(0.1, 10), step=0.1, label="Regularisation parameter T:",
        doc="Weight of the data against the prior (smoothness) of the maps: T > 1 puts more weight "
            "on the data. Too small gives too-low resolution; too large over-estimates it and "
            "brings high-frequency noise into the classes. RELION's tomo form starts at 1; values "
            "of 2-4 are used for single particles.",
        metadata={"tab": "Optimisation", "var": "tau_fudge"},
    )
    nr_iter = param.Integer(
        25, bounds=(1, None), softbounds=(1, 50), step=1, label="Number of iterations:",
        doc="How many iterations to run: classification has no convergence criterion, so watch "
            "the class occupancies and resolutions settle in the monitor. On continuation this "
            "is the TOTAL number (10 done and 5 more: 15).",
        metadata={"tab": "Optimisation", "var": "nr_iter"},
    )
    do_fast_subsets = param.Boolean(
        False, label="Use fast subsets (for large data sets)?",
        doc="Run the first iterations on random subsets of the particles: 5 iterations with "
            "K x 1500 particles, 5 with K x 4500, 5 with 30% of them, then all. Much faster for "
            "large sets; needs at least 20 iterations.",
        metadata={"tab": "Optimisation", "var": "do_fast_subsets"},
    )
    particle_diameter = mask_diameter_param()
    do_zero_mask = zero_mask_param()
    highres_limit = param.Number(
        -1.0, bounds=(-1, None), softbounds=(-1, 20), step=1, label="Limit resolution E-step to (A): ",
        doc="If positive, the alignment and class assignment (E-step) use only Fourier components "
            "up to this resolution (Å). Classification is not protected against overfitting as "
            "auto-refine is; for difficult (small, featureless) particles 7-12 Å gives much better "
            "classes. -1: no limit.",
        metadata={"tab": "Optimisation", "var": "highres_limit"},
    )

    # ---- Sampling --------------------------------------------------------------------------

    dont_skip_align = param.Boolean(
        True, label="Perform image alignment?",
        doc="No: keep every particle's orientation and position from the input and only classify "
            "(no alignment; much faster). This allows very focused masks, and needs poses from a "
            "previous refinement.",
        metadata={"tab": "Sampling", "var": "dont_skip_align"},
    )
    sampling = sampling_param(
        "Angular sampling interval:", "Sampling",
        "Angular step of the search (HEALPix directions x in-plane angle), the same in every "
        "iteration: classification does not refine it. 7.5 degrees is usual; finer steps cost "
        "much more.")
    offset_range = offset_range_param(
        "Offset search range (pix):", "Sampling",
        "Translations are searched within this radius (pixels of the particle images) around "
        "each particle's best position of the previous iteration.")
    offset_step = offset_step_param(
        "Offset search step (pix):", "Sampling",
        "Step (pixels) of the translational search, after oversampling: the first pass of the "
        "adaptive search uses a grid twice as coarse (relion_refine's --offset_step is twice "
        "this value).")
    do_local_ang_searches = param.Boolean(
        False, label="Perform local angular searches?",
        doc="Yes: search orientations only around each particle's orientation of the previous "
            "iteration, within the range below (a Gaussian prior with a standard deviation of a "
            "third of it), instead of over all orientations. For particles already refined.",
        metadata={"tab": "Sampling", "var": "do_local_ang_searches"},
    )
    sigma_angles = param.Number(
        5.0, bounds=(0, None), softbounds=(0, 15), step=0.1, label="Local angular search range:",
        doc="Local angular searches go +/- this many degrees from the previous orientation; the "
            "prior's standard deviation is a third of it (relion_refine --sigma_ang).",
        metadata={"tab": "Sampling", "var": "sigma_angles"},
    )
    sigma_tilt = sigma_tilt_param("Sampling")

    # ---- validation --------------------------------------------------------------------------

    def _new_run_problems(self) -> list[FieldProblem]:
        out = []
        if self.dont_skip_align and self.offset_step <= 0:
            out.append(FieldProblem("offset_step", "must be positive"))
        return out

    def _form_problems(self) -> list[FieldProblem]:
        out = []
        if self.tau_fudge <= 0:
            out.append(FieldProblem("tau_fudge", f"must be positive (got {self.tau_fudge:g})"))
        if self.do_fast_subsets and self.nr_iter < FAST_SUBSETS_MIN_ITERATIONS:
            out.append(FieldProblem(
                "do_fast_subsets", f"needs at least {FAST_SUBSETS_MIN_ITERATIONS} iterations (Number of "
                                   f"iterations is {self.nr_iter})"))
        if self.dont_skip_align and self.do_local_ang_searches and self.sigma_angles <= 0:
            out.append(FieldProblem("sigma_angles", "must be positive for local angular searches"))
        if self.use_gpu and not self.dont_skip_align:
            out.append(FieldProblem("use_gpu", "cannot be used without image alignment (Sampling tab: "
                                               "Perform image alignment? is No), as in RELION"))
        return out

    # ---- command line ----------------------------------------------------------------------

    def command_args(self, job_dir: str | os.PathLike, *, is_continue: bool | None = None) -> list[str]:
        """The relion_refine arguments RELION's GUI builds for this form
        (``getCommandsClass3DJob``), in its order.

        Parameters
        ----------
        job_dir
            The job directory (``Class3D/job009`` or ``Class3D/job009/``); the output rootname
            is ``<job_dir>/run``.
        is_continue
            Build the continuation command (``--continue fn_cont`` plus the options that may
            change on continuation). Default: continue when ``fn_cont`` is given.

        Returns
        -------
        list[str]
            The argv without the program name and without ``--pipeline_control``.
        """
        continuing = self._is_continue(is_continue)
        args = ["--continue", self.fn_cont] if continuing else []
        args += ["--o", self.output_root(job_dir)]
        if not continuing:
            args += self.input_args() + self.reference_args()
        args += self.compute_args()
        if not continuing:
            args += self.ctf_args()
        args += ["--iter", str(self.nr_iter), "--tau2_fudge", relion_number(self.tau_fudge),
                 "--particle_diameter", relion_number(self.particle_diameter)]
        if not continuing:
            if self.do_fast_subsets:
                args.append("--fast_subsets")
            args += ["--K", str(self.nr_classes), "--flatten_solvent"]
            if self.do_zero_mask:
                args.append("--zero_mask")
            if self.highres_limit > 0:
                args += ["--strict_highres_exp", relion_number(self.highres_limit)]
        if self.fn_mask:
            args += ["--solvent_mask", self.fn_mask]
        if not self.dont_skip_align:
            args.append("--skip_align")
        else:
            args += ["--oversampling", "1", "--healpix_order", str(self.healpix_order)]
            if self.do_local_ang_searches:
                # RELION: floatToString(range / 3), six significant digits
                args += ["--sigma_ang", f"{self.sigma_angles / 3.0:.6g}"]
            args += ["--offset_range", relion_number(self.offset_range),
                     "--offset_step", relion_number(2 * self.offset_step)]
        if not continuing:
            args += ["--sym", self.sym_name, "--norm", "--scale"]
        return args + self.running_args()


def output_nodes(params: Class3DParameters) -> tuple[OutputNode, ...]:
    """The nodes RELION registers for a tomo 3D classification: the last iteration's data,
    optimiser, one map per class and optimisation set (``getOutputNodesRefine``)."""
    root = f"run_it{int(params.nr_iter):03d}"
    return (
        OutputNode(f"{root}_data.star", CLASS3D_LABELS["data"]),
        OutputNode(f"{root}_optimiser.star", CLASS3D_LABELS["optimiser"]),
        *(OutputNode(f"{root}_class{k:03d}.mrc", CLASS3D_LABELS["map"]) for k in range(1, int(params.nr_classes) + 1)),
        OutputNode(f"{root}_optimisation_set.star", CLASS3D_LABELS["optimisation_set"]),
    )


SPEC = JobSpec(
    name="class3d",
    params_class=Class3DParameters,
    module="processing.jobs.class3d",
    output_nodes=output_nodes,
    continue_args=continue_args,
    description="3D classification (relion.class3d)",
)
