"""Job entry point of Subset selection (RELION's Select job, ``relion_star_handler``).

::

    python -m processing.jobs.select --job-dir Select/job005
    tomodash select --i Extract/job002/optimisation_set.star --o Select/job005/ --remove_duplicates 30
    tomodash select --i Refine3D/job004/run_data.star --o Select/job006/ \\
        --select rlnMaxValueProbDistribution --minval 0.1 --maxval 1
    tomodash select --i Extract/job002/optimisation_set.star --o Select/job007/ \\
        --center --center_Z 11 --remove_duplicates 50
    tomodash select --opt Class3D/job009/run_it005_optimiser.star --classes 2 --o Select/job010/

``--i`` takes a particles.star or an optimisation set (told apart by their contents; ``--ios``
names an optimisation set explicitly; ``--opt`` an iteration of a classification, whose
particles of the ``--classes`` are kept); ``--o`` is the job directory (RELION's
``--o <job>/particles.star`` is taken as its directory). Writes particles.star (+ particles_removed.star when
removing duplicates), optimisation_set.star and selection.json in the job directory.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from processing.errors import InputError
from processing.io.optimisation_set import OptimisationSet
from processing.io.paths import resolve_path
from processing.io.star import read_star
from processing.parallel import Communicator
from processing.select import SelectionSettings, compute_selection, parse_class_list, select_particles

from .relion_params import build_flag_parser, main_from_flags, main_from_job_dir
from .select_params import SelectParameters

__all__ = ["settings_from_params", "resolve_inputs", "classification_inputs", "is_optimisation_set", "check_inputs", "validate", "run",
           "main", "add_parser"]


def settings_from_params(params: SelectParameters) -> SelectionSettings:
    """The engine's settings for these job parameters (after :meth:`SelectParameters.check`)."""
    centre = (float(params.center_x), float(params.center_y), float(params.center_z)) if params.do_center else None
    if params.selects_classes:
        return SelectionSettings(classes=parse_class_list(params.select_classes), centre_px=centre)
    if params.do_remove_duplicates:
        return SelectionSettings(min_distance_angst=float(params.duplicate_threshold), centre_px=centre)
    return SelectionSettings(label=params.select_label.strip(), minval=float(params.select_minval),
                             maxval=float(params.select_maxval), centre_px=centre)


def is_optimisation_set(path: str | Path) -> bool:
    """Whether the STAR file at ``path`` is an optimisation set (its first table names
    rlnTomoParticlesFile or rlnTomoTomogramsFile) rather than a particle set."""
    blocks = read_star(path)
    if not blocks or "particles" in blocks:
        return False
    first = next(iter(blocks.values()))
    labels = set(first) if isinstance(first, dict) else set(first.columns)
    return bool(labels & {"rlnTomoParticlesFile", "rlnTomoTomogramsFile"})


def classification_inputs(optimiser: str | Path, *, root: str | Path | None = None
                          ) -> tuple[str, OptimisationSet]:
    """The particles (``rlnExperimentalDataStarFile``) of a classification's
    ``run_itNNN_optimiser.star`` and the optimisation set to carry on: the iteration's
    ``run_itNNN_optimisation_set.star`` beside it (RELION 5 writes one per iteration of a tomo
    classification), else the optimiser's tomograms and trajectories.

    Raises
    ------
    InputError
        Not an optimiser file (no data_optimiser_general with rlnExperimentalDataStarFile).
    """
    blocks = read_star(optimiser)
    general = blocks.get("optimiser_general")
    if not isinstance(general, dict) or not general.get("rlnExperimentalDataStarFile"):
        raise InputError("not a relion_refine optimiser file (no rlnExperimentalDataStarFile in "
                         "data_optimiser_general)", file=optimiser, table="optimiser_general",
                         column="rlnExperimentalDataStarFile")
    particles = str(resolve_path(str(general["rlnExperimentalDataStarFile"]), root=root, referrer=optimiser))
    sibling = Path(str(optimiser)[: -len("_optimiser.star")] + "_optimisation_set.star")
    if str(optimiser).endswith("_optimiser.star") and sibling.is_file():
        return particles, OptimisationSet.read(sibling)
    carried = {name: str(general.get(label) or "") or None
               for name, label in (("tomograms", "rlnTomoTomogramsFile"), ("trajectories", "rlnTomoTrajectoriesFile"))}
    return particles, OptimisationSet(particles=particles, path=Path(optimiser), **carried)


