"""Iteration 0 of 3D auto-refine (spec 5.3 item 4 and on): the random half sets, the
low-passed references, the initial noise spectra, τ² and SSNR, the starting sampling.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from processing.fourier.fft import irfft_centered, resample_and_window, rfft_centered, shell_index
from processing.fourier.filters import initial_lowpass
from processing.geometry.sampling import AngularSampling, initial_random_perturbation

from .estep import ParticleState
from .inputs import RefineInputs, random_halves, read_reference, reference_files
from .maximisation import update_current_resolution
from .mstep import initial_ssnr, initial_tau2
from .options import RefineOptions
from .schedule import RefineCounters, SamplingState
from .state import HalfState, RunState

__all__ = ["initial_state", "initial_noise", "on_model_grid", "NOISE_IMAGES"]

#: tilt images used for the initial noise estimate, per optics group (RELION's
#: minimum_nr_particles_sigma2_noise = 10 for STA, which counts images, not particles).
NOISE_IMAGES = 10


def initial_state(inputs: RefineInputs, options: RefineOptions, *, with_reference: bool = True) -> RunState:
    """The state before iteration 1. ``with_reference=False`` skips the references and the
    noise estimate (a continuation replaces them from its files)."""
    o = options
    n_models = o.n_classes if o.classification else 2
    # Classification refines all particles together: one set (0), K classes.
    halves = np.zeros(len(inputs.particle_set), dtype=np.int64) if o.classification else random_halves(inputs)
    if with_reference:
        files = reference_files(o)[:1] if o.classification else reference_files(o)
        refs = [read_reference(inputs, f, trust_ref_size=o.trust_ref_size) for f in files]
        if o.ini_high > 0:
            refs = [initial_lowpass(r, resolution=o.ini_high, pixel_size=inputs.pixel_size) for r in refs]
        refs = [refs[k % len(refs)].copy() for k in range(n_models)]
    else:
        refs = [np.zeros((inputs.ori,) * 3)] * n_models
    sampling = _initial_sampling(o, inputs.pixel_size)
    if o.classification:
        initial_sampling_for_classification(sampling, o)
    counters = RefineCounters(random_perturbation=initial_random_perturbation(max(o.perturb, 0.0)))
    states = _initial_particles(inputs, halves)
    sigma2 = initial_noise(inputs, states, zero_mask=o.zero_mask) if with_reference \
        else np.ones((inputs.n_optics, inputs.n_shells))
    n_dirs = AngularSampling.create(sampling.healpix_order, inputs.symmetry, sampling.psi_step).n_directions
    zeros = np.zeros(inputs.n_shells)
    run_halves = []
    for h, ref in enumerate(refs):
        tau2 = (initial_tau2(ref, tau2_fudge=o.tau2_fudge, data_dim=3 if inputs.is_3d else 2)
                if with_reference else zeros.copy())
        # (each class's expected share of the particles: all of its half set, or 1/K of all)
        n_in_model = len(states) / n_models if o.classification else int(np.sum(halves == h))
        ssnr = initial_ssnr(tau2, sigma2, n_in_model) if with_reference else zeros.copy()
        run_halves.append(HalfState(
            map=ref, fsc=zeros.copy(), ssnr=ssnr, tau2=tau2, sigma2_ref=zeros.copy(),
            completeness=zeros.copy(), sigma2=sigma2.copy(), pdf_direction=np.full(n_dirs, 1.0 / n_dirs),
            scales=np.ones(len(inputs.group_names)), sigma_offset=o.offset_prior_sigma,
            pdf_class=1.0 / n_models if o.classification else 1.0))
    n = len(states)
    state = RunState(
        halves=run_halves, counters=counters, sampling=sampling, particles=states,
        pmax=np.zeros(n), n_significant=np.zeros(n, dtype=np.int64), log_likelihood_particles=np.zeros(n),
    )
    if with_reference:
        # Iteration 0's resolution: --ini_high, else where the initial SSNR drops below 1.
        update_current_resolution(inputs, o, state, cc=o.ini_high > 0)
    return state


def initial_sampling_for_classification(sampling: SamplingState, options: RefineOptions) -> None:
    """``--sigma_ang``: local searches around each particle's angles, with that prior width on
    all three angles (``--sigma_tilt`` keeps its own width for the tilt)."""
    if options.sigma_ang > 0:
        sampling.local_search = True
        sampling.sigma_rot = sampling.sigma_psi = options.sigma_ang
        sampling.sigma_tilt = options.sigma_tilt if options.sigma_tilt > 0 else options.sigma_ang


def _initial_sampling(o: RefineOptions, pixel_size: float) -> SamplingState:
    """The first iteration's angular and translational sampling (offsets in Å), and the
    orientation priors when the search starts local (or ``--sigma_tilt``)."""
    sampling = SamplingState(
        healpix_order=o.healpix_order,
        psi_step=o.psi_step if o.psi_step > 0 else 360.0 / (6 * 2 ** o.healpix_order),
        offset_range=o.offset_range * pixel_size, offset_step=o.offset_step * pixel_size,
        oversampling=o.oversampling, healpix_order_original=o.healpix_order,
    )
    sampling.psi_step_original = sampling.psi_step
    sampling.offset_range_original = sampling.offset_range
    sampling.offset_step_original = sampling.offset_step
    if o.sigma_tilt > 0:
        sampling.sigma_tilt = o.sigma_tilt
    if o.auto_refine and o.healpix_order >= o.auto_local_healpix_order:
        sampling.local_search = True
        sampling.sigma_rot = sampling.sigma_tilt = sampling.sigma_psi = 2.0 * sampling.angular_step()
    return sampling


def _initial_particles(inputs: RefineInputs, halves: NDArray[np.int64]) -> list[ParticleState]:
    """Every particle's pose, priors, half set, tomogram and optics group from the input file."""
    ps = inputs.particle_set
    angles = ps.angles()
    origins = ps.origins()
    priors = np.full((len(ps), 3), np.nan)
    for k, getter in enumerate((ps.rot_prior, ps.tilt_prior, ps.psi_prior)):
        values = getter()
        if values is not None:
            priors[:, k] = np.where(np.abs(values - 999.0) < 1e-6, np.nan, values)
    classes = (ps.particles["rlnClassNumber"].astype(int).to_numpy() if "rlnClassNumber" in ps.particles.columns
               else np.zeros(len(ps), dtype=int))
    origin_prior = np.zeros((len(ps), 3))
    for k, label in enumerate(("rlnOriginXPriorAngst", "rlnOriginYPriorAngst", "rlnOriginZPriorAngst")):
        if label in ps.particles.columns:
            origin_prior[:, k] = ps.particles[label].astype(float).to_numpy()
    return [ParticleState(angles=angles[i].copy(), origin=origins[i].copy(), prior_angles=priors[i],
                          origin_prior=origin_prior[i], half=int(halves[i]), group=int(inputs.groups[i]),
                          optics=int(inputs.optics_index[i]), class_number=int(classes[i]))
            for i in range(len(ps))]


