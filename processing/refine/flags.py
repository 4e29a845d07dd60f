"""relion_refine's command line for 3D auto-refine and 3D classification, parsed into :class:`RefineOptions`
(``tomodash refine`` itself is registered by :mod:`processing.jobs.refine3d`).

The tomo "3D auto-refine" job of RELION's GUI builds a ``relion_refine(_mpi)`` command
(project spec 8.5, STA spec 5.1). :func:`parse_refine_args` accepts exactly the flags that
command uses (plus a few relion_refine options that make sense for this job), so that::

    mpiexec -n 3 `which relion_refine_mpi` --o Refine3D/job004/run --auto_refine ...

runs unchanged as::

    mpiexec -n 3 tomodash refine --o Refine3D/job004/run --auto_refine ...

Parsing follows relion_refine's own parser: flags may come in any order, a flag given twice
takes its first value, boolean flags take no value, ``--gpu`` takes an optional value.
Flags of relion_refine that this job does not support (``--blush``, ``--relax_sym``, helical
options, classification options, ...) are refused with an error naming them: a run never
silently ignores an option.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from processing.errors import InputError

from .options import Flag, RefineOptions, option_flags

__all__ = ["parse_refine_args", "SUPPORTED_FLAGS", "refine_help"]


#: Every flag :func:`parse_refine_args` accepts: those the RefineOptions fields declare, and
#: two that RELION's GUI adds to every command, accepted without effect.
SUPPORTED_FLAGS: dict[str, Flag] = {
    **option_flags(),
    "--pipeline_control": Flag("--pipeline_control", None, "str",
                               "job directory of the pipeline (accepted; exit markers go to the --o directory)"),
    "--theme": Flag("--theme", None, "str", "GUI theme (accepted, no effect)"),
}

#: relion_refine flags RELION's tomo auto-refine GUI can produce that we refuse, and why.
_REFUSED: dict[str, str] = {
    "--blush": "Blush regularisation needs RELION's neural-network denoiser and is not supported",
    "--relax_sym": "symmetry relaxation is not supported",
    "--helix": "helical reconstruction is not supported",
    "--allow_coarser_sampling": "coarser sampling in early classification iterations is not supported",
    "--grad": "gradient-driven optimisation (initial models) is not supported",
}


def refine_help() -> str:
    """The usage text of ``tomodash refine``."""
    lines = [
        "usage: tomodash refine <relion_refine flags>",
        "",
        "3D auto-refine (gold-standard, maximum likelihood) with relion_refine's flags; a",
        "RELION command line runs unchanged with relion_refine(_mpi) replaced by tomodash refine.",
        "",
        "flags:",
    ]
    width = max(len(k) for k in SUPPORTED_FLAGS) + 8
    for name, flag in SUPPORTED_FLAGS.items():
        arg = {"flag": "", "int": " N", "float": " X", "str": " S", "optional_str": " [S]"}[flag.kind]
        lines.append(f"  {(name + arg).ljust(width)} {flag.help}")
    return "\n".join(lines)


def _convert(flag_name: str, flag: Flag, text: str) -> Any:
    try:
        if flag.kind == "int":
            value = float(text)
            if value != int(value):
                raise ValueError
            return int(value)
        if flag.kind == "float":
            return float(text)
    except ValueError:
        expected = "an integer" if flag.kind == "int" else "a number"
        raise InputError(f"{flag_name} expects {expected}, got {text!r}", column=flag_name) from None
    return text


def parse_refine_args(argv: Sequence[str]) -> RefineOptions:
    """Parse relion_refine's command-line flags of a 3D auto-refine run.

    Parameters
    ----------
    argv
        The arguments (without the program name; a leading ``relion_refine`` /
        ``relion_refine_mpi`` / ```which relion_refine_mpi``` token is skipped).

    Returns
    -------
    RefineOptions
        With ``command_line`` = the arguments as given.

    Raises
    ------
    InputError
        An unknown or unsupported flag, a missing or malformed value, a stray argument, or a
        missing compulsory option (``--o``; for a new run ``--auto_refine``,
        ``--split_random_halves``, an input and ``--ref``). ``column`` names the flag.
    """
    args = [str(a) for a in argv]
    if args and not args[0].startswith("--") and "relion_refine" in args[0]:
        args = args[1:]
    values: dict[str, Any] = {}
    seen: set[str] = set()
    i = 0
    while i < len(args):
        token = args[i]
        if not token.startswith("--"):
            raise InputError(f"unexpected argument {token!r} (every option starts with --)", column=token)
        if token in _REFUSED:
            raise InputError(f"{token}: {_REFUSED[token]}", column=token)
        flag = SUPPORTED_FLAGS.get(token)
        if flag is None:
            raise InputError(
                f"unknown option {token} (tomodash refine accepts relion_refine's 3D auto-refine "
                f"options; see tomodash refine --help)", column=token)
        i += 1
        if flag.kind == "flag":
            value: Any = flag.value
        elif flag.kind == "optional_str":
            if i < len(args) and not args[i].startswith("--"):
                value = args[i]
                i += 1
            else:
                value = ""
        else:
            if i >= len(args) or (args[i].startswith("--") and args[i] in SUPPORTED_FLAGS | _REFUSED):
                raise InputError(f"{token} expects a value", column=token)
            value = _convert(token, flag, args[i])
            i += 1
        if token in seen:
            continue  # relion_refine reads the first occurrence of an option
        seen.add(token)
        if flag.attr is not None:
            values[flag.attr] = value

    if "output_root" not in values or not values["output_root"]:
        raise InputError("--o (output rootname, e.g. Refine3D/job004/run) is required", column="--o")
    continuing = bool(values.get("continue_from"))
    if not continuing:
        values.setdefault("auto_refine", False)
        values.setdefault("split_random_halves", False)
    if values.get("auto_refine"):
        for flag, attr in (("--K", "n_classes"), ("--iter", "n_iterations"), ("--fast_subsets", "fast_subsets"),
                           ("--skip_align", "skip_align")):
            if attr in values and not (attr == "n_classes" and values[attr] == 1):
                raise InputError(f"{flag} is a classification option: 3D auto-refine (--auto_refine) has one "
                                 "class and stops when it converges (use --auto_iter_max to cap it)", column=flag)
    if continuing:
        # The continued run's kind (auto-refine or classification) comes from its optimiser.star.
        pass
    else:
        if values.get("auto_refine") and not values.get("split_random_halves"):
            raise InputError("--split_random_halves is required: auto-refine is gold-standard "
                             "(two independent random halves)", column="--split_random_halves")
        if not values.get("auto_refine"):
            if values.get("split_random_halves"):
                raise InputError("--split_random_halves needs --auto_refine (3D classification refines all "
                                 "particles together)", column="--split_random_halves")
            values.setdefault("tau2_fudge", 4.0)   # relion_refine's default T for 3D classification
        if not values.get("optimisation_set") and not values.get("particles"):
            raise InputError("an input is required: --ios <optimisation set> or --i <particles> "
                             "--tomograms <tomograms>", column="--ios")
        if not values.get("optimisation_set") and not values.get("tomograms"):
            raise InputError("--tomograms is required with --i (2D-stack particles need their tomogram set)",
                             column="--tomograms")
        if not values.get("reference") or values.get("reference") == "None":
            raise InputError("--ref <map> is required (de-novo refinement without a reference is not supported)",
                             column="--ref")
    if "symmetry" in values:
        from processing.geometry.symmetry import normalise_symmetry_name

        try:
            values["symmetry"] = normalise_symmetry_name(values["symmetry"])
        except InputError as exc:
            raise InputError(f"--sym: {exc.message}", column="--sym") from None
    _check_ranges(values)
    return RefineOptions(**values, command_line=tuple(args))


def _check_ranges(values: dict[str, Any]) -> None:
    def bad(flag: str, message: str) -> InputError:
        return InputError(f"{flag} {message}", column=flag)

    if values.get("offset_step", 1.0) <= 0:
        raise bad("--offset_step", "must be positive")
    if values.get("offset_range", 0.0) < 0:
        raise bad("--offset_range", "cannot be negative")
    if "particle_diameter" in values and values["particle_diameter"] == 0:
        raise bad("--particle_diameter", "must be positive (or negative for the box size)")
    if not 0 <= values.get("oversampling", 1) <= 3:
        raise bad("--oversampling", "must be between 0 and 3")
    for flag, attr in (("--healpix_order", "healpix_order"), ("--auto_local_healpix_order", "auto_local_healpix_order")):
        if not 0 <= values.get(attr, 0) <= 8:
            raise bad(flag, "must be between 0 and 8")
    if values.get("pad", 2) not in (1, 2):
        raise bad("--pad", "must be 1 or 2")
    if values.get("pool", 1) < 1:
        raise bad("--pool", "must be at least 1")
    if values.get("threads", 1) < 1:
        raise bad("--j", "must be at least 1")
    if values.get("tau2_fudge", 1.0) <= 0:
        raise bad("--tau2_fudge", "must be positive")
    if values.get("auto_iter_max", 1) < 1:
        raise bad("--auto_iter_max", "must be at least 1")
    if values.get("n_classes", 1) < 1:
        raise bad("--K", "must be at least 1")
    if values.get("n_iterations", 1) < 1:
        raise bad("--iter", "must be at least 1")
    if values.get("fast_subsets") and values.get("n_iterations", 50) < 20:
        raise bad("--fast_subsets", "needs at least 20 iterations (--iter)")


# --------------------------------------------------------------------------------------------
# the ``tomodash refine`` subcommand
