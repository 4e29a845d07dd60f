"""The look at a job's input data before a session creates and launches it.

A session launches its jobs in the background, so a job that fails on bad input does so
after ``tomodash run`` (or the dashboard) has returned, leaving a failed job directory
behind. :func:`check_job_inputs` runs the checks the job itself makes before it writes
anything (its ``validate``: STAR files, tilt-image headers, references), so the session can
refuse the job instead and create nothing. It reads no pixel data: problems only the pixels
show (NaN or infinite values) are found by the job itself while it reads them.
"""
from __future__ import annotations

import os
from pathlib import Path

from processing.errors import InputError

from .base import JobParameters
from .tomo_inputs import TomoInputParameters

__all__ = ["check_job_inputs"]


def _absolute_inputs(params: JobParameters, root: Path) -> JobParameters:
    """A copy of ``params`` whose input-file fields are absolute (relative to ``root``), so the
    check does not depend on the caller's working directory (and changes no global state)."""
    probe = type(params)(**{n: getattr(params, n) for n in params.fields()})
    for name in params.fields():
        meta = params.param[name].metadata or {}
        value = getattr(probe, name)
        if ("node" in meta or "pattern" in meta) and isinstance(value, str) and value \
                and not os.path.isabs(value):
            setattr(probe, name, str(root / value))
    return probe


def check_job_inputs(params: JobParameters, *, root: str | os.PathLike) -> None:
    """Check the input data of a job about to run in the project directory ``root``.

    Extract subtomos and Reconstruct particle: the particle and tomogram sets and every tilt
    image's header (:func:`processing.jobs.extract.check_inputs`). 3D auto-refine and 3D
    classification: settings, particles, optics, mask and references
    (:func:`processing.refine.inputs.check_inputs`). Subset
    selection: the particles and the selection itself (:func:`processing.jobs.select.check_inputs`).
    Mask creation: the map, and that the mask would not be empty
    (:func:`processing.jobs.maskcreate.check_inputs`, which reads the map). Post-processing: half
    maps, mask and MTF (:func:`processing.postprocess.check_inputs`). Other job types are not
    checked here.

    Raises
    ------
    InputError
        Naming the file (and table, column, row) at fault.
    """
    root = Path(root).resolve()
    from .maskcreate_params import MaskCreateParameters
    from .relion_refine_params import RelionRefineParameters

    if isinstance(params, MaskCreateParameters):  # the map is read: an empty mask is refused here
        from .maskcreate import check_inputs as check_mask_inputs
        from .relion_params import parse_other_args

        check_mask_inputs(_absolute_inputs(params, root), parse_other_args(MaskCreateParameters, params.other_args))
        return

    if isinstance(params, RelionRefineParameters):  # 3D auto-refine and 3D classification
        from processing.refine.inputs import check_inputs as check_refine_inputs

        probe = _absolute_inputs(params, root)
        options = probe.to_options(root / probe.process_dir / "preflight")
        if getattr(params, "do_queue", False) and options.gpu is not None:
            # A queued job's GPUs are those of the node it lands on, which the job checks there
            # before it writes anything; here only the device list's syntax is.
            from processing.refine.devices import parse_gpu_ids

            parse_gpu_ids(options.gpu)
            options = options.with_changes(gpu=None)
        check_refine_inputs(options, n_ranks=int(params.nr_mpi), root=root)
        return
    from .postprocess_params import PostprocessParameters

    if isinstance(params, PostprocessParameters):
        from .postprocess import validate as check_postprocess
        from .relion_params import parse_other_args

        probe = _absolute_inputs(params, root)
        check_postprocess(probe, parse_other_args(PostprocessParameters, probe.other_args))
    from .select_params import SelectParameters

    if isinstance(params, SelectParameters):
        from .select import check_inputs as check_select_inputs

        check_select_inputs(_absolute_inputs(params, root), root=root)
        return
    if isinstance(params, TomoInputParameters):
        from .extract import check_inputs

        probe = _absolute_inputs(params, root)
        inputs = probe.resolve_inputs()
        if not inputs.particles or not inputs.tomograms:
            raise InputError("the optimisation set names no particle or tomogram set",
                             file=probe.in_optimisation, column="rlnTomoParticlesFile")
        check_inputs(inputs.particles, inputs.tomograms, inputs.trajectories or None, root=root)
