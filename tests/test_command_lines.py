"""Every job's command line is the inverse of its parser: options (or a job's parameters) made
at random, written as RELION's flags and parsed back, come back equal. Checks the one
declaration each job's flags come from (RefineOptions fields for 3D auto-refine; the
parameter classes' ``flag`` metadata for Extract and Reconstruct)."""
from __future__ import annotations

import shlex
from dataclasses import MISSING, fields

import numpy as np
import param
import pytest

from processing.jobs.extract_params import ExtractParameters
from processing.jobs.reconstruct_params import ReconstructParameters
from processing.jobs.relion_params import build_flag_parser, params_from_flags, relion_command
from processing.refine.flags import SUPPORTED_FLAGS, parse_refine_args
from processing.refine.options import RefineOptions, to_argv

SEEDS = range(25)


def _random_refine_options(rng: np.random.Generator) -> RefineOptions:
    values = {}
    for f in fields(RefineOptions):
        if "flag" not in f.metadata:
            continue
        _, kind, _, _ = f.metadata["flag"]
        keep_default = f.default is not MISSING and rng.random() < 0.3
        if keep_default:
            continue
        if kind == "flag":
            values[f.name] = bool(rng.random() < 0.5)
        elif kind == "int":
            # Within every integer flag's range (--oversampling 0-3, --pad 1-2, ...).
            values[f.name] = int(rng.integers(1, 3))
        elif kind == "float":
            values[f.name] = float(np.round(rng.uniform(0.5, 90.0), 3))
        elif kind == "optional_str":
            values[f.name] = str(rng.choice(["", "0", "0:1", "0,1:2"]))
        else:
            values[f.name] = f"dir{int(rng.integers(100))}/file_{f.name}.star"
    values["symmetry"] = str(rng.choice(["C1", "C6", "D2", "O", "I3"]))
    # What a new run needs (the parser refuses a run without them): auto-refine for even seeds,
    # 3D classification (without --auto_refine, with its own options) for odd ones.
    values.update(continue_from=None, optimisation_set="Extract/job002/optimisation_set.star",
                  reference="Reconstruct/job003/merged.mrc")
    if rng.random() < 0.5:
        values.update(auto_refine=True, split_random_halves=True, n_classes=1)
        for name in ("n_iterations", "fast_subsets", "skip_align"):
            values.pop(name, None)
    else:
        values.update(auto_refine=False, split_random_halves=False, n_iterations=int(rng.integers(20, 30)))
        values.setdefault("tau2_fudge", 4.0)
    return RefineOptions(**values)


@pytest.mark.parametrize("seed", SEEDS)
def test_refine_options_survive_their_command_line(seed) -> None:
    options = _random_refine_options(np.random.default_rng(seed))
    argv = to_argv(options)
    back = parse_refine_args(argv)
    assert back == options.with_changes(command_line=tuple(argv))
    # ... and every flag the parser knows (but the two GUI extras) is a RefineOptions field's.
    assert {f.attr for f in SUPPORTED_FLAGS.values()} - {None} == \
        {f.name for f in fields(RefineOptions) if "flag" in f.metadata}


def test_refine_switches_that_are_on_by_default_are_turned_off_by_their_flag() -> None:
    options = _random_refine_options(np.random.default_rng(0)).with_changes(
        combine_weights_via_disc=False, parallel_disc_io=False)
    argv = to_argv(options)
    assert "--dont_combine_weights_via_disc" in argv and "--no_parallel_disc_io" in argv
    assert parse_refine_args(argv).combine_weights_via_disc is False


def _random_params(cls, rng: np.random.Generator):
    values = {}
    for name in cls.fields():
        p = cls.param[name]
        if not (p.metadata or {}).get("flag") or name.startswith("in_"):
            continue
        if isinstance(p, param.Boolean):
            values[name] = bool(rng.random() < 0.5)
        elif isinstance(p, param.Integer):
            lo, hi = p.bounds or (1, 512)
            values[name] = int(rng.integers(max(lo or 1, 1), min(hi or 512, 512) + 1))
        elif isinstance(p, param.Number):
            lo, hi = p.bounds or (0.5, 100.0)
            values[name] = float(np.round(rng.uniform(max(lo or 0.5, 0.5), min(hi or 100.0, 100.0)), 2))
        elif isinstance(p, param.Selector):
            values[name] = rng.choice(p.objects)
    values["in_optimisation"] = "Refine3D/job004/run_optimisation_set.star"
    values["nr_threads"] = int(rng.integers(1, 9))
    return cls.from_values(values)


@pytest.mark.parametrize("cls", [ExtractParameters, ReconstructParameters])
@pytest.mark.parametrize("seed", SEEDS)
def test_job_parameters_survive_their_command_line(cls, seed) -> None:
    params = _random_params(cls, np.random.default_rng(seed))
    command = relion_command(params, "Job/job007")
    args = build_flag_parser(cls).parse_args(shlex.split(command)[2:])
    back, _ = params_from_flags(cls, args, nr_mpi=params.nr_mpi)
    assert back.to_job_options() == params.to_job_options(), command
