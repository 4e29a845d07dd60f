"""Files of a 3D auto-refine or 3D classification run, and continuation from them (spec 1.7, 5.14).

Per iteration N: ``run_itNNN_half{1,2}_model.star``, ``run_itNNN_half{1,2}_class001.mrc``,
``run_itNNN_optimiser.star``, ``_sampling.star``, ``_data.star``, ``_optimisation_set.star``;
at convergence the same without ``_itNNN`` plus ``run_class001.mrc`` and the unfiltered half
maps ``run_half{1,2}_class001_unfil.mrc``. Every file is written atomically; the optimiser
file is written last, so an iteration whose optimiser.star exists is complete.

3D classification writes, per iteration N (0 included), ``run_itNNN_classKKK.mrc`` for every
class, one ``run_itNNN_model.star`` with all classes, and the same optimiser, sampling, data
and optimisation-set files; there is no final unnumbered set.
"""
from __future__ import annotations

from pathlib import Path
import numpy as np
from numpy.typing import NDArray

from processing.errors import InputError
from processing.geometry.sampling import AngularSampling
from processing.io.mrc import read_mrc, write_mrc
from processing.io.optimisation_set import OptimisationSet
from processing.io.particles import ParticleSet

from processing.io.paths import resolve_path
from processing.io.refine_star import (
    ClassModel, ModelStarContents, OptimiserStarContents, SamplingStarContents, iteration_root, read_data_star,
    refine_optimisation_set,
)

from .classify import estimated_resolution_shell, total_fourier_coverage
from .initial import initial_state
from .inputs import RefineInputs
from .options import RefineOptions
from .schedule import RefineCounters, SamplingState
from .state import HalfState, RunState

__all__ = ["write_iteration_files", "read_continuation"]


def _model(inputs: RefineInputs, o: RefineOptions, state: RunState, half: int, map_file: str) -> ModelStarContents:
    h = state.halves[half]
    c, s = state.counters, state.sampling
    mode = 1 if (s.sigma_rot > 0 or s.sigma_tilt > 0 or s.sigma_psi > 0) else 0
    members = [p.half == half for p in state.particles] if not state.joined else slice(None)
    counts = np.bincount(inputs.groups[members], minlength=len(inputs.group_names))
    return ModelStarContents(
        ori_size=inputs.ori, pixel_size=inputs.pixel_size,
        current_resolution=1.0 / c.current_resolution if c.current_resolution > 0 else 999.0,
        current_image_size=c.current_size or inputs.ori, reference_image=map_file,
        gold_standard_fsc=h.fsc, ssnr_map=h.ssnr, fourier_completeness=h.completeness,
        reference_sigma2=h.sigma2_ref, reference_tau2=h.tau2, sigma2_noise=list(h.sigma2),
        group_names=list(inputs.group_names), group_nr_particles=counts,
        group_scale_correction=h.scales, orientation_distribution=h.pdf_direction,
        data_dim=3 if inputs.is_3d else 2, padding_factor=float(o.pad),
        tau2_fudge_factor=o.tau2_fudge, sigma_offsets_angst=h.sigma_offset,
        orientational_prior_mode=mode, sigma_prior_rot_angle=s.sigma_rot, sigma_prior_tilt_angle=s.sigma_tilt,
        sigma_prior_psi_angle=s.sigma_psi, log_likelihood=h.log_likelihood, average_pmax=h.ave_pmax,
        # RELION's class accuracies stay 0 until estimated (its optimiser.star says 999).
        accuracy_rotations=c.acc_rot if c.acc_rot < 999.0 else 0.0,
        accuracy_translations_angst=c.acc_trans if c.acc_trans < 999.0 else 0.0,
        # calculateTotalFourierCoverage: from the data-versus-prior ratio, not the resolution
        # the iteration worked at (RELION's demo iteration 2: 29.45 Å against 21.60 Å).
        estimated_resolution=_estimated_resolution(inputs, h.ssnr),
        overall_fourier_completeness=total_fourier_coverage(h.ssnr, h.completeness) if h.completeness.size else 0.0,
    )


def _estimated_resolution(inputs: RefineInputs, ssnr: NDArray[np.float64]) -> float:
    """``rlnEstimatedResolution`` (Å): the box over the last shell with a data-versus-prior
    ratio of at least 1 (999 when there is none)."""
    shell = estimated_resolution_shell(ssnr) if ssnr.size else 0
    return inputs.ori * inputs.pixel_size / shell if shell > 0 else 999.0


