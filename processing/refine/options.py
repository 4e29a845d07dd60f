"""Options of a 3D auto-refine run: the relion_refine flags the tomo "3D auto-refine" job uses,
declared once. Each field of :class:`RefineOptions` carries its flag, the flag's kind and its
help; the command-line parser (:mod:`processing.refine.flags`) and :func:`to_argv` are derived
from them.

Units as on relion_refine's command line: offsets in pixels (of the particle images),
angles in degrees, resolutions and diameters in Å.
"""
from __future__ import annotations

from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any

from .relion_code import RelionCode

__all__ = ["RefineOptions", "Flag", "option_flags", "to_argv", "SAMPLING_CHOICES", "healpix_order_from_sampling"]

#: The GUI's angular-sampling menu; the 0-based index is the HEALPix order (oversampling 1).
SAMPLING_CHOICES: tuple[str, ...] = (
    "30 degrees", "15 degrees", "7.5 degrees", "3.7 degrees", "1.8 degrees",
    "0.9 degrees", "0.5 degrees", "0.2 degrees", "0.1 degrees",
)

#: The kinds of flag: a switch without a value, a typed value, or a value that may be left out.
FLAG_KINDS = ("flag", "int", "float", "str", "optional_str")
REQUIRED = MISSING


@dataclass(frozen=True)
class Flag:
    """A relion_refine flag and the RefineOptions field it sets (``attr`` None: accepted and
    ignored). A switch (kind ``flag``) stores ``value`` when given: True, or False for the
    ``--dont_...``/``--no_...`` switches of options that are on by default."""

    name: str
    attr: str | None
    kind: str
    help: str = ""
    value: Any = True

    def __post_init__(self) -> None:
        if self.kind not in FLAG_KINDS:
            raise TypeError(f"{self.name}: flag kind {self.kind!r} is not one of {FLAG_KINDS}")
        if not self.name.startswith("--"):
            raise TypeError(f"flag {self.name!r} must start with --")


def option(default: Any, flag: str, kind: str, help: str, *, inverted: bool = False) -> Field:
    """A RefineOptions field set by relion_refine's ``flag`` (checked when the class is made)."""
    if kind == "flag" and not isinstance(default, bool):
        raise TypeError(f"{flag}: a switch needs a boolean default")
    if inverted and (kind != "flag" or default is not True):
        raise TypeError(f"{flag}: only a switch that is on by default can be inverted")
    metadata = {"flag": (flag, kind, help, not inverted)}
    return field(metadata=metadata) if default is REQUIRED else field(default=default, metadata=metadata)


def healpix_order_from_sampling(choice: str) -> int:
    """HEALPix order of a GUI angular-sampling choice (``"7.5 degrees"`` -> 2)."""
    try:
        return SAMPLING_CHOICES.index(choice)
    except ValueError:
        raise ValueError(f"unknown angular sampling {choice!r}; choose one of {', '.join(SAMPLING_CHOICES)}") from None


