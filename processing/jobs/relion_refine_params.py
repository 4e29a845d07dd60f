"""What the tomo forms of RELION's relion_refine jobs share: "3D auto-refine"
(:mod:`~processing.jobs.refine3d_params`) and "3D classification"
(:mod:`~processing.jobs.class3d_params`).

Both forms start with the tomography input block, a reference map, an optional mask and a
continuation file (I/O tab), the same Reference and CTF tabs and the same Compute tab
(``RelionJob::initialiseAutorefineJob`` / ``initialiseClass3DJob`` of RELION 5). The fields of
the Optimisation and sampling tabs come in another order in each form, so they are declared by
each form from the factories below (:func:`mask_diameter_param`, ...), which keep their
job.star variables and help in one place.

:class:`RelionRefineParameters` also holds the checks and command-line pieces the two share;
each form assembles its command in RELION's token order from them.
"""
from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import param

from processing.errors import InputError
from processing.geometry.symmetry import normalise_symmetry_name
from processing.refine.options import SAMPLING_CHOICES, RefineOptions, healpix_order_from_sampling

from .base import FieldProblem
from .tomo_inputs import TomoInputParameters

__all__ = ["RelionRefineParameters", "GPU_IDS_PATTERN", "relion_number", "continue_args",
           "mask_diameter_param", "zero_mask_param", "sampling_param", "offset_range_param",
           "offset_step_param", "sigma_tilt_param"]

#: ``Which GPUs to use``: MPI ranks separated by ``:``, threads by ``,`` (e.g. ``0,0:1,1``).
GPU_IDS_PATTERN = re.compile(r"^\s*(\d+(\s*,\s*\d+)*)(\s*:\s*\d+(\s*,\s*\d+)*)*\s*$")

_INPUT_FIELDS = ("in_optimisation", "in_particles", "in_tomograms", "in_trajectories")


def relion_number(value: float) -> str:
    """A number as RELION's GUI writes it on a command line (``2``, ``0.6``, ``230``)."""
    value = float(value)
    if value == int(value):
        return str(int(value))
    return f"{value:.10g}"


# ---- fields each form declares in its own place -----------------------------------------------

def mask_diameter_param() -> param.Number:
    """``particle_diameter`` (Optimisation tab)."""
    return param.Number(
        200.0, bounds=(0, None), softbounds=(0, 1000), step=10, label="Mask diameter (A):",
        doc="Diameter (Å) of the soft circular mask applied to every particle image, and of the "
            "spherical solvent mask of the references when no reference mask is given. Make it a "
            "little larger than the particle: too small masks away signal. The tutorial uses "
            "500 Å at bin 6 and 230 Å at bin 2 for HIV capsid hexamers.",
        metadata={"tab": "Optimisation", "var": "particle_diameter"},
    )


def zero_mask_param() -> param.Boolean:
    """``do_zero_mask`` (Optimisation tab)."""
    return param.Boolean(
        True, label="Mask individual particles with zeros?",
        doc="Yes: outside the mask the particle images are set to zero, which removes noise "
            "and helps alignment of small particles (and most classifications). No: the outside "
            "is filled with random noise, which avoids unmodelled correlations (sometimes better "
            "for large complexes at high resolution).",
        metadata={"tab": "Optimisation", "var": "do_zero_mask"},
    )


def sampling_param(label: str, tab: str, doc: str) -> param.Selector:
    """``sampling``: the angular step (RELION's radio menu, default 7.5 degrees)."""
    return param.Selector(objects=list(SAMPLING_CHOICES), default="7.5 degrees", label=label, doc=doc,
                          metadata={"tab": tab, "var": "sampling"})


def offset_range_param(label: str, tab: str, doc: str) -> param.Number:
    """``offset_range`` (pixels)."""
    return param.Number(5.0, bounds=(0, None), softbounds=(0, 30), step=1, label=label, doc=doc,
                        metadata={"tab": tab, "var": "offset_range"})