def _class_model(inputs: RefineInputs, o: RefineOptions, state: RunState, maps: list[str]) -> ModelStarContents:
    """The classification model: class 1 in the main fields, classes 2..K in ``more_classes``;
    every class's estimated resolution and Fourier completeness from its data-versus-prior
    ratio."""
    model = _model(inputs, o, state, 0, maps[0])
    model.group_nr_particles = np.bincount(inputs.groups, minlength=len(inputs.group_names))
    classes = []
    for h, path in zip(state.halves, maps):
        classes.append(ClassModel(
            reference_image=path, ssnr_map=h.ssnr, fourier_completeness=h.completeness,
            reference_sigma2=h.sigma2_ref, reference_tau2=h.tau2, orientation_distribution=h.pdf_direction,
            gold_standard_fsc=np.zeros(inputs.n_shells), class_distribution=h.pdf_class,
            accuracy_rotations=h.acc_rot, accuracy_translations_angst=h.acc_trans,
            estimated_resolution=_estimated_resolution(inputs, h.ssnr),
            overall_fourier_completeness=total_fourier_coverage(h.ssnr, h.completeness),
        ))
    first = classes[0]
    for name in ClassModel.__dataclass_fields__:
        setattr(model, name, getattr(first, name))
    model.nr_classes = len(classes)
    model.more_classes = classes[1:]
    return model


def _particles(inputs: RefineInputs, state: RunState, *, classification: bool = False) -> ParticleSet:
    ps = inputs.particle_set
    table = ps.particles.copy()
    angles = np.array([p.angles for p in state.particles])
    origins = np.array([p.origin for p in state.particles])
    for k, label in enumerate(("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")):
        table[label] = angles[:, k]
    for k, label in enumerate(("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")):
        table[label] = origins[:, k]
    # (0 until the first iteration has assigned a class, as relion_refine writes)
    table["rlnClassNumber"] = np.array([p.class_number for p in state.particles]) if classification else 1
    table["rlnLogLikeliContribution"] = state.log_likelihood_particles
    table["rlnMaxValueProbDistribution"] = state.pmax
    table["rlnNrOfSignificantSamples"] = state.n_significant
    table["rlnNormCorrection"] = 1.0
    table["rlnGroupNumber"] = inputs.groups + 1
    if not classification:
        table["rlnRandomSubset"] = np.array([p.half + 1 for p in state.particles])
    return ParticleSet(table, ps.optics, ps.general, extra_blocks=ps.extra_blocks)


def write_iteration_files(inputs: RefineInputs, o: RefineOptions, state: RunState, iteration: int | None) -> None:
    """Write one iteration's files (``iteration`` None: the converged, final set)."""
    root = iteration_root(o.output_root, iteration)
    c, s = state.counters, state.sampling
    final = iteration is None
    maps = []
    if o.classification:
        maps = [f"{root}_class{k + 1:03d}.mrc" for k in range(len(state.halves))]
        for h, path in zip(state.halves, maps):
            write_mrc(path, h.map.astype(np.float32), inputs.pixel_size)
        _class_model(inputs, o, state, maps).write(f"{root}_model.star")
        _write_common(inputs, o, state, root, [f"{root}_model.star", ""], final=False)
        return
    for h in range(2):
        path = f"{root}_half{h + 1}_class001.mrc"
        if not final:
            write_mrc(path, state.halves[h].map.astype(np.float32), inputs.pixel_size)
        maps.append(path)
    model_files = []
    if final:
        write_mrc(f"{root}_class001.mrc", state.halves[0].map.astype(np.float32), inputs.pixel_size)
        for h, unfil in enumerate(state.unfil):
            write_mrc(f"{root}_half{h + 1}_class001_unfil.mrc", unfil.astype(np.float32), inputs.pixel_size)
        _model(inputs, o, state, 0, f"{root}_class001.mrc").write(f"{root}_model.star")
        model_files = [f"{root}_model.star", ""]
    else:
        for h in range(2):
            _model(inputs, o, state, h, maps[h]).write(f"{root}_half{h + 1}_model.star")
            model_files.append(f"{root}_half{h + 1}_model.star")
    _write_common(inputs, o, state, root, model_files, final=final)


