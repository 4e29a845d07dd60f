"""Parameters of "3D auto-refine" in tomography mode (RELION ``relion.refine3d.tomo``).

Fields, job.star variables, labels, defaults and bounds are those of RELION 5's tomo
auto-refine form (project spec 8.5); :meth:`Refine3DParameters.command_args` builds the
relion_refine command line RELION's GUI builds, and :meth:`Refine3DParameters.to_options`
turns it into the engine's :class:`~processing.refine.options.RefineOptions` through the same
parser that ``tomodash refine`` uses, so a form and a pasted RELION command cannot disagree.
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import ClassVar

import param

from processing.errors import InputError
from processing.geometry.symmetry import normalise_symmetry_name
from processing.refine.options import SAMPLING_CHOICES, RefineOptions, healpix_order_from_sampling

from .base import FieldProblem
from .spec import JobSpec, OutputNode
from .tomo_inputs import TomoInputParameters

__all__ = ["Refine3DParameters", "GPU_IDS_PATTERN", "SPEC", "continue_args"]

#: ``Which GPUs to use``: MPI ranks separated by ``:``, threads by ``,`` (e.g. ``0,0:1,1``).
GPU_IDS_PATTERN = re.compile(r"^\s*(\d+(\s*,\s*\d+)*)(\s*:\s*\d+(\s*,\s*\d+)*)*\s*$")


def _number(value: float) -> str:
    """A number as RELION's GUI writes it on a command line (``2``, ``0.6``, ``230``)."""
    value = float(value)
    if value == int(value):
        return str(int(value))
    return f"{value:.10g}"


