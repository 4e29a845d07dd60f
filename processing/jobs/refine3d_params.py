"""Parameters of "3D auto-refine" in tomography mode (RELION ``relion.refine3d.tomo``).

Fields, job.star variables, labels, defaults and bounds are those of RELION 5's tomo
auto-refine form (project spec 8.5); :meth:`Refine3DParameters.command_args` builds the
relion_refine command line RELION's GUI builds, and :meth:`Refine3DParameters.to_options`
turns it into the engine's :class:`~processing.refine.options.RefineOptions` through the same
parser that ``tomodash refine`` uses, so a form and a pasted RELION command cannot disagree.
What it shares with 3D classification lives in :mod:`processing.jobs.relion_refine_params`.
"""
from __future__ import annotations

import os
from typing import ClassVar

import param

from processing.refine.options import SAMPLING_CHOICES, healpix_order_from_sampling

from .base import FieldProblem
from .relion_refine_params import (GPU_IDS_PATTERN, RelionRefineParameters, continue_args, mask_diameter_param,
                                   offset_range_param, offset_step_param, relion_number, sampling_param,
                                   sigma_tilt_param, zero_mask_param)
from .spec import JobSpec, OutputNode

__all__ = ["Refine3DParameters", "GPU_IDS_PATTERN", "SPEC", "continue_args"]