def _write_common(inputs: RefineInputs, o: RefineOptions, state: RunState, root: str, model_files: list[str], *,
                  final: bool) -> None:
    """The data, sampling, optimisation-set and (last) optimiser files of an iteration."""
    c, s = state.counters, state.sampling
    data_file = f"{root}_data.star"
    _particles(inputs, state, classification=o.classification).write(data_file)
    sampling = AngularSampling.create(s.healpix_order, inputs.symmetry, s.psi_step)
    SamplingStarContents(
        healpix_order=s.healpix_order, psi_step=s.psi_step, offset_range=s.offset_range,
        offset_step=s.offset_step, symmetry=inputs.symmetry, directions_rot=sampling.rot,
        directions_tilt=sampling.tilt, perturb_instance=c.random_perturbation, perturb_factor=o.perturb,
        healpix_order_original=s.healpix_order_original, psi_step_original=s.psi_step_original,
        offset_range_original=s.offset_range_original, offset_step_original=s.offset_step_original,
    ).write(f"{root}_sampling.star")
    base = OptimisationSet(particles=inputs.particles_file, tomograms=inputs.tomograms_file,
                           trajectories=inputs.trajectories_file)
    refine_optimisation_set(
        base, data_file,
        half1_map=f"{root}_half1_class001_unfil.mrc" if final else None,
        half2_map=f"{root}_half2_class001_unfil.mrc" if final else None,
        mask=o.solvent_mask,
    ).write(f"{root}_optimisation_set.star")
    OptimiserStarContents(
        output_root=o.output_root, model_star_file=model_files[0], model_star_file2=model_files[1],
        data_star_file=data_file, sampling_star_file=f"{root}_sampling.star",
        current_iteration=-1 if final else c.iteration, tomograms_file=inputs.tomograms_file,
        trajectories_file=inputs.trajectories_file or "",
        number_of_iterations=o.n_iterations if o.classification else o.auto_iter_max,
        do_split_random_halves=o.split_random_halves, join_halves_until_resolution=o.low_resol_join_halves,
        do_auto_refine=o.auto_refine, do_auto_sampling=o.auto_refine, tau2_fudge_arg=o.tau2_fudge,
        highres_limit_expectation=o.strict_highres_exp, do_fast_subsets=o.fast_subsets,
        do_skip_align=o.skip_align and o.classification,
        adaptive_oversample_order=s.oversampling, random_seed=inputs.seed,
        particle_diameter=inputs.particle_diameter, do_zero_mask=o.zero_mask,
        do_solvent_flattening=o.flatten_solvent, do_solvent_fsc_correction=o.solvent_correct_fsc,
        solvent_mask_name=o.solvent_mask or "None", increment_image_size=c.incr_size,
        auto_local_healpix_order=o.auto_local_healpix_order,
        nr_iter_without_resolution_gain=c.nr_iter_wo_resol_gain, best_resolution_thus_far=c.best_resolution,
        nr_iter_without_changing_assignments=c.nr_iter_wo_large_changes,
        overall_accuracy_rotations=c.acc_rot, overall_accuracy_translations_angst=c.acc_trans,
        changes_optimal_orientations=c.current_changes_orientations,
        changes_optimal_offsets=c.current_changes_offsets, changes_optimal_classes=c.current_changes_classes,
        smallest_changes_orientations=c.smallest_changes_orientations,
        smallest_changes_offsets=c.smallest_changes_offsets,
        smallest_changes_classes=int(min(c.smallest_changes_classes, 9999999)),
        has_converged=c.has_converged, has_high_fsc_at_resol_limit=c.has_high_fsc_at_limit,
        do_correct_norm=o.norm and False, do_correct_scale=o.scale, do_correct_ctf=o.ctf,
        do_ignore_ctf_until_first_peak=o.ctf_intact_first_peak, max_number_of_pooled_particles=o.pool,
        command_line=tuple(o.command_line),
    ).write(f"{root}_optimiser.star")