class Refine3DParameters(TomoInputParameters):
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

    # ---- I/O (after the tomography input block) --------------------------------------------

    fn_ref = param.String(
        "", label="Reference map:",
        doc="The starting map, e.g. merged.mrc of Reconstruct particle. It should have the "
            "particles' box and pixel size (or see 'Resize reference if needed?'). Low-pass "
            "filter it strongly (below) so that the refinement does not inherit its noise or "
            "bias.",
        metadata={"tab": "I/O", "var": "fn_ref", "node": "DensityMap.mrc",
                  "pattern": "Image Files (*.{spi,vol,mrc})"},
    )
    fn_mask = param.String(
        "", label="Reference mask (optional):",
        doc="Optional soft mask with the reference's box, values between 0 (solvent) and 1 "
            "(protein). Each iteration's half maps are multiplied by it (solvent flattening). "
            "Leave empty to use a soft sphere of the mask diameter instead.",
        metadata={"tab": "I/O", "var": "fn_mask", "node": "Mask3D.mrc",
                  "pattern": "Image Files (*.{spi,vol,msk,mrc})"},
    )
    fn_cont = param.String(
        "", label="Continue from here: ",
        doc="To continue a run that stopped (or was killed), choose the run_itNNN_optimiser.star "
            "of the last completed iteration; the run resumes at iteration NNN+1 with all its "
            "state. Only the Compute options, the mask diameter, the mask and the threads can "
            "be changed on continuation.",
        metadata={"tab": "I/O", "var": "fn_cont", "pattern": "STAR Files (*_it*_optimiser.star)"},
    )

    # ---- Reference -----------------------------------------------------------------------

    ref_correct_greyscale = param.Boolean(
        False, label="Ref. map is on absolute greyscale?",
        doc="The likelihood compares each image with a CTF-modulated projection of the "
            "reference directly, so the reference must be on the intensity scale RELION itself "
            "reconstructs from these particles. Yes: for maps made by Reconstruct particle or a "
            "previous refinement of the same particles. No (safe when in doubt): the first "
            "iteration uses a scale-invariant cross-correlation and the result is low-pass "
            "filtered again before iteration 2; it costs little.",
        metadata={"tab": "Reference", "var": "ref_correct_greyscale"},
    )
    trust_ref_size = param.Boolean(
        True, label="Resize reference if needed?",
        doc="Yes: a reference whose pixel size or box differs from the particles' is rescaled "
            "in Fourier space and padded/cropped to the particle box. No: such a reference is "
            "an error.",
        metadata={"tab": "Reference", "var": "trust_ref_size"},
    )
    ini_high = param.Number(
        60.0, bounds=(0, None), softbounds=(0, 200), step=5, label="Initial low-pass filter (A):",
        doc="Low-pass filter the reference to this resolution (Å) before the first iteration. "
            "Starting from low resolution keeps the refinement from being biased by the "
            "reference's high-resolution noise; the gold-standard procedure then earns every "
            "finer shell from the data. Use 40-60 Å; 0 means no filter.",
        metadata={"tab": "Reference", "var": "ini_high"},
    )
    sym_name = param.String(
        "C1", label="Symmetry:",
        doc="Point group of the particle (C1 if asymmetric; Cn, Dn, T, O, I1-I4), in RELION's "
            "convention: the Cn axis along Z, the Dn 2-fold along X. Only the asymmetric unit "
            "is searched and the maps are symmetrised, so the reference must already be aligned "
            "to the symmetry axes.",
        metadata={"tab": "Reference", "var": "sym_name"},
    )

    # ---- CTF -------------------------------------------------------------------------------

    do_ctf_correction = param.Boolean(
        True, label="Do CTF-correction?",
        doc="Apply each tilt image's CTF (defocus at the particle's depth, dose weighting) to "
            "the reference projections and correct the reconstruction for it. Almost always Yes.",
        metadata={"tab": "CTF", "var": "do_ctf_correction"},
    )
    ctf_intact_first_peak = param.Boolean(
        False, label="Ignore CTFs until first peak?",
        doc="Treat the CTF as 1 at frequencies below its first maximum. Only useful when the "
            "CTF model is poor at the lowest resolutions; not generally recommended.",
        metadata={"tab": "CTF", "var": "ctf_intact_first_peak"},
    )

    # ---- Optimisation ----------------------------------------------------------------------

    particle_diameter = param.Number(
        200.0, bounds=(0, None), softbounds=(0, 1000), step=10, label="Mask diameter (A):",
        doc="Diameter (Å) of the soft circular mask applied to every particle image, and of the "
            "spherical solvent mask of the references when no reference mask is given. Make it a "
            "little larger than the particle: too small masks away signal. The tutorial uses "
            "500 Å at bin 6 and 230 Å at bin 2 for HIV capsid hexamers.",
        metadata={"tab": "Optimisation", "var": "particle_diameter"},
    )
    do_zero_mask = param.Boolean(
        True, label="Mask individual particles with zeros?",
        doc="Yes: outside the mask the particle images are set to zero, which removes noise "
            "and helps alignment of small particles. No: the outside is filled with random "
            "noise, which avoids unmodelled correlations (sometimes better for large complexes "
            "at high resolution).",
        metadata={"tab": "Optimisation", "var": "do_zero_mask"},
    )
    do_solvent_fsc = param.Boolean(
        False, label="Use solvent-flattened FSCs?",
        doc="Compute the gold-standard FSC from masked half maps, corrected by phase "
            "randomisation as in post-processing, every iteration. Needs a reference mask; can "
            "give higher resolution when the particle fills little of the box.",
        metadata={"tab": "Optimisation", "var": "do_solvent_fsc"},
    )

    # ---- Auto-sampling ---------------------------------------------------------------------

    sampling = param.Selector(
        objects=list(SAMPLING_CHOICES), default="7.5 degrees", label="Initial angular sampling:",
        doc="Angular step of the first iterations (HEALPix directions x in-plane angle); it is "
            "made finer automatically as the estimated accuracy improves. 7.5 degrees suits most "
            "cases; 3.7 degrees for O or I symmetry.",
        metadata={"tab": "Auto-sampling", "var": "sampling"},
    )
    offset_range = param.Number(
        5.0, bounds=(0, None), softbounds=(0, 30), step=1, label="Initial offset range (pix):",
        doc="Translations are searched within this radius (pixels of the particle images) "
            "around each particle's best position of the previous iteration. Adjusted "
            "automatically later.",
        metadata={"tab": "Auto-sampling", "var": "offset_range"},
    )
    offset_step = param.Number(
        1.0, bounds=(0, None), softbounds=(0.1, 5), step=0.1, label="Initial offset step (pix):",
        doc="Step (pixels) of the translational search, after oversampling: the first pass of "
            "the adaptive search uses a grid twice as coarse (relion_refine's --offset_step is "
            "twice this value). Adjusted automatically later.",
        metadata={"tab": "Auto-sampling", "var": "offset_step"},
    )
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
    sigma_tilt = param.Number(
        -1.0, bounds=(-1, None), softbounds=(-1, 30), step=1, label="Prior width on tilt angle (deg):",
        doc="Standard deviation (deg) of a Gaussian prior on the tilt angle around "
            "rlnAngleTiltPrior; the rot and psi angles are still searched globally. For "
            "particles picked on spheres or filaments the tilt prior (90 deg) says the particle's "
            "axis is perpendicular to the membrane, so a prior of 10 deg keeps the search to "
            "orientations consistent with the picking and stops particles flipping upside down. "
            "Negative or 0: no prior. Local searches later replace this prior.",
        metadata={"tab": "Auto-sampling", "var": "sigma_tilt"},
    )

    # ---- Compute ---------------------------------------------------------------------------

    do_parallel_discio = param.Boolean(
        True, label="Use parallel disc I/O?",
        doc="Yes: every MPI process reads its own particles from disc. No: only the leader "
            "reads and sends the images to the others, for file systems that cope badly with "
            "many processes reading at once.",
        metadata={"tab": "Compute", "var": "do_parallel_discio"},
    )
    nr_pool = param.Integer(
        3, bounds=(1, None), softbounds=(1, 16), step=1, label="Number of pooled particles:",
        doc="Particles each thread takes per batch: each MPI process works on batches of "
            "(this x threads) particles. Larger batches mean fewer requests and better "
            "vectorisation, at the cost of memory.",
        metadata={"tab": "Compute", "var": "nr_pool"},
    )
    do_pad1 = param.Boolean(
        False, label="Skip padding?",
        doc="Yes: references are not padded twofold in Fourier space (--pad 1). Halves their "
            "memory and speeds up projection, at the cost of interpolation accuracy.",
        metadata={"tab": "Compute", "var": "do_pad1"},
    )
    do_preread_images = param.Boolean(
        False, label="Pre-read all particles into RAM?",
        doc="Keep every particle's images (their Fourier transforms, masked copies and CTFs) in "
            "memory once read in the first iteration, so that later iterations do no disc I/O. "
            "Each MPI process holds its own share; the job refuses to start when that share would "
            "not fit in the memory available (No: images are read from disc as needed).",
        metadata={"tab": "Compute", "var": "do_preread_images"},
    )
    scratch_dir = param.String(
        os.environ.get("RELION_SCRATCH_DIR", ""), label="Copy particles to scratch directory:",
        doc="A directory on a fast local disc (e.g. SSD): the particles are copied into a "
            "relion_volatile subdirectory before the first iteration and read from there, and "
            "the copy is removed when the job finishes. Empty: read from the project. Ignored "
            "when pre-reading into RAM.",
        metadata={"tab": "Compute", "var": "scratch_dir"},
    )
    do_combine_thru_disc = param.Boolean(
        False, label="Combine iterations through disc?",
        doc="Yes: at the end of each iteration the processes exchange their accumulated sums "
            "through files on disc instead of over MPI (less network load, more disc load).",
        metadata={"tab": "Compute", "var": "do_combine_thru_disc"},
    )
    use_gpu = param.Boolean(
        False, label="Use GPU acceleration?",
        doc="Run the expectation step on GPUs (CUDA).",
        metadata={"tab": "Compute", "var": "use_gpu"},
    )
    gpu_ids = param.String(
        "", label="Which GPUs to use:",
        doc="Empty: GPUs are assigned automatically. Otherwise device numbers, MPI processes "
            "separated by ':' and threads by ',' (e.g. 0,0:1,1 for two processes with two threads "
            "each).",
        metadata={"tab": "Compute", "var": "gpu_ids"},
    )

    # ---- validation --------------------------------------------------------------------------

    def _is_continue(self, is_continue: bool | None) -> bool:
        return bool(self.fn_cont) if is_continue is None else bool(is_continue)

    def problems(self, *, is_continue: bool | None = None) -> list[FieldProblem]:
        """Everything wrong with the form; continuation mode (default: ``fn_cont`` given)
        checks the continuation file instead of inputs, reference and reference options."""
        continuing = self._is_continue(is_continue)
        out = super().problems()
        if continuing:
            # The inputs, reference and sampling come from the optimiser file.
            out = [p for p in out if p.field not in ("in_optimisation", "in_particles", "in_tomograms",
                                                     "in_trajectories")]
            if not self.fn_cont:
                out.append(FieldProblem("fn_cont", "is required to continue a run"))
            else:
                name = os.path.basename(self.fn_cont)
                if "_it" not in name or "_optimiser" not in name:
                    out.append(FieldProblem(
                        "fn_cont", "must be a run_itNNN_optimiser.star file (its name must contain "
                                   "_it and _optimiser)"))
                elif not os.path.isfile(self.fn_cont):
                    out.append(FieldProblem("fn_cont", f"file does not exist: {self.fn_cont}"))
        else:
            if not self.fn_ref:
                out.append(FieldProblem("fn_ref", "is required"))
            elif self.fn_ref == "None":
                out.append(FieldProblem(
                    "fn_ref", "None (de-novo refinement without a reference) is not supported"))
            elif not os.path.isfile(self.fn_ref):
                out.append(FieldProblem("fn_ref", f"file does not exist: {self.fn_ref}"))
            try:
                normalise_symmetry_name(self.sym_name)
            except InputError as exc:
                out.append(FieldProblem("sym_name", exc.message))
            if self.offset_step <= 0:
                out.append(FieldProblem("offset_step", "must be positive"))
            if self.do_solvent_fsc and not self.fn_mask:
                out.append(FieldProblem("do_solvent_fsc", "needs a reference mask (I/O tab)"))
        if self.fn_mask and not os.path.isfile(self.fn_mask):
            out.append(FieldProblem("fn_mask", f"file does not exist: {self.fn_mask}"))
        if self.particle_diameter <= 0:
            out.append(FieldProblem("particle_diameter", "must be positive"))
        if self.nr_mpi > 1 and (self.nr_mpi < 3 or self.nr_mpi % 2 == 0):
            out.append(FieldProblem(
                "nr_mpi", f"must be odd and at least 3 (one leader plus the same number of "
                          f"processes for each half), or 1; got {self.nr_mpi}"))
        if self.use_gpu and self.gpu_ids.strip() and not GPU_IDS_PATTERN.match(self.gpu_ids):
            out.append(FieldProblem(
                "gpu_ids", f"{self.gpu_ids!r} is not a list of device numbers (MPI processes "
                           f"separated by ':', threads by ',', e.g. 0,0:1,1)"))
        if self.other_args.strip():
            try:
                shlex.split(self.other_args)
            except ValueError as exc:
                out.append(FieldProblem("other_args", f"cannot be split into arguments: {exc}"))
        return out

    def check(self, *, is_continue: bool | None = None) -> None:
        found = self.problems(is_continue=is_continue)
        if found:
            first = found[0]
            label = self.param[first.field].label
            raise InputError(f"{label.strip()} {first.message}", column=first.field)

    # ---- command line ----------------------------------------------------------------------

    @property
    def healpix_order(self) -> int:
        """``--healpix_order`` of the initial angular sampling (GUI value is the oversampled one)."""
        return healpix_order_from_sampling(self.sampling)

    @property
    def auto_local_healpix_order(self) -> int:
        """``--auto_local_healpix_order`` of the local-searches choice."""
        return healpix_order_from_sampling(self.auto_local_sampling)

    def program(self) -> str:
        """``relion_refine_mpi`` when more than one MPI process, else ``relion_refine``."""
        return "relion_refine_mpi" if self.nr_mpi > 1 else "relion_refine"

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
        root = str(job_dir).rstrip("/") + "/run"
        args = ["--o", root]
        if continuing:
            args += ["--continue", self.fn_cont]
        else:
            args += ["--auto_refine", "--split_random_halves"]
            if self.use_direct_entries:
                args += ["--i", self.in_particles, "--tomograms", self.in_tomograms]
                if self.in_trajectories:
                    args += ["--trajectories", self.in_trajectories]
            else:
                args += ["--ios", self.in_optimisation]
            if self.sigma_tilt > 0:
                args += ["--sigma_tilt", _number(self.sigma_tilt)]
            args += ["--ref", self.fn_ref]
            if not self.ref_correct_greyscale:
                args.append("--firstiter_cc")
            if self.trust_ref_size:
                args.append("--trust_ref_size")
            if self.ini_high > 0:
                args += ["--ini_high", _number(self.ini_high)]
        # Compute options, new run and continuation alike.
        if not self.do_combine_thru_disc:
            args.append("--dont_combine_weights_via_disc")
        if not self.do_parallel_discio:
            args.append("--no_parallel_disc_io")
        if self.do_preread_images:
            args.append("--preread_images")
        elif self.scratch_dir:
            args += ["--scratch_dir", self.scratch_dir]
        args += ["--pool", str(self.nr_pool), "--pad", "1" if self.do_pad1 else "2"]
        # RELION's GUI passes these again on continuation (relion_refine reads them then too).
        if self.auto_faster:
            args += ["--auto_ignore_angles", "--auto_resol_angles"]
        if not continuing:
            if self.do_ctf_correction:
                args.append("--ctf")
                if self.ctf_intact_first_peak:
                    args.append("--ctf_intact_first_peak")
        args += ["--particle_diameter", _number(self.particle_diameter)]
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
                "--offset_range", _number(self.offset_range),
                "--offset_step", _number(2 * self.offset_step),
                "--sym", self.sym_name,
                "--low_resol_join_halves", "40",
                "--norm", "--scale",
            ]
        args += ["--j", str(self.nr_threads)]
        if self.use_gpu:
            args += ["--gpu", self.gpu_ids]
        if self.other_args.strip():
            args += shlex.split(self.other_args)
        return args

    def command_line(self, job_dir: str | os.PathLike, *, is_continue: bool | None = None) -> str:
        """The full command as one shell line (``relion_refine_mpi --o ...``), for note.txt."""
        return shlex.join([self.program(), *self.command_args(job_dir, is_continue=is_continue)])

    def to_options(self, job_dir: str | os.PathLike, *, is_continue: bool | None = None) -> RefineOptions:
        """The engine's options: :meth:`command_args` parsed by ``tomodash refine``'s parser.

        Raises
        ------
        InputError
            If the form cannot make a valid command (also run :meth:`check` first for
            messages attached to fields).
        """
        from processing.refine.flags import parse_refine_args

        return parse_refine_args(self.command_args(job_dir, is_continue=is_continue))


def continue_args(job_dir: Path, process_name: str) -> dict[str, str]:
    """Continue hook of 3D auto-refine: ``fn_cont`` = the last ``run_itNNN_optimiser.star``.

    The engine resumes after that (last completed) iteration, as ``relion_refine --continue``.
    Without one the job restarts from the beginning.
    """
    found = sorted(job_dir.glob("run_it[0-9][0-9][0-9]_optimiser.star"))
    return {"fn_cont": f"{process_name}{found[-1].name}"} if found else {}


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