@dataclass(frozen=True)
class RefineOptions:
    """Everything that drives one 3D auto-refine or 3D classification run, each field with its
    relion_refine flag."""

    # I/O
    output_root: str = option(REQUIRED, "--o", "str", "output rootname, e.g. Refine3D/job004/run")
    optimisation_set: str | None = option(None, "--ios", "str",
        "input optimisation set (particles, tomograms, trajectories)")
    particles: str | None = option(None, "--i", "str", "input particle set (overrides the optimisation set's)")
    tomograms: str | None = option(None, "--tomograms", "str",
        "input tomogram set (overrides the optimisation set's)")
    trajectories: str | None = option(None, "--trajectories", "str",
        "input motion trajectories (overrides the optimisation set's)")
    reference: str | None = option(None, "--ref", "str", "reference map (MRC)")
    solvent_mask: str | None = option(None, "--solvent_mask", "str", "reference mask: values in [0,1], 1 = protein")
    continue_from: str | None = option(None, "--continue", "str", "continue from this run_itNNN_optimiser.star")
    # Reference
    firstiter_cc: bool = option(False, "--firstiter_cc", "flag",
        "cross-correlation in iteration 1 (reference not on absolute greyscale)")
    trust_ref_size: bool = option(False, "--trust_ref_size", "flag",
        "resize the reference to the particles' pixel and box")
    ini_high: float = option(-1.0, "--ini_high", "float", "initial low-pass filter of the reference (Å)")
    symmetry: str = option("C1", "--sym", "str", "point-group symmetry (C1, C6, D2, T, O, I, ...)")
    # CTF
    ctf: bool = option(False, "--ctf", "flag", "CTF correction")
    ctf_intact_first_peak: bool = option(False, "--ctf_intact_first_peak", "flag",
        "ignore CTFs until their first peak")
    # Optimisation
    particle_diameter: float = option(-1.0, "--particle_diameter", "float", "mask diameter (Å)")
    zero_mask: bool = option(False, "--zero_mask", "flag", "fill the particles' solvent with zeros (else noise)")
    flatten_solvent: bool = option(False, "--flatten_solvent", "flag", "mask the references after each iteration")
    solvent_correct_fsc: bool = option(False, "--solvent_correct_fsc", "flag",
        "solvent-flattened, phase-randomisation-corrected FSCs")
    tau2_fudge: float = option(1.0, "--tau2_fudge", "float",
        "regularisation parameter T (default 1 for auto-refine, 4 for classification)")
    # Sampling
    oversampling: int = option(1, "--oversampling", "int", "adaptive oversampling order")
    healpix_order: int = option(2, "--healpix_order", "int",
        "initial HEALPix order (angular sampling 60/2^order deg)")
    psi_step: float = option(-1.0, "--psi_step", "float", "psi step (deg; default: the HEALPix step)")
    auto_local_healpix_order: int = option(4, "--auto_local_healpix_order", "int",
        "HEALPix order from which local searches start")
    offset_range: float = option(6.0, "--offset_range", "float", "initial offset search range (px)")
    offset_step: float = option(2.0, "--offset_step", "float", "initial offset step (px)")
    sigma_tilt: float = option(-1.0, "--sigma_tilt", "float", "prior width on the tilt angle (deg)")
    auto_ignore_angles: bool = option(False, "--auto_ignore_angles", "flag", "finer sampling despite changing angles")
    auto_resol_angles: bool = option(False, "--auto_resol_angles", "flag",
        "finer sampling when the resolution requires it")
    perturb: float = option(0.5, "--perturb", "float", "random perturbation of the sampling (fraction of a step)")
    offset_prior_sigma: float = option(10.0, "--offset", "float", "initial sigma of the offset prior (Å)")
    # Gold standard (3D auto-refine) or classification (neither flag)
    # (True by default here: a RefineOptions made in code is auto-refine; a command line
    # without --auto_refine is classification, see flags.parse_refine_args)
    auto_refine: bool = option(True, "--auto_refine", "flag", "3D auto-refine (else 3D classification)")
    split_random_halves: bool = option(True, "--split_random_halves", "flag",
        "gold-standard random halves (required by --auto_refine)")
    # Classification
    n_classes: int = option(1, "--K", "int", "number of classes (3D classification)")
    n_iterations: int = option(50, "--iter", "int", "number of iterations (3D classification)")
    skip_align: bool = option(False, "--skip_align", "flag",
        "classification without alignment: keep every particle's pose, marginalise over classes only")
    sigma_ang: float = option(-1.0, "--sigma_ang", "float",
        "local angular searches: prior width on all three angles (deg; searches +/- 3 sigma)")
    strict_highres_exp: float = option(-1.0, "--strict_highres_exp", "float",
        "limit the E-step to this resolution (Å)")
    fast_subsets: bool = option(False, "--fast_subsets", "flag",
        "subsets of the particles in the first 15 iterations (needs --iter >= 20)")
    low_resol_join_halves: float = option(40.0, "--low_resol_join_halves", "float",
        "join the halves below this resolution (Å)")
    norm: bool = option(False, "--norm", "flag", "per-particle normalisation correction")
    scale: bool = option(False, "--scale", "flag", "per-group intensity-scale correction")
    auto_iter_max: int = option(999, "--auto_iter_max", "int", "stop after this many iterations")
    random_seed: int = option(-1, "--random_seed", "int", "random seed (-1: from the clock)")
    # Compute
    pad: int = option(2, "--pad", "int", "padding factor of the references (1 or 2)")
    pool: int = option(1, "--pool", "int", "particles per thread in one batch")
    preread_images: bool = option(False, "--preread_images", "flag", "read all particles into memory first")
    scratch_dir: str | None = option(None, "--scratch_dir", "str",
        "copy the particles to this (fast, local) directory")
    combine_weights_via_disc: bool = option(True, "--dont_combine_weights_via_disc", "flag",
        "combine sums through MPI, not files", inverted=True)
    parallel_disc_io: bool = option(True, "--no_parallel_disc_io", "flag",
        "only the leader reads particle files", inverted=True)
    threads: int = option(1, "--j", "int", "threads per MPI process")
    gpu: str | None = option(None, "--gpu", "optional_str",
        "use GPUs (optional ids: ranks separated by ':', threads by ',')")
    cpu: bool = option(False, "--cpu", "flag",
        "reproduce RELION's accelerated code on the CPU (relion_refine --cpu) rather than its original CPU code")
    # Anything else from the command line, kept for the record (note.txt, optimiser.star).
    command_line: tuple[str, ...] = field(default_factory=tuple)

    @property
    def classification(self) -> bool:
        """3D classification (relion_refine without ``--auto_refine``)."""
        return not self.auto_refine

    @property
    def relion_code(self) -> RelionCode:
        """The RELION implementation whose numbers this run reproduces (:mod:`.relion_code`)."""
        return RelionCode.chosen_by(gpu=self.gpu, cpu=self.cpu, skip_align=self.skip_align and self.classification)

    def with_changes(self, **changes) -> "RefineOptions":
        return replace(self, **changes)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def option_flags() -> dict[str, Flag]:
    """Every relion_refine flag a RefineOptions field declares, by flag name."""
    out = {}
    for f in fields(RefineOptions):
        if "flag" in f.metadata:
            name, kind, help_, value = f.metadata["flag"]
            out[name] = Flag(name, f.name, kind, help_, value)
    return out


def to_argv(options: RefineOptions) -> list[str]:
    """The relion_refine flags that make ``options`` (defaults left out; the parser's inverse)."""
    argv: list[str] = []
    for f in fields(RefineOptions):
        if "flag" not in f.metadata:
            continue
        name, kind, _, switch_value = f.metadata["flag"]
        value = getattr(options, f.name)
        if kind == "flag":
            if value == switch_value:
                argv.append(name)
        elif f.default is not MISSING and value == f.default and not (
                f.name == "tau2_fudge" and options.classification):
            # (classification's T defaults to 4, not to the field's 1: always written)
            continue
        elif kind == "optional_str":
            if value is not None:
                argv += [name] + ([value] if value else [])
        elif value is not None:
            argv += [name, _number_text(value) if isinstance(value, float) else str(value)]
    return argv


def _number_text(value: float) -> str:
    """``value`` as RELION's GUI writes numbers (``60``, ``7.5``), unless that loses digits."""
    short = f"{value:g}"
    return short if float(short) == value else repr(value)