def offset_step_param(label: str, tab: str, doc: str) -> param.Number:
    """``offset_step`` (pixels, after oversampling: the command gets twice this value)."""
    return param.Number(1.0, bounds=(0, None), softbounds=(0.1, 5), step=0.1, label=label, doc=doc,
                        metadata={"tab": tab, "var": "offset_step"})


def sigma_tilt_param(tab: str) -> param.Number:
    """``sigma_tilt``, the tomo-only prior on the tilt angle."""
    return param.Number(
        -1.0, bounds=(-1, None), softbounds=(-1, 30), step=1, label="Prior width on tilt angle (deg):",
        doc="Standard deviation (deg) of a Gaussian prior on the tilt angle around "
            "rlnAngleTiltPrior; the rot and psi angles are still searched globally. For "
            "particles picked on spheres or filaments the tilt prior (90 deg) says the particle's "
            "axis is perpendicular to the membrane, so a prior of 10 deg keeps the search to "
            "orientations consistent with the picking and stops particles flipping upside down. "
            "Negative or 0: no prior. Local searches later replace this prior.",
        metadata={"tab": tab, "var": "sigma_tilt"},
    )


class RelionRefineParameters(TomoInputParameters):
    """The fields, checks and command-line pieces of RELION's relion_refine forms (module
    docstring); not a job type itself."""

    # ---- I/O (after the tomography input block) --------------------------------------------

    fn_ref = param.String(
        "", label="Reference map:",
        doc="The starting map, e.g. merged.mrc of Reconstruct particle or the map of a previous "
            "refinement. It should have the particles' box and pixel size (or see 'Resize "
            "reference if needed?'). Low-pass filter it strongly (Reference tab) so that the run "
            "does not inherit its noise or bias.",
        metadata={"tab": "I/O", "var": "fn_ref", "node": "DensityMap.mrc",
                  "pattern": "Image Files (*.{spi,vol,mrc})"},
    )
    fn_mask = param.String(
        "", label="Reference mask (optional):",
        doc="Optional soft mask with the reference's box, values between 0 (solvent) and 1 "
            "(protein). Each iteration's maps are multiplied by it (solvent flattening). "
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
            "reconstructs from these particles. Yes: for a previous refinement of the same "
            "particles; RELION's tutorial also answers Yes for Reconstruct particle's maps, "
            "although they are brighter than the refinement's own (13x at low resolution in "
            "RELION 5's own run on the demo data), and with clean, high-contrast particles "
            "that can scramble the first iteration's poses (RELION's as tomodash's). No (safe "
            "when in doubt): the first iteration uses a scale-invariant cross-correlation and "
            "the result is low-pass filtered again before iteration 2; it costs little.",
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
            "Starting from low resolution keeps the run from being biased by the reference's "
            "high-resolution noise; every finer shell is then earned from the data. Use 40-60 Å; "
            "0 means no filter.",
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
        checks the continuation file instead of inputs, reference and reference options.
        Each form adds its own rules in :meth:`_new_run_problems` and :meth:`_form_problems`."""
        continuing = self._is_continue(is_continue)
        out = super().problems()
        if continuing:
            # The inputs, reference and sampling come from the optimiser file.
            out = [p for p in out if p.field not in _INPUT_FIELDS]
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
                    "fn_ref", "None (a run without a reference) is not supported"))
            elif not os.path.isfile(self.fn_ref):
                out.append(FieldProblem("fn_ref", f"file does not exist: {self.fn_ref}"))
            try:
                normalise_symmetry_name(self.sym_name)
            except InputError as exc:
                out.append(FieldProblem("sym_name", exc.message))
            out += self._new_run_problems()
        if self.fn_mask and not os.path.isfile(self.fn_mask):
            out.append(FieldProblem("fn_mask", f"file does not exist: {self.fn_mask}"))
        if self.particle_diameter <= 0:
            out.append(FieldProblem("particle_diameter", "must be positive"))
        out += self._form_problems()
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

    def _new_run_problems(self) -> list[FieldProblem]:
        """The form's own checks of a new run (not a continuation)."""
        return []

    def _form_problems(self) -> list[FieldProblem]:
        """The form's own checks of both a new run and a continuation."""
        return []

    def check(self, *, is_continue: bool | None = None) -> None:
        found = self.problems(is_continue=is_continue)
        if found:
            first = found[0]
            label = self.param[first.field].label
            raise InputError(f"{label.strip()} {first.message}", column=first.field)

    # ---- command-line pieces, in RELION's order -------------------------------------------------

    @property
    def healpix_order(self) -> int:
        """``--healpix_order`` of the angular sampling (the GUI value is the oversampled one)."""
        return healpix_order_from_sampling(self.sampling)

    def program(self) -> str:
        """``relion_refine_mpi`` when more than one MPI process, else ``relion_refine``."""
        return "relion_refine_mpi" if self.nr_mpi > 1 else "relion_refine"

    @staticmethod
    def output_root(job_dir: str | os.PathLike) -> str:
        """``<job_dir>/run``, the rootname of every output."""
        return str(job_dir).rstrip("/") + "/run"

    def input_args(self) -> list[str]:
        """The tomography input block of relion_refine (``--ios`` or ``--i --tomograms``) and
        the tilt prior (``--sigma_tilt``) of a new run."""
        if self.use_direct_entries:
            args = ["--i", self.in_particles, "--tomograms", self.in_tomograms]
            if self.in_trajectories:
                args += ["--trajectories", self.in_trajectories]
        else:
            args = ["--ios", self.in_optimisation]
        if self.sigma_tilt > 0:
            args += ["--sigma_tilt", relion_number(self.sigma_tilt)]
        return args

    def reference_args(self) -> list[str]:
        """``--ref``, ``--firstiter_cc``, ``--trust_ref_size``, ``--ini_high`` of a new run."""
        args = ["--ref", self.fn_ref]
        if not self.ref_correct_greyscale:
            args.append("--firstiter_cc")
        if self.trust_ref_size:
            args.append("--trust_ref_size")
        if self.ini_high > 0:
            args += ["--ini_high", relion_number(self.ini_high)]
        return args

    def compute_args(self) -> list[str]:
        """The Compute tab's flags (a new run and a continuation alike)."""
        args = []
        if not self.do_combine_thru_disc:
            args.append("--dont_combine_weights_via_disc")
        if not self.do_parallel_discio:
            args.append("--no_parallel_disc_io")
        if self.do_preread_images:
            args.append("--preread_images")
        elif self.scratch_dir:
            args += ["--scratch_dir", self.scratch_dir]
        return args + ["--pool", str(self.nr_pool), "--pad", "1" if self.do_pad1 else "2"]

    def ctf_args(self) -> list[str]:
        """``--ctf`` (and ``--ctf_intact_first_peak``) of a new run."""
        if not self.do_ctf_correction:
            return []
        return ["--ctf"] + (["--ctf_intact_first_peak"] if self.ctf_intact_first_peak else [])

    def running_args(self) -> list[str]:
        """``--j``, ``--gpu`` and the Additional arguments, which end every command."""
        args = ["--j", str(self.nr_threads)]
        if self.use_gpu:
            args += ["--gpu", self.gpu_ids]
        if self.other_args.strip():
            args += shlex.split(self.other_args)
        return args

    def command_args(self, job_dir: str | os.PathLike, *, is_continue: bool | None = None) -> list[str]:
        """The relion_refine arguments RELION's GUI builds for this form (without the program
        name and ``--pipeline_control``); continuation (default: when ``fn_cont`` is given)
        gives ``--continue fn_cont`` and only the options that may change then."""
        raise NotImplementedError

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
    """Continue hook of the relion_refine jobs: ``fn_cont`` = the last
    ``run_itNNN_optimiser.star`` of the job directory.

    The engine resumes after that (last completed) iteration, as ``relion_refine --continue``.
    Without one the job restarts from the beginning.
    """
    found = sorted(job_dir.glob("run_it[0-9][0-9][0-9]_optimiser.star"))
    return {"fn_cont": f"{process_name}{found[-1].name}"} if found else {}