def initial_noise(inputs: RefineInputs, states: list[ParticleState], *, zero_mask: bool) -> NDArray[np.float64]:
    """σ² per optics group and shell (spec 5.3 item 4, RELION's
    calculateSumOfPowerSpectraAndAverageImage): particles in half-set order (half 1 first),
    each particle's tilt images in turn, until an optics group has 10 *images*
    (``minimum_nr_particles_sigma2_noise`` counts images); every image soft-masked when
    ``zero_mask``. σ² = ⟨per-shell mean |F|²⟩/2 − (per-shell mean |F̄|² of the average
    image)/2, negative shells replaced by a positive neighbour.

    Returns
    -------
    ``(n_optics, n_shells)`` float64.
    """
    n_shells, n_optics = inputs.n_shells, inputs.n_optics
    shells = shell_index(inputs.ori, ndim=3 if inputs.is_3d else 2).ravel()
    inside = shells < n_shells
    counts = np.bincount(shells[inside], minlength=n_shells).astype(np.float64)
    spectra = np.zeros((n_optics, n_shells))
    images = np.zeros(n_optics)
    mean_image = None
    order = sorted(range(len(states)), key=lambda i: states[i].half)
    for i in order:
        g = states[i].optics
        if images[g] >= NOISE_IMAGES:
            continue
        X = inputs.store.spectrum_transforms(i, masked=zero_mask)
        X = on_model_grid(inputs, X, g).reshape(X.shape[0], -1)
        power = np.abs(X[:, inside]) ** 2
        spectra[g] += np.bincount(shells[inside], power.sum(axis=0), minlength=n_shells) / np.maximum(counts, 1)
        images[g] += X.shape[0]
        total = X.sum(axis=0)
        mean_image = total if mean_image is None else mean_image + total
        if np.all(images >= NOISE_IMAGES):
            break
    avg = mean_image / max(images.sum(), 1)
    avg_power = np.bincount(shells[inside], np.abs(avg[inside]) ** 2, minlength=n_shells) / np.maximum(counts, 1)
    sigma2 = np.zeros((n_optics, n_shells))
    for g in range(n_optics):
        if images[g] > 0:
            sigma2[g] = _replace_negative(spectra[g] / (2.0 * images[g]) - avg_power / 2.0)
    return sigma2


def on_model_grid(inputs: RefineInputs, transforms: NDArray, optics: int) -> NDArray:
    """Half transforms of an optics group's images on the model's grid: for a group with
    another box or pixel size, each image resampled to the model's pixel size and windowed
    to its box in real space (relion_refine's initial noise estimate does so)."""
    if inputs.optics_on_model_grid[optics]:
        return transforms
    box, px = inputs.optics_boxes[optics], inputs.optics_pixel_sizes[optics]
    ndim = 3 if inputs.is_3d else 2
    images = irfft_centered(transforms.astype(np.complex128), size=box, ndim=ndim)
    size = box
    if abs(px - inputs.pixel_size) > 1e-4:
        size = int(math.floor(box * (px / inputs.pixel_size) + 0.5))
        size += size % 2
    return rfft_centered(resample_and_window(images, new_size=size, box=inputs.ori, ndim=ndim), ndim=ndim)


def _replace_negative(sigma2: NDArray[np.float64]) -> NDArray[np.float64]:
    """Negative values replaced by the previous positive value, else the next positive one."""
    out = sigma2.copy()
    for n in range(out.size):
        if out[n] < 0:
            if n > 0 and out[n - 1] > 0:
                out[n] = out[n - 1]
            else:
                later = out[n + 1:][out[n + 1:] > 0]
                if later.size == 0:
                    raise ValueError("no positive value in the initial noise spectrum")
                out[n] = later[0]
    return out