def read_continuation(inputs: RefineInputs, o: RefineOptions, optimiser_file: str) -> tuple[RunState, int]:
    """Restore the run's state from ``run_itNNN_optimiser.star``; returns (state, next iteration)."""
    path = Path(optimiser_file)
    if not path.exists():
        raise InputError("optimiser file to continue from does not exist", file=path)
    opt = OptimiserStarContents.read(path)
    classification = not opt.do_auto_refine
    if not opt.model_star_file2 and not classification:
        raise InputError("this optimiser file was written after the halves were joined (converged run); "
                         "it cannot be continued", file=path, table="optimiser_general",
                         column="rlnModelStarFile2")
    def near(name: str, referrer: Path = path) -> Path:
        return resolve_path(name, referrer=referrer)

    if classification:
        model = ModelStarContents.read(near(opt.model_star_file))
        models = [model] * model.nr_classes
        names = [opt.model_star_file] * model.nr_classes
        classes = model.classes()
    else:
        models = [ModelStarContents.read(near(opt.model_star_file)), ModelStarContents.read(near(opt.model_star_file2))]
        names = [opt.model_star_file, opt.model_star_file2]
        classes = [m.classes()[0] for m in models]
    samp = SamplingStarContents.read(near(opt.sampling_star_file))
    data = read_data_star(near(opt.data_star_file))
    if len(data) != len(inputs.particle_set):
        raise InputError(f"data file has {len(data)} particles, the input {len(inputs.particle_set)}",
                         file=opt.data_star_file, table="particles")
    halves = []
    for m, name, k in zip(models, names, classes):
        image = near(k.reference_image, near(name))
        sigma2 = np.array([_extend(np.asarray(s2, dtype=np.float64), inputs.n_shells) for s2 in m.sigma2_noise])
        if sigma2.shape[0] != inputs.n_optics:
            raise InputError(f"model has {sigma2.shape[0]} optics groups, the particles {inputs.n_optics}",
                             file=near(name), table="model_optics_group_1", column="rlnSigma2Noise")
        fsc = k.gold_standard_fsc if k.gold_standard_fsc is not None else np.zeros(inputs.n_shells)
        halves.append(HalfState(map=np.array(read_mrc(image).data, dtype=np.float64),
                                fsc=fsc, ssnr=k.ssnr_map, tau2=k.reference_tau2,
                                sigma2_ref=k.reference_sigma2, completeness=k.fourier_completeness,
                                sigma2=sigma2, pdf_direction=np.array(k.orientation_distribution, dtype=np.float64),
                                scales=np.array(m.group_scale_correction, dtype=np.float64),
                                sigma_offset=m.sigma_offsets_angst, ave_pmax=m.average_pmax,
                                log_likelihood=m.log_likelihood,
                                pdf_class=k.class_distribution if classification else 1.0))
    m0 = models[0]
    local = samp.healpix_order >= o.auto_local_healpix_order if not classification else (
        m0.orientational_prior_mode != 0 and m0.sigma_prior_rot_angle > 0)
    sampling = SamplingState(
        healpix_order=samp.healpix_order, psi_step=samp.psi_step, offset_range=samp.offset_range,
        offset_step=samp.offset_step, oversampling=opt.adaptive_oversample_order, local_search=local,
        sigma_rot=m0.sigma_prior_rot_angle, sigma_tilt=m0.sigma_prior_tilt_angle,
        sigma_psi=m0.sigma_prior_psi_angle,
        healpix_order_original=samp.healpix_order_original or samp.healpix_order,
        psi_step_original=samp.psi_step_original or samp.psi_step,
        offset_range_original=samp.offset_range_original or samp.offset_range,
        offset_step_original=samp.offset_step_original or samp.offset_step,
    )
    counters = RefineCounters(
        iteration=opt.current_iteration,
        current_resolution=1.0 / m0.current_resolution if m0.current_resolution > 0 else 0.0,
        best_resolution=opt.best_resolution_thus_far,
        nr_iter_wo_resol_gain=opt.nr_iter_without_resolution_gain,
        nr_iter_wo_large_changes=opt.nr_iter_without_changing_assignments,
        smallest_changes_orientations=opt.smallest_changes_orientations,
        smallest_changes_offsets=opt.smallest_changes_offsets,
        current_changes_orientations=opt.changes_optimal_orientations,
        current_changes_offsets=opt.changes_optimal_offsets,
        has_converged=opt.has_converged, has_high_fsc_at_limit=opt.has_high_fsc_at_resol_limit,
        incr_size=opt.increment_image_size, acc_rot=opt.overall_accuracy_rotations,
        acc_trans=opt.overall_accuracy_translations_angst, ave_pmax=m0.average_pmax,
        current_size=m0.current_image_size, random_perturbation=samp.perturb_instance,
        current_changes_classes=opt.changes_optimal_classes,
        smallest_changes_classes=float(opt.smallest_changes_classes),
    )
    state0 = initial_state(inputs, o, with_reference=False)
    angles = data.angles()
    origins = data.origins()
    subsets = data.random_subset()
    classes = (data.particles["rlnClassNumber"].astype(int).to_numpy()
               if "rlnClassNumber" in data.particles.columns else None)
    for i, p in enumerate(state0.particles):
        p.angles = angles[i].copy()
        p.origin = origins[i].copy()
        if subsets is not None and not classification:
            p.half = int(subsets[i]) - 1
        if classes is not None:
            p.class_number = int(classes[i])
    table = data.particles

    def column(label: str, default: float) -> np.ndarray:
        if label not in table.columns:
            return np.full(len(table), default)
        return np.array(table[label].astype(float).to_numpy(), dtype=np.float64)  # writable copy

    state = RunState(
        halves=halves, counters=counters, sampling=sampling,
        particles=state0.particles, pmax=column("rlnMaxValueProbDistribution", 0.0),
        n_significant=column("rlnNrOfSignificantSamples", 0).astype(np.int64),
        log_likelihood_particles=column("rlnLogLikeliContribution", 0.0),
    )
    return state, opt.current_iteration + 1


def _extend(values: np.ndarray, n: int) -> np.ndarray:
    """A per-shell array padded to ``n`` shells with its last value."""
    if values.size >= n:
        return values[:n]
    return np.concatenate([values, np.full(n - values.size, values[-1])])