def resolve_inputs(params: SelectParameters, *, root: str | Path | None = None) -> tuple[str, OptimisationSet | None]:
    """The particles file to select from and the optimisation set to carry on (or None);
    ``root`` is the project directory the set's entries are relative to (default: the working
    directory).

    Raises
    ------
    InputError
        The optimisation set names no particles (column rlnTomoParticlesFile), ``fn_data``
        holds an optimisation set (field fn_data), or ``fn_model`` is not an optimiser file.
    """
    if params.fn_model:
        return classification_inputs(params.fn_model, root=root)
    opt = OptimisationSet.read(params.in_optimisation) if params.in_optimisation else None
    if params.fn_data:
        if is_optimisation_set(params.fn_data):
            raise InputError("this is an optimisation set, not a particles.star: give it as the input "
                             "optimisation set", file=params.fn_data, column="fn_data")
        return params.fn_data, opt
    if opt is None:
        raise InputError("give an optimisation set or a particles.star", column="in_optimisation")
    entry = opt.require("particles")
    return str(resolve_path(entry, root=root, referrer=params.in_optimisation)), opt


def check_inputs(params: SelectParameters, *, root: str | Path | None = None) -> None:
    """Read the inputs and make the selection without writing anything (bad input raises);
    ``root`` as for :func:`resolve_inputs`."""
    particles, opt = resolve_inputs(params, root=root)
    compute_selection(particles, settings_from_params(params), optimisation_set=opt, root=root)


def validate(params: SelectParameters, extras: argparse.Namespace) -> None:
    """Everything that can be checked before anything is written."""
    check_inputs(params)


def run(params: SelectParameters, extras: argparse.Namespace, *, job_dir: Path, comm: Communicator,
        is_continue: bool, log=print) -> None:
    """Select the particles into ``job_dir`` (one process; other MPI ranks wait)."""
    if not comm.is_leader:
        return
    particles, opt = resolve_inputs(params)
    select_particles(particles, settings_from_params(params), output_dir=job_dir, optimisation_set=opt, log=log)


def _from_flags(args: argparse.Namespace) -> int:
    """``tomodash select``: RELION's flags imply the task (``--remove_duplicates D`` removes
    duplicates, ``--select LABEL`` selects on values, ``--classes`` keeps classes); ``--i`` may
    be an optimisation set."""
    if Path(args.o).name == "particles.star":
        args.o = str(Path(args.o).parent) + "/"   # RELION's GUI passes --o <job>/particles.star
    if args.duplicate_threshold is not None:
        args.do_remove_duplicates = True
    if args.select_label is not None:
        args.do_select_values = True
    if args.fn_data and not args.in_optimisation:
        try:
            if Path(args.fn_data).is_file() and is_optimisation_set(args.fn_data):
                args.in_optimisation, args.fn_data = args.fn_data, None
        except InputError as exc:
            print(f"ERROR: {exc}", file=sys.stderr, flush=True)
            return 2
    return main_from_flags(SelectParameters, args, validate=validate, run=run)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tomodash select`` (relion_star_handler's flags)."""
    parser = subparsers.add_parser(
        "select", help="Subset selection: remove duplicates, select on a value range (flags of relion_star_handler) "
                       "or keep classes of a classification",
        allow_abbrev=False,
    )
    build_flag_parser(SelectParameters, parser=parser)
    for action in parser._actions:
        if action.dest in ("do_remove_duplicates", "do_select_values"):
            action.help = argparse.SUPPRESS  # implied by --remove_duplicates / --select
    parser.set_defaults(func=_from_flags)
    return parser


def main(argv: list[str] | None = None) -> int:
    return main_from_job_dir(SelectParameters, argv, validate=validate, run=run)


if __name__ == "__main__":
    sys.exit(main())
