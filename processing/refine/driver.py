"""3D auto-refine driver: initialisation, the iteration loop, MPI distribution, outputs,
continuation and abort (spec 5.3, 5.4, 5.9, 5.13, 5.14).

MPI layout (``mpiexec -n N``, N odd >= 3): rank 0 leads (metadata, M-step, files) and does no
image work; odd ranks refine half 1, even ranks half 2, each sharing its half's particles.
With one process, that process refines both halves itself.
"""
from __future__ import annotations

import json
import math
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from processing.errors import InputError
from processing.fourier.fft import irfft_centered, resample_and_window, rfft_centered, shell_index
from processing.fourier.filters import initial_lowpass
from processing.fourier.projector import fourier_grid_from_volume
from processing.geometry.euler import euler_to_matrix
from processing.geometry.sampling import (
    AngularSampling, initial_random_perturbation, next_random_perturbation, translation_grid,
)
from processing.glibc_random import GlibcRandom, Mt19937, libstdcxx_shuffle
from processing.geometry.symmetry import normalise_symmetry_name, symmetry_operators
from processing.io.atomic import atomic_write
from processing.io.mrc import read_mrc
from processing.io.optimisation_set import OptimisationSet
from processing.io.particles import ParticleSet
from processing.io.tomograms import TomogramSet
from processing.abort import check_abort
from processing.parallel import Communicator, get_communicator, particle_threads

from . import mstep
from .mstep import initial_ssnr, initial_tau2
from .accuracy import expected_accuracy
from .distributed import combine_through_disc, sum_over_ranks, wait_for_workers, write_rank_progress
from .estep import EStepContext, HalfAccumulator, ParticleResult, ParticleState, Reference, expect_particle
from .options import RefineOptions
from .frequencies import pixels_per_shell
from .particles import ParticleStore, images_are_3d
from .state import HalfState, RunState
from .schedule import (
    RefineCounters, SamplingState, has_converged, hidden_variable_changes, image_sizes, optics_image_sizes,
    update_angular_sampling, update_change_counters,
)

__all__ = ["run_refine", "RefineRun"]

#: tilt images used for the initial noise estimate, per optics group (RELION's
#: minimum_nr_particles_sigma2_noise = 10 for STA, which counts images, not particles).
NOISE_IMAGES = 10
#: particles used for the accuracy estimate (RELION: 100).
ACCURACY_PARTICLES = 100