class Refine3DParameters(RelionRefineParameters):
    """3D auto-refine of subtomograms: gold-standard maximum-likelihood refinement.

    The particles are split into two random halves that are refined independently against
    their own reference; the Fourier shell correlation between the two half maps measures
    the resolution without overfitting, and the angular and translational sampling become
    finer automatically until nothing improves any more.

    Not supported (left out of the form, refused on the command line): Blush regularisation
    (Optimisation tab; needs RELION's neural-network denoiser), symmetry relaxation ("Relax
    symmetry", Auto-sampling tab) and the whole Helix tab. Every field that is present
    changes what the refinement does.
    """

    job_type_label: ClassVar[str] = "relion.refine3d.tomo"
    process_dir: ClassVar[str] = "Refine3D"
    is_tomo: ClassVar[bool] = True
    tabs: ClassVar[tuple[str, ...]] = (
        "I/O", "Reference", "CTF", "Optimisation", "Auto-sampling", "Compute", "Running",
    )

    # ---- Optimisation ----------------------------------------------------------------------

    particle_diameter = mask_diameter_param()
    do_zero_mask = zero_mask_param()
    do_solvent_fsc = param.Boolean(
        False, label="Use solvent-flattened FSCs?",
        doc="Compute the gold-standard FSC from masked half maps, corrected by phase "
            "randomisation as in post-processing, every iteration. Needs a reference mask; can "
            "give higher resolution when the particle fills little of the box.",
        metadata={"tab": "Optimisation", "var": "do_solvent_fsc"},
    )

    # ---- Auto-sampling ---------------------------------------------------------------------

    sampling = sampling_param(
        "Initial angular sampling:", "Auto-sampling",
        "Angular step of the first iterations (HEALPix directions x in-plane angle); it is "
        "made finer automatically as the estimated accuracy improves. 7.5 degrees suits most "
        "cases; 3.7 degrees for O or I symmetry.")
    offset_range = offset_range_param(
        "Initial offset range (pix):", "Auto-sampling",
        "Translations are searched within this radius (pixels of the particle images) "
        "around each particle's best position of the previous iteration. Adjusted "
        "automatically later.")
    offset_step = offset_step_param(
        "Initial offset step (pix):", "Auto-sampling",
        "Step (pixels) of the translational search, after oversampling: the first pass of "
        "the adaptive search uses a grid twice as coarse (relion_refine's --offset_step is "
        "twice this value). Adjusted automatically later.")
    auto_local_sampling = param.Selector(
        objects=list(SAMPLING_CHOICES), default="1.8 degrees",
        label="Local searches from auto-sampling:",
        doc="From this angular sampling on, orientations are searched only locally, within "
            "about +/-6 sampling steps of each particle's current orientation (a Gaussian prior "
            "centred on it). Local searches are much faster and keep particles from jumping to "
            "symmetry-related or wrong orientations once the map is good. 1.8 degrees suits "
            "most particles; 0.9 degrees may help icosahedral ones.",
        metadata={"tab": "Auto-sampling", "var": "auto_local_sampling"},
    )
    auto_faster = param.Boolean(
        False, label="Use finer angular sampling faster?",
        doc="Let the angular sampling become finer sooner: despite orientations still changing "
            "(--auto_ignore_angles), and as soon as the current resolution needs it at the edge "
            "of the particle (--auto_resol_angles). Faster, but less tested for final quality.",
        metadata={"tab": "Auto-sampling", "var": "auto_faster"},
    )
    sigma_tilt = sigma_tilt_param("Auto-sampling")

    # ---- validation --------------------------------------------------------------------------

    def _new_run_problems(self) -> list[FieldProblem]:
        out = []
        if self.offset_step <= 0:
            out.append(FieldProblem("offset_step", "must be positive"))
        if self.do_solvent_fsc and not self.fn_mask:
            out.append(FieldProblem("do_solvent_fsc", "needs a reference mask (I/O tab)"))
        return out

    def _form_problems(self) -> list[FieldProblem]:
        if self.nr_mpi > 1 and (self.nr_mpi < 3 or self.nr_mpi % 2 == 0):
            return [FieldProblem(
                "nr_mpi", f"must be odd and at least 3 (one leader plus the same number of "
                          f"processes for each half), or 1; got {self.nr_mpi}")]
        return []

    # ---- command line ----------------------------------------------------------------------

    @property
    def auto_local_healpix_order(self) -> int:
        """``--auto_local_healpix_order`` of the local-searches choice."""
        return healpix_order_from_sampling(self.auto_local_sampling)

    def command_args(self, job_dir: str | os.PathLike, *, is_continue: bool | None = None) -> list[str]:
        """The relion_refine arguments RELION's GUI builds for this form (project spec 8.5).

        Parameters
        ----------
        job_dir
            The job directory (``Refine3D/job004`` or ``Refine3D/job004/``); the output
            rootname is ``<job_dir>/run``.
        is_continue
            Build the continuation command (``--continue fn_cont`` plus only the options that
            may change on continuation). Default: continue when ``fn_cont`` is given.

        Returns
        -------
        list[str]
            The argv without the program name and without ``--pipeline_control``.
        """
        continuing = self._is_continue(is_continue)
        args = ["--o", self.output_root(job_dir)]
        if continuing:
            args += ["--continue", self.fn_cont]
        else:
            args += ["--auto_refine", "--split_random_halves", *self.input_args(), *self.reference_args()]
        args += self.compute_args()
        # RELION's GUI passes these again on continuation (relion_refine reads them then too).
        if self.auto_faster:
            args += ["--auto_ignore_angles", "--auto_resol_angles"]
        if not continuing:
            args += self.ctf_args()
        args += ["--particle_diameter", relion_number(self.particle_diameter)]
        if not continuing:
            args.append("--flatten_solvent")
            if self.do_zero_mask:
                args.append("--zero_mask")
        if self.fn_mask:
            args += ["--solvent_mask", self.fn_mask]
            if self.do_solvent_fsc and not continuing:
                args.append("--solvent_correct_fsc")
        if not continuing:
            args += [
                "--oversampling", "1",
                "--healpix_order", str(self.healpix_order),
                "--auto_local_healpix_order", str(self.auto_local_healpix_order),
                "--offset_range", relion_number(self.offset_range),
                "--offset_step", relion_number(2 * self.offset_step),
                "--sym", self.sym_name,
                "--low_resol_join_halves", "40",
                "--norm", "--scale",
            ]
        return args + self.running_args()


SPEC = JobSpec(
    name="refine3d",
    params_class=Refine3DParameters,
    module="processing.jobs.refine3d",
    outputs=(
        OutputNode("run_data.star", "ParticleGroupMetadata.star.relion.refine3d"),
        OutputNode("run_optimiser.star", "OptimiserData.star.relion.refine3d"),
        OutputNode("run_half1_class001_unfil.mrc", "DensityMap.mrc.relion.halfmap.refine3d"),
        OutputNode("run_class001.mrc", "DensityMap.mrc.relion.refine3d"),
        OutputNode("run_optimisation_set.star", "TomoOptimisationSet.star.relion.refine3d"),
    ),
    continue_args=continue_args,
    description="3D auto-refine (relion.refine3d.tomo)",
)