class RefineRun:
    """One 3D auto-refine run (see module docstring)."""

    def __init__(self, options: RefineOptions, *, comm: Communicator | None = None, log=print) -> None:
        self.options = options
        self.comm = comm or Communicator(None)
        self.log = log if self.comm.is_leader else (lambda *a, **k: None)
        self.output_root = Path(options.output_root)
        self.job_dir = self.output_root.parent
        self.symmetry = normalise_symmetry_name(options.symmetry)
        self.operators = symmetry_operators(self.symmetry)
        seed = options.random_seed if options.random_seed >= 0 else int(time.time())
        self.seed = self.comm.bcast(seed)
        self.timings: dict[str, float] = {}
        self.iteration_timings: list[dict[str, float]] = []
        #: (HEALPix order, offset step Å) the change counters are judged against on --continue
        self._leader_sampling: tuple[int, float] | None = None
        #: relion_refine's particle visiting order (see _visiting_order), made in the first iteration
        self._order: list[int] | None = None
        self.started = time.time()

    # ---- inputs -------------------------------------------------------------------------

    def _inputs(self) -> tuple[str, str, str | None]:
        o = self.options
        particles, tomograms, trajectories = o.particles, o.tomograms, o.trajectories
        if o.optimisation_set:
            opt = OptimisationSet.read(o.optimisation_set)
            particles = particles or opt.particles
            tomograms = tomograms or opt.tomograms
            trajectories = trajectories or opt.trajectories
        if not particles:
            raise InputError("no particles: give --ios (optimisation set) or --i", column="--ios")
        if not tomograms:
            raise InputError("no tomogram set: give --ios or --tomograms", column="--tomograms")
        return str(particles), str(tomograms), (str(trajectories) if trajectories else None)

    def load_data(self, particles_file: str, tomograms_file: str) -> None:
        o = self.options
        self.particles_file, self.tomograms_file = particles_file, tomograms_file
        self.tomograms = TomogramSet.read(tomograms_file)
        self.particle_set = ParticleSet.read(particles_file, self.tomograms)
        ps = self.particle_set
        optics = ps.optics
        for label in ("rlnImageSize", "rlnImagePixelSize"):
            if optics is None or label not in optics.columns:
                raise InputError("particles were not extracted (no %s in the optics table): run Extract "
                                 "subtomos first" % label, file=particles_file, table="optics", column=label)
        # The model's box and pixel size are the first optics group's (RELION's MlModel); other
        # groups may differ: their images are mapped onto the model's Fourier grid.
        self.ori = int(optics["rlnImageSize"].iloc[0])
        self.pixel_size = float(optics["rlnImagePixelSize"].iloc[0])
        numbers = [int(g) for g in optics["rlnOpticsGroup"]]
        self.optics_boxes = [int(b) for b in optics["rlnImageSize"]]
        self.optics_pixel_sizes = [float(px) for px in optics["rlnImagePixelSize"]]
        for row, (box, px) in enumerate(zip(self.optics_boxes, self.optics_pixel_sizes)):
            if box < 2 or box % 2 or not px > 0:
                raise InputError(f"optics group {numbers[row]}: image size {box} must be even and the pixel size "
                                 f"{px} positive", file=particles_file, table="optics", column="rlnImageSize",
                                 row=row + 1)
        self.optics_on_model_grid = [box == self.ori and abs(px - self.pixel_size) <= 1e-6 * self.pixel_size
                                     for box, px in zip(self.optics_boxes, self.optics_pixel_sizes)]
        self.optics_index = np.array([numbers.index(int(g)) for g in ps.optics_groups()], dtype=np.int64)
        self.n_optics = len(numbers)
        self.is_3d = images_are_3d(ps)
        self.particle_diameter = o.particle_diameter if o.particle_diameter > 0 else (self.ori - 5) * self.pixel_size
        self.mask_radius_px = self.particle_diameter / (2.0 * self.pixel_size)
        self.store = ParticleStore(
            ps, self.tomograms, box=np.array(self.optics_boxes)[self.optics_index],
            pixel_size=np.array(self.optics_pixel_sizes)[self.optics_index], mask_radius=self.particle_diameter / 2.0,
            zero_mask=o.zero_mask, do_ctf=o.ctf, intact_first_peak=o.ctf_intact_first_peak,
            preread=o.preread_images, scratch_dir=o.scratch_dir if o.scratch_dir else None, seed=self.seed,
        )
        tomo_names = ps.tomo_names()
        self.group_names = sorted(set(tomo_names.tolist()), key=self.tomograms.names.index)
        self.groups = np.array([self.group_names.index(t) for t in tomo_names])
        self.n_shells = self.ori // 2 + 1
        self.npix_per_shell = pixels_per_shell(self.ori, 3 if self.is_3d else 2)

    def _random_halves(self) -> NDArray[np.int64]:
        subsets = self.particle_set.random_subset()
        n = len(self.particle_set)
        if subsets is None or np.all(subsets == 0):
            # relion_refine's split: srand(random_seed), then rand() % 2 per particle in file order.
            generator = GlibcRandom(self.seed)
            return np.array([generator.rand() % 2 for _ in range(n)], dtype=np.int64)
        if not np.isin(subsets, (1, 2)).all():
            bad = int(np.flatnonzero(~np.isin(subsets, (1, 2)))[0])
            raise InputError("rlnRandomSubset must be 1 or 2 for every particle (or absent for all)",
                             file=self.particles_file, table="particles", column="rlnRandomSubset", row=bad + 1)
        return subsets.astype(np.int64) - 1

    def reference_files(self) -> list[str]:
        """The reference of each half set: a file whose name contains ``half1`` (``half2``) is
        the first (second) half's, and the other half reads the name with the two swapped, as
        relion_refine does (``FileName::getHalf``: only the base name is changed)."""
        o = self.options
        if not o.reference:
            raise InputError("a reference map is required (--ref)", column="--ref")
        path = Path(o.reference)
        files = []
        for this, other in (("half2", "half1"), ("half1", "half2")):
            name = path.name.replace(this, other) if this in path.name else path.name
            files.append(str(path.with_name(name)) if path.name != name else o.reference)
        for f in files:
            if not Path(f).is_file():
                raise InputError("reference map not found" + (
                    f" (the other half set's map, named after {o.reference})" if f != o.reference else ""),
                    file=f, column="--ref")
        return files

    def _read_reference(self, path: str) -> NDArray[np.float64]:
        o = self.options
        ref = read_mrc(path)
        vol = np.asarray(ref.data, dtype=np.float64)
        if vol.ndim != 3 or len(set(vol.shape)) != 1:
            raise InputError(f"reference must be a cubic 3D map, got shape {vol.shape}", file=path)
        px = float(ref.pixel_size) if ref.pixel_size else self.pixel_size
        if vol.shape[0] == self.ori and abs(px - self.pixel_size) < 1e-3 * self.pixel_size:
            return vol
        if not o.trust_ref_size:
            raise InputError(
                f"reference box {vol.shape[0]} at {px:.3f} Å/px differs from the particles' "
                f"{self.ori} at {self.pixel_size:.3f} Å/px; set 'Resize reference if needed?' (--trust_ref_size)",
                file=path)
        return resize_reference(vol, px, self.ori, self.pixel_size)

    # ---- initialisation -----------------------------------------------------------------

    def initialise(self, *, with_reference: bool = True) -> RunState:
        o = self.options
        halves = self._random_halves()
        if with_reference:
            refs = [self._read_reference(f) for f in self.reference_files()]
            if o.ini_high > 0:
                refs = [initial_lowpass(r, resolution=o.ini_high, pixel_size=self.pixel_size) for r in refs]
        else:
            refs = [np.zeros((self.ori,) * 3)] * 2
        sampling = SamplingState(
            healpix_order=o.healpix_order,
            psi_step=o.psi_step if o.psi_step > 0 else 360.0 / (6 * 2 ** o.healpix_order),
            offset_range=o.offset_range * self.pixel_size, offset_step=o.offset_step * self.pixel_size,
            oversampling=o.oversampling, healpix_order_original=o.healpix_order,
        )
        sampling.psi_step_original = sampling.psi_step
        sampling.offset_range_original = sampling.offset_range
        sampling.offset_step_original = sampling.offset_step
        if o.sigma_tilt > 0:
            sampling.sigma_tilt = o.sigma_tilt
        if o.healpix_order >= o.auto_local_healpix_order:
            sampling.local_search = True
            sampling.sigma_rot = sampling.sigma_tilt = sampling.sigma_psi = 2.0 * sampling.angular_step()
        counters = RefineCounters(random_perturbation=initial_random_perturbation(max(o.perturb, 0.0)))
        ps = self.particle_set
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
        states = [ParticleState(angles=angles[i].copy(), origin=origins[i].copy(), prior_angles=priors[i],
                                origin_prior=origin_prior[i], half=int(halves[i]), group=int(self.groups[i]),
                                optics=int(self.optics_index[i]), class_number=int(classes[i]))
                  for i in range(len(ps))]
        sigma2 = self._initial_noise(states) if with_reference else np.ones((self.n_optics, self.n_shells))
        n_dirs = AngularSampling.create(sampling.healpix_order, self.symmetry, sampling.psi_step).n_directions
        zeros = np.zeros(self.n_shells)
        run_halves = []
        for h, ref in enumerate(refs):
            tau2 = (initial_tau2(ref, tau2_fudge=o.tau2_fudge, data_dim=3 if self.is_3d else 2)
                    if with_reference else zeros.copy())
            ssnr = initial_ssnr(tau2, sigma2, int(np.sum(halves == h))) if with_reference else zeros.copy()
            run_halves.append(HalfState(
                map=ref, fsc=zeros.copy(), ssnr=ssnr, tau2=tau2, sigma2_ref=zeros.copy(),
                completeness=zeros.copy(), sigma2=sigma2.copy(), pdf_direction=np.full(n_dirs, 1.0 / n_dirs),
                scales=np.ones(len(self.group_names)), sigma_offset=o.offset_prior_sigma))
        state = RunState(
            halves=run_halves, counters=counters, sampling=sampling, particles=states,
            pmax=np.zeros(len(ps)), n_significant=np.zeros(len(ps), dtype=np.int64),
            log_likelihood_particles=np.zeros(len(ps)),
        )
        if with_reference:
            # Iteration 0's resolution: --ini_high, else where the initial SSNR drops below 1.
            self._update_current_resolution(state, cc=o.ini_high > 0)
        return state

    def _initial_noise(self, states: list[ParticleState]) -> NDArray[np.float64]:
        """σ² per optics group and shell (spec 5.3 item 4, RELION's
        calculateSumOfPowerSpectraAndAverageImage): particles in half-set order (half 1 first),
        each particle's tilt images in turn, until an optics group has 10 *images*
        (``minimum_nr_particles_sigma2_noise`` counts images); every image soft-masked when
        ``--zero_mask``. σ² = ⟨per-shell mean |F|²⟩/2 − (per-shell mean |F̄|² of the average
        image)/2, negative shells replaced by a positive neighbour.

        Returns
        -------
        ``(n_optics, n_shells)`` float64.
        """
        ndim = 3 if self.is_3d else 2
        shells = shell_index(self.ori, ndim=ndim).ravel()
        inside = shells < self.n_shells
        counts = np.bincount(shells[inside], minlength=self.n_shells).astype(np.float64)
        spectra = np.zeros((self.n_optics, self.n_shells))
        images = np.zeros(self.n_optics)
        mean_image = None
        order = sorted(range(len(states)), key=lambda i: states[i].half)
        for i in order:
            g = states[i].optics
            if images[g] >= NOISE_IMAGES:
                continue
            X = self.store.spectrum_transforms(i, masked=self.options.zero_mask)
            X = self._on_model_grid(X, g).reshape(X.shape[0], -1)
            power = np.abs(X[:, inside]) ** 2
            spectra[g] += np.bincount(shells[inside], power.sum(axis=0), minlength=self.n_shells) / \
                np.maximum(counts, 1)
            images[g] += X.shape[0]
            total = X.sum(axis=0)
            mean_image = total if mean_image is None else mean_image + total
            if np.all(images >= NOISE_IMAGES):
                break
        avg = mean_image / max(images.sum(), 1)
        avg_power = np.bincount(shells[inside], np.abs(avg[inside]) ** 2, minlength=self.n_shells) / \
            np.maximum(counts, 1)
        sigma2 = np.zeros((self.n_optics, self.n_shells))
        for g in range(self.n_optics):
            if images[g] > 0:
                sigma2[g] = _replace_negative(spectra[g] / (2.0 * images[g]) - avg_power / 2.0)
        return sigma2

    def _on_model_grid(self, transforms: NDArray, optics: int) -> NDArray:
        """Half transforms of an optics group's images on the model's grid: for a group with
        another box or pixel size, each image resampled to the model's pixel size and windowed
        to its box in real space (relion_refine's initial noise estimate does so)."""
        if self.optics_on_model_grid[optics]:
            return transforms
        box, px = self.optics_boxes[optics], self.optics_pixel_sizes[optics]
        ndim = 3 if self.is_3d else 2
        images = irfft_centered(transforms.astype(np.complex128), size=box, ndim=ndim)
        size = box
        if abs(px - self.pixel_size) > 1e-4:
            size = int(math.floor(box * (px / self.pixel_size) + 0.5))
            size += size % 2
        return rfft_centered(resample_and_window(images, new_size=size, box=self.ori, ndim=ndim), ndim=ndim)

    # ---- iteration ----------------------------------------------------------------------

    def _my_particles(self, state: RunState) -> list[int]:
        """Particle indices this rank works on."""
        n = len(state.particles)
        if self.comm.size == 1:
            return list(range(n))
        if self.comm.is_leader:
            return []
        half = (self.comm.rank - 1) % 2
        workers = [r for r in range(1, self.comm.size) if (r - 1) % 2 == half]
        mine = workers.index(self.comm.rank)
        of_half = [i for i in range(n) if state.particles[i].half == half]
        return of_half[mine::len(workers)]

    def _context(self, state: RunState, *, cc: bool, final: bool) -> EStepContext:
        s, c = state.sampling, state.counters
        sampling = AngularSampling.create(s.healpix_order, self.symmetry, s.psi_step)
        for half in state.halves:
            if half.pdf_direction.size != sampling.n_directions:
                half.pdf_direction = np.full(sampling.n_directions, 1.0 / sampling.n_directions)
        refs = []
        for half in state.halves:
            grid, cidx, _ = fourier_grid_from_volume(half.map, padding_factor=self.options.pad,
                                                     dtype=np.complex64, data_dim=3 if self.is_3d else 2)
            refs.append(Reference(grid=grid, c=cidx, pad=float(self.options.pad)))
        step_px = s.offset_step / self.pixel_size
        return EStepContext(
            ori=self.ori, pixel_size=self.pixel_size, references=refs,
            sigma2=np.stack([h.sigma2 for h in state.halves]),
            coarse_size=c.coarse_size, current_size=c.current_size, sampling=sampling,
            translations=translation_grid(s.offset_range / self.pixel_size, step_px, dim=3),
            offset_step=step_px, perturbation=c.random_perturbation,
            sigma_rot=s.sigma_rot, sigma_tilt=s.sigma_tilt, sigma_psi=s.sigma_psi,
            local_search=s.local_search,
            pdf_direction=None if (s.sigma_rot > 0 or s.sigma_tilt > 0 or s.sigma_psi > 0)
            else np.stack([h.pdf_direction for h in state.halves]),
            sigma_offset=np.array([h.sigma_offset for h in state.halves]),
            scales=np.stack([h.scales for h in state.halves]) if self.options.scale else None,
            # Scale corrections use the shells where half 1's SSNR exceeds 3 (RELION broadcasts
            # rank 1's data_vs_prior to every rank).
            scale_ssnr=state.halves[0].ssnr,
            firstiter_cc=cc, oversampling=s.oversampling, is_3d=self.is_3d,
            optics_grids=self._optics_grids(state),
        )

    def _optics_grids(self, state: RunState) -> tuple[tuple[int, float, int, int] | None, ...]:
        """(box, pixel, current size, coarse size) per optics group, None for the groups on the
        model's grid; empty when all are."""
        if all(self.optics_on_model_grid):
            return ()
        c, s = state.counters, state.sampling
        return tuple(None if on_grid else (box, px, *optics_image_sizes(
            current_size=c.current_size, model_ori=self.ori, model_pixel_size=self.pixel_size, box=box,
            pixel_size=px, sampling=s, particle_diameter=self.particle_diameter))
            for box, px, on_grid in zip(self.optics_boxes, self.optics_pixel_sizes, self.optics_on_model_grid))

    def _restore_continuation_options(self) -> None:
        """On ``--continue``, the run's settings come from its optimiser/model/sampling files;
        only the options relion_refine lets a continuation change are taken from the command
        line (spec 5.14)."""
        from processing.io.refine_star import ModelStarContents, OptimiserStarContents, SamplingStarContents

        o = self.options
        path = Path(o.continue_from)
        if not path.is_file():
            raise InputError("optimiser file to continue from does not exist", file=path)
        if "_it" not in path.name or not path.name.endswith("_optimiser.star"):
            raise InputError("--continue needs a run_itNNN_optimiser.star file", file=path)
        from processing.io.paths import resolve_path

        def near(name: str) -> str:
            return str(resolve_path(name, referrer=path)) if name else name

        opt = OptimiserStarContents.read(path)
        samp = SamplingStarContents.read(near(opt.sampling_star_file))
        model = ModelStarContents.read(near(opt.model_star_file))
        self.options = o.with_changes(
            particles=near(opt.data_star_file), tomograms=near(opt.tomograms_file) or o.tomograms,
            trajectories=near(opt.trajectories_file) or None, optimisation_set=None,
            symmetry=samp.symmetry, ctf=opt.do_correct_ctf, ctf_intact_first_peak=opt.do_ignore_ctf_until_first_peak,
            zero_mask=opt.do_zero_mask, flatten_solvent=opt.do_solvent_flattening,
            solvent_correct_fsc=opt.do_solvent_fsc_correction,
            solvent_mask=o.solvent_mask or (opt.solvent_mask_name if opt.solvent_mask_name not in ("", "None") else None),
            low_resol_join_halves=opt.join_halves_until_resolution,
            auto_local_healpix_order=opt.auto_local_healpix_order,
            particle_diameter=o.particle_diameter if o.particle_diameter > 0 else opt.particle_diameter,
            random_seed=opt.random_seed, scale=opt.do_correct_scale, pad=int(round(model.padding_factor)),
            tau2_fudge=model.tau2_fudge_factor, oversampling=opt.adaptive_oversample_order,
            perturb=samp.perturb_factor,
        )
        self.symmetry = normalise_symmetry_name(self.options.symmetry)
        self.operators = symmetry_operators(self.symmetry)
        self.seed = self.options.random_seed

    def run(self) -> int:
        if self.options.continue_from:
            self._restore_continuation_options()
        o = self.options
        particles_file, tomograms_file, self.trajectories_file = self._inputs()
        self.load_data(particles_file, tomograms_file)
        if o.continue_from:
            state, start = self.continue_state(o.continue_from)
            self._leader_sampling = (state.sampling.healpix_order, state.sampling.offset_step)
            # relion_refine re-evaluates the resolution from the model it read before its first
            # iteration (MlOptimiserMpi::iterate); an unchanged value counts as no gain.
            self._update_current_resolution(state, cc=False)
        else:
            state = self.initialise()
            start = 1
            if self.comm.is_leader:
                self.write_iteration(state, 0)
        self.log(f"3D auto-refine: {len(self.particle_set)} particles ({'3D' if self.is_3d else '2D stacks'}), "
                 f"box {self.ori} at {self.pixel_size:.3f} Å/px, {self.symmetry}, mask {self.particle_diameter:.0f} Å, "
                 f"{self.comm.size} process(es) x {o.threads} thread(s)")
        for iteration in range(start, o.auto_iter_max + 1):
            final = state.counters.has_converged or has_converged(state.counters, auto_ignore_angles=o.auto_ignore_angles)
            if final:
                state.counters.has_converged = True
            cc = o.firstiter_cc and iteration == 1 and not o.continue_from
            self.iterate(state, iteration, cc=cc, final=final)
            if final:
                self.log(f"Auto-refine converged: final resolution {1.0 / state.counters.current_resolution:.2f} Å")
                return 0
        self.log("Stopped at --auto_iter_max without convergence")
        return 0

    def iterate(self, state: RunState, iteration: int, *, cc: bool, final: bool) -> None:
        o = self.options
        c, s = state.counters, state.sampling
        t0 = time.time()
        c.iteration = iteration
        c.current_size, c.coarse_size = image_sizes(
            ori=self.ori, pixel_size=self.pixel_size, counters=c, sampling=s,
            particle_diameter=self.particle_diameter, final=final)
        c.random_perturbation = next_random_perturbation(c.random_perturbation, max(o.perturb, 0.0),
                                                         self.seed + iteration)
        ctx = self._context(state, cc=cc, final=final)
        # Accuracy estimate (rank 1 / the single process) and auto-sampling.
        if not cc:
            acc_rot, acc_trans = self._accuracy(ctx, state)
            c.acc_rot, c.acc_trans = acc_rot, acc_trans
        if iteration > 1:          # RELION updates the sampling in the final iteration too
            changed = update_angular_sampling(
                s, c, auto_ignore_angles=o.auto_ignore_angles, auto_resol_angles=o.auto_resol_angles,
                local_order=o.auto_local_healpix_order, particle_diameter=self.particle_diameter,
                is_3d_data=self.is_3d, offset_rms_change=c.current_changes_offsets,
            )
            if changed:
                c.current_size, c.coarse_size = image_sizes(
                    ori=self.ori, pixel_size=self.pixel_size, counters=c, sampling=s,
                    particle_diameter=self.particle_diameter, final=final)
                ctx = self._context(state, cc=cc, final=final)
        self.log(f"Iteration {iteration}{' (final)' if final else ''}: resolution "
                 f"{_angstrom(c.current_resolution)} Å, image size {c.current_size} (coarse {c.coarse_size}), "
                 f"sampling {s.angular_step():.2f}° (HEALPix {s.healpix_order}{', local' if s.local_search else ''}), "
                 f"offsets {s.offset_range:.1f}/{s.offset_step:.1f} Å")
        t_e = time.time()
        accumulators, results = self.expectation(ctx, state, iteration, final=final)
        t_m = time.time()
        self.timings = {"expectation": t_m - t_e}
        if self.comm.is_leader:
            self.maximisation(state, accumulators, results, cc=cc, final=final)
        state_to_share = self._shared(state) if self.comm.is_leader else None
        self._apply_shared(state, self.comm.bcast(state_to_share))
        t_w = time.time()
        self.timings["maximisation"] = t_w - t_m
        if self.comm.is_leader:
            self.write_iteration(state, None if final else iteration)
        self.timings["io"] = time.time() - t_w
        self.timings["total"] = time.time() - t0
        self.iteration_timings.append({"iteration": iteration, **self.timings})
        self.log(f"  -> resolution {_angstrom(c.current_resolution)} Å, acc. rot {c.acc_rot:.2f}°, trans "
                 f"{c.acc_trans:.2f} Å, changes {c.current_changes_orientations:.2f}° / {c.current_changes_offsets:.2f} Å, "
                 f"<Pmax> {c.ave_pmax:.3f}, E {self.timings['expectation']:.1f} s, M {self.timings['maximisation']:.1f} s")

    def _accuracy(self, ctx: EStepContext, state: RunState) -> tuple[float, float]:
        chosen = None
        if self.comm.size == 1 or self.comm.rank == 1:
            # RELION (rank 1, with its own half-1 model) takes the first 100 particles of its
            # visiting order: half 1 first, then half 2 when half 1 has fewer than 100.
            order = self._visiting_order(state)
            items = [(self.store.load(i), replace(state.particles[i], half=0)) for i in order[:ACCURACY_PARTICLES]]
            chosen = expected_accuracy(ctx, items, random_seed=self.seed)
        if self.comm.size > 1:
            chosen = self.comm.bcast(chosen, root=1)
        return chosen

    def _visiting_order(self, state: RunState) -> list[int]:
        """relion_refine's particle order (``Experiment::randomiseParticlesOrder``, done once
        per process, in its first iteration): half 1 then half 2 in file order, each half
        shuffled by libstdc++'s ``std::shuffle`` with ``std::mt19937(random_seed + iteration)``
        (one generator for both), then each half stably sorted on optics group. A seed of 0
        leaves the halves in file order."""
        if self._order is None:
            halves = [[i for i, p in enumerate(state.particles) if p.half == h] for h in (0, 1)]
            if self.seed != 0:
                generator = Mt19937(self.seed + state.counters.iteration)
                for half in halves:
                    libstdcxx_shuffle(half, generator)
            self._order = [i for half in halves for i in sorted(half, key=lambda i: state.particles[i].optics)]
        return self._order

    # ---- expectation ----------------------------------------------------------------------

    def expectation(self, ctx: EStepContext, state: RunState, iteration: int, *, final: bool):
        o = self.options
        c = state.counters
        r_max = c.current_size / 2.0
        template = fourier_grid_from_volume(np.zeros((self.ori,) * 3), padding_factor=o.pad, r_max=r_max)
        cgrid = template[1]
        n_dirs = ctx.sampling.n_directions
        accs = [HalfAccumulator.create(c=cgrid, pad=float(o.pad), n_shells=self.n_shells, n_directions=n_dirs,
                                       n_groups=len(self.group_names), n_optics=self.n_optics,
                                       r_max=c.current_size // 2, data_dim=3 if self.is_3d else 2)
                for _ in range(2)]
        mine = self._my_particles(state)
        batch = max(1, o.pool * o.threads)
        results: dict[int, ParticleResult] = {}
        started = time.time()
        n_total = len(state.particles)
        locks = [threading.Lock(), threading.Lock()]

        def expect(i: int) -> tuple[int, ParticleResult]:
            p = state.particles[i]
            noise = None
            if not o.zero_mask:
                noise = ctx.for_particle(p).noise(p)
                noise = np.where(np.isfinite(noise), noise, 0.0)
            return i, expect_particle(ctx, self.store.load(i, noise=noise, origin=p.origin), p, accs[p.half],
                                      lock=locks[p.half])

        with particle_threads(o.threads) as pmap:
            for b in range(0, len(mine), batch):
                check_abort(self.job_dir)
                results.update(pmap(expect, mine[b:b + batch]))
                if self.comm.size == 1:
                    self._progress(iteration, "expectation", len(results), n_total, started)
                else:
                    write_rank_progress(self.comm, self.job_dir, iteration, len(results), len(mine))
        if self.comm.size > 1:
            wait_for_workers(self.comm, self.job_dir,
                             lambda done: self._progress(iteration, "expectation", done, n_total, started))
            if o.combine_weights_via_disc:
                combine_through_disc(self.comm, self.job_dir, accs)
            else:
                sum_over_ranks(self.comm, accs)
            gathered = self.comm.gather(results)
            if self.comm.is_leader:
                results = {k: v for part in gathered for k, v in part.items()}
        return accs, results

    def _progress(self, iteration: int, phase: str, done: int, total: int, started: float) -> None:
        elapsed = time.time() - started
        per = elapsed / done if done else None
        record = {
            "iteration": iteration, "phase": phase, "particles_done": done, "particles_total": total,
            "seconds_in_phase": round(elapsed, 2),
            "estimated_seconds_left_in_phase": None if per is None else round(per * (total - done), 1),
            "seconds_per_phase": self.timings, "updated": time.time(),
            "started": self.started,
        }
        with atomic_write(self.job_dir / "progress.json") as fh:
            json.dump(record, fh)

    # ---- maximisation ---------------------------------------------------------------------

    def maximisation(self, state: RunState, accs: list[HalfAccumulator], results: dict[int, ParticleResult],
                     *, cc: bool, final: bool) -> None:
        """RELION's steps after the E-step (spec 5.4 items 3-11): hidden-variable changes,
        symmetrisation, low-resolution joining, gold-standard FSC, image-size bookkeeping, one
        M-step per half set (its own reference and nuisance parameters; both summed in the
        final iteration), solvent flattening and the new current resolution."""
        o = self.options
        c, s = state.counters, state.sampling
        # Hidden-variable changes, then the new poses.
        idx = np.array(sorted(results))
        old_m = np.stack([euler_to_matrix(*state.particles[i].angles) for i in idx])
        new_m = np.stack([euler_to_matrix(*results[i].angles) for i in idx])
        old_o = np.stack([state.particles[i].origin for i in idx])
        new_o = np.stack([results[i].origin for i in idx])
        orient, offset = hidden_variable_changes(old_m, new_m, old_o, new_o, self.symmetry)
        class_changes = float(np.mean([state.particles[i].class_number != 1 for i in idx]))
        update_change_counters(c, s, orient, offset, class_changes, leader_sampling=self._leader_sampling)
        for i in idx:
            r = results[i]
            state.particles[i].angles = r.angles
            state.particles[i].origin = r.origin
            state.particles[i].class_number = 1
            state.pmax[i] = r.pmax
            state.n_significant[i] = r.n_significant
            state.log_likelihood_particles[i] = r.log_likelihood
        for acc in accs:
            mstep.symmetrise_half(acc, self.operators)
        r_max = c.current_size / 2.0
        if final:
            state.unfil = [self._reconstruct_unfil(acc) for acc in accs]
        if o.low_resol_join_halves > 0:
            join_shell = int(math.ceil(self.ori * self.pixel_size / max(
                o.low_resol_join_halves, _angstrom_value(c.current_resolution))))
            mstep.join_low_resolution(accs[0], accs[1], join_shell)
        if o.solvent_correct_fsc and self._solvent_mask() is not None:
            fsc = self._solvent_corrected_fsc(accs, seed=self.seed + c.iteration)
        else:
            fsc = mstep.half_map_fsc(accs[0], accs[1], self.n_shells, r_max=int(r_max))
        _update_incr_size(c, fsc)
        if not c.has_high_fsc_at_limit:
            limit = c.current_size // 2 - 1
            c.has_high_fsc_at_limit = bool(0 <= limit < fsc.size and fsc[limit] > 0.2)
        if final:
            accs[0].add(accs[1])
            accs = [accs[0], accs[0]]
            state.joined = True
        counts = [np.bincount(self.groups[[p.half == h for p in state.particles]],
                              minlength=len(self.group_names)).astype(float) for h in range(2)]
        for h, (half, acc) in enumerate(zip(state.halves, accs)):
            model = mstep.reconstruct_half(acc, fsc, ori=self.ori, r_max=r_max, tau2_fudge=o.tau2_fudge,
                                           joined=final)
            volume = model.map
            if cc and o.ini_high > 0:
                volume = initial_lowpass(volume, resolution=o.ini_high, pixel_size=self.pixel_size)
            if o.flatten_solvent and not final:
                volume = mstep.solvent_flatten(volume, radius_px=self.mask_radius_px, mask=self._solvent_mask())
            half.map = volume
            half.fsc = fsc
            half.ssnr, half.tau2, half.sigma2_ref, half.completeness = (
                model.ssnr, model.tau2, model.sigma2_ref, model.completeness)
            if not cc:
                half.sigma2 = mstep.update_noise(acc, half.sigma2, self.npix_per_shell)
            half.sigma_offset = mstep.update_sigma_offset(acc)
            if acc.weight_sum > 0 and acc.pdf_sum.size == half.pdf_direction.size:
                half.pdf_direction = acc.pdf_sum / acc.weight_sum
            if o.scale and not cc:
                half.scales = mstep.update_scales(acc, counts[0] + counts[1] if final else counts[h])
            half.ave_pmax = acc.pmax_sum / max(acc.weight_sum, 1e-30)
            half.log_likelihood = acc.log_likelihood
        # RELION broadcasts rank 1's <Pmax> (half 1) for the image-size rule.
        c.ave_pmax = state.halves[0].ave_pmax
        self._update_current_resolution(state, cc=cc)

    def _update_current_resolution(self, state: RunState, *, cc: bool) -> None:
        """RELION's updateCurrentResolution: the shell before SSNR (half 1's) first drops
        below 1 (FSC 0.5 while the halves are separate, 0.143 once joined), held at
        ``--ini_high`` after a first cross-correlation iteration; no gain counts against the
        previous iteration's value."""
        o, c = self.options, state.counters
        box = self.ori * self.pixel_size
        if cc and o.ini_high > 0:
            shell = int(math.floor(box / o.ini_high + 0.5))
        else:
            shell = mstep.resolution_shell_from_ssnr(state.halves[0].ssnr)
        new_res = shell / box
        if new_res <= c.current_resolution + 1e-4:
            c.nr_iter_wo_resol_gain += 1
        else:
            c.nr_iter_wo_resol_gain = 0
        c.best_resolution = max(c.best_resolution, new_res)
        c.current_resolution = new_res

    def _solvent_corrected_fsc(self, accs: list[HalfAccumulator], *, seed: int) -> NDArray[np.float64]:
        """"Use solvent-flattened FSCs" (needs a reference mask, as in RELION, and runs in every
        iteration, the final one included): the FSC of the unregularised half maps inside the
        solvent mask, corrected for the mask by phase randomisation as relion_postprocess does
        (spec 5.6); the curve replaces the unmasked one for tau² and the resolution."""
        from processing.fourier.fsc import postprocess_fsc

        halves = [self._reconstruct_unfil(acc) for acc in accs]
        result = postprocess_fsc(halves[0], halves[1], pixel_size=self.pixel_size, mask=self._solvent_mask(),
                                 seed=seed)
        corrected = np.asarray(result.corrected, dtype=np.float64)
        out = np.zeros(self.n_shells)
        n = min(out.size, corrected.size)
        out[:n] = corrected[:n]
        out[0] = 1.0
        return out

    def _reconstruct_unfil(self, acc: HalfAccumulator) -> NDArray[np.float64]:
        from processing.fourier.backprojector import reconstruct

        return reconstruct(acc.data, acc.weight, acc.c, ori_size=self.ori, padding_factor=acc.pad,
                           r_max=self.ori / 2.0, tau2=None, data_dim=acc.data_dim)

    def _solvent_mask(self) -> NDArray | None:
        if not self.options.solvent_mask:
            return None
        if not hasattr(self, "_mask_cache"):
            m = read_mrc(self.options.solvent_mask).data.astype(np.float64)
            if m.shape != (self.ori,) * 3:
                raise InputError(f"solvent mask has shape {m.shape}, the reference {(self.ori,) * 3}",
                                 file=self.options.solvent_mask)
            if m.min() < -1e-6 or m.max() > 1 + 1e-6:
                raise InputError("solvent mask values must lie in [0, 1]", file=self.options.solvent_mask)
            self._mask_cache = np.clip(m, 0, 1)
        return self._mask_cache

    # ---- MPI sharing of the model ------------------------------------------------------------

    @staticmethod
    def _shared(state: RunState) -> dict:
        return {
            "halves": state.halves, "counters": state.counters, "sampling": state.sampling,
            "poses": [(p.angles, p.origin) for p in state.particles], "joined": state.joined,
        }

    @staticmethod
    def _apply_shared(state: RunState, shared: dict) -> None:
        state.halves = shared["halves"]
        state.counters = shared["counters"]
        state.sampling = shared["sampling"]
        state.joined = shared["joined"]
        for p, (angles, origin) in zip(state.particles, shared["poses"]):
            p.angles, p.origin = angles, origin

    # ---- files ----------------------------------------------------------------------------

    def write_iteration(self, state: RunState, iteration: int | None) -> None:
        from .outputs import write_iteration_files

        write_iteration_files(self, state, iteration)

    def continue_state(self, optimiser_file: str) -> tuple[RunState, int]:
        from .outputs import read_continuation

        return read_continuation(self, optimiser_file)


def resize_reference(volume: NDArray, pixel: float, box: int, target_pixel: float) -> NDArray[np.float64]:
    """Fourier-rescale a map to ``target_pixel`` (the new size rounded down to even, as
    relion_refine's --trust_ref_size), then window it to ``box``."""
    new = int(math.floor(volume.shape[0] * (pixel / target_pixel) + 0.5))
    new -= new % 2
    return resample_and_window(volume, new_size=new, box=box, ndim=3)


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


def _update_incr_size(c: RefineCounters, fsc: NDArray) -> None:
    """incr_size >= (first shell with FSC < 0.143) - (first with FSC < 0.5) + 5 (-1 if none)."""
    below_0143 = np.flatnonzero(fsc < 0.143)
    below_05 = np.flatnonzero(fsc < 0.5)
    first_0143 = int(below_0143[0]) if below_0143.size else -1
    first_05 = int(below_05[0]) if below_05.size else -1
    c.incr_size = max(c.incr_size, first_0143 - first_05 + 5)


def _angstrom_value(resolution: float) -> float:
    return 1.0 / resolution if resolution > 0 else 999.0


def _angstrom(resolution: float) -> str:
    return f"{_angstrom_value(resolution):.2f}"


def run_refine(options: RefineOptions, *, comm: Communicator | None = None, log=print) -> int:
    """Run 3D auto-refine in this process (or this MPI rank)."""
    comm = comm or get_communicator()
    if not options.parallel_disc_io:
        raise InputError("--no_parallel_disc_io is not allowed for subtomogram averaging (RELION forces "
                         "parallel disc I/O on for tomography data)", column="do_parallel_discio")
    if options.gpu is not None:
        from processing.backend import cupy_available

        if not cupy_available():
            raise InputError("GPU acceleration was requested (--gpu) but CuPy or a CUDA GPU is not available "
                             "on this machine; run without 'Use GPU acceleration?'", column="use_gpu")
        raise InputError("GPU acceleration of 3D auto-refine is not implemented yet: the E-step kernels run "
                         "on the CPU; run without 'Use GPU acceleration?'", column="use_gpu")
    if options.split_random_halves and comm.size > 1 and (comm.size < 3 or comm.size % 2 == 0):
        raise InputError(f"with split random halves the number of MPI processes must be odd and >= 3 "
                         f"(or 1), got {comm.size}", column="nr_mpi")
    return RefineRun(options, comm=comm, log=log).run()
