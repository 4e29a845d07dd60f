"""3D auto-refine driver: the iteration loop and its distribution over MPI ranks, with
progress and abort (spec 5.4, 5.9, 5.13). What a run reads first is in ``inputs``, iteration 0
in ``initial``, the leader's work after the E-step in ``maximisation``, the files and
``--continue`` in ``outputs``.

MPI layout (``mpiexec -n N``, N odd >= 3): rank 0 leads (metadata, M-step, files) and does no
image work; odd ranks refine half 1, even ranks half 2, each sharing its half's particles.
With one process, that process refines both halves itself.

GPUs (``--gpu``, see :mod:`.devices`): each working rank runs its E-step on its device through
CuPy — references, slices, products and back-projection grids in device memory, with the
same functions as on the CPU (:mod:`processing.backend`); the leader uses none.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from processing import backend
from processing.fourier.projector import fourier_grid_from_volume
from processing.geometry.sampling import AngularSampling, next_random_perturbation, translation_grid
from processing.glibc_random import Mt19937, libstdcxx_shuffle
from processing.io.atomic import atomic_write, test_pause
from processing.abort import check_abort
from processing.parallel import Communicator, get_communicator, particle_threads

from .accuracy import expected_accuracy
from .devices import DevicePlan, announce_device, plan_devices
from .distributed import combine_through_disc, sum_over_ranks, wait_for_workers, write_rank_progress
from .estep import EStepContext, HalfAccumulator, ParticleResult, Reference, expect_particle
from .initial import initial_state
from .inputs import RefineInputs, check_run_settings, continuation_options, load_inputs
from .classify import classification_image_sizes, fast_subset_size, maximise_classes, reference_power, seed_classes
from .maximisation import angstrom, maximise, update_current_resolution
from .options import RefineOptions
from .particles import check_preread_fits
from .outputs import read_continuation, write_iteration_files
from .state import RunState
from .schedule import has_converged, image_sizes, optics_image_sizes, update_angular_sampling

__all__ = ["run_refine", "RefineRun"]

#: particles used for the accuracy estimate (RELION: 100).
ACCURACY_PARTICLES = 100


class RefineRun:
    """One 3D auto-refine run (see module docstring); :meth:`run` does it all, :meth:`start`
    and :meth:`iterate` are its steps."""

    def __init__(self, options: RefineOptions, *, comm: Communicator | None = None, log=print,
                 array_kernels: bool = False) -> None:
        """``array_kernels`` runs the E-step with the GPU's array-module kernels on the CPU
        (numpy): the GPU's code path where there is no GPU (tests)."""
        self.comm = comm or Communicator(None)
        self.log = log if self.comm.is_leader else (lambda *a, **k: None)
        if options.continue_from:
            options = continuation_options(options)
            seed = options.random_seed
        else:
            seed = options.random_seed if options.random_seed >= 0 else int(time.time())
        self.options = options
        #: classes per set: K in 3D classification (one set), 1 in auto-refine (two half sets)
        self.n_classes = options.n_classes if options.classification else 1
        self.seed = self.comm.bcast(seed)
        self.job_dir = Path(options.output_root).parent
        self.inputs: RefineInputs | None = None
        self.timings: dict[str, float] = {}
        self.iteration_timings: list[dict[str, float]] = []
        #: (HEALPix order, offset step Å) the change counters are judged against on --continue
        self._leader_sampling: tuple[int, float] | None = None
        #: relion_refine's particle visiting order (see _visiting_order), made in the first iteration
        self._order: list[int] | None = None
        #: 0-based random class per particle in classification's seed iteration (else None)
        self._seed_classes: dict[int, int] | None = None
        #: the classes every particle is scored against in this iteration (None: all)
        self._only_classes: list[int] | None = None
        #: each class's τ² in this classification iteration (classify.reference_power)
        self._reference_power: list[np.ndarray] = []
        self.device = self._plan_device(options)
        self.xp = backend.device_module() if self.device.on_gpu else np
        self.array_kernels = array_kernels or self.device.on_gpu
        self.started = time.time()

    def _plan_device(self, options: RefineOptions) -> DevicePlan:
        if options.gpu is None:
            return DevicePlan(None)
        plan = plan_devices(options.gpu, rank=self.comm.rank, n_ranks=self.comm.size, n_threads=options.threads,
                            n_devices=backend.device_count(), workers_on_host=self.comm.ranks_on_my_host())
        if plan.on_gpu:
            backend.select_device(plan.device)
            announce_device(self.comm.rank, plan.device)
        return plan

    def start(self) -> tuple[RunState, int]:
        """Read the inputs and make (or, on ``--continue``, read back) the state before the
        first iteration to run; returns (state, that iteration's number)."""
        o = self.options
        self.inputs = load_inputs(o, seed=self.seed)
        if o.continue_from:
            state, first = read_continuation(self.inputs, o, o.continue_from)
            self._leader_sampling = (state.sampling.healpix_order, state.sampling.offset_step)
            # relion_refine re-evaluates the resolution from the model it read before its first
            # iteration (MlOptimiserMpi::iterate); an unchanged value counts as no gain.
            update_current_resolution(self.inputs, o, state, cc=False)
            return state, first
        state = initial_state(self.inputs, o)
        if self.comm.is_leader:
            write_iteration_files(self.inputs, o, state, 0)
        return state, 1

    def _my_particles(self, state: RunState) -> list[int]:
        """Particle indices this rank works on."""
        n = len(state.particles)
        if self.comm.size == 1:
            return list(range(n))
        if self.comm.is_leader:
            return []
        if self.options.classification:
            # No half sets: every working rank takes its share of all particles.
            return list(range(self.comm.rank - 1, n, self.comm.size - 1))
        half = (self.comm.rank - 1) % 2
        workers = [r for r in range(1, self.comm.size) if (r - 1) % 2 == half]
        mine = workers.index(self.comm.rank)
        of_half = [i for i in range(n) if state.particles[i].half == half]
        return of_half[mine::len(workers)]

    def _context(self, state: RunState, *, cc: bool, final: bool) -> EStepContext:
        s, c = state.sampling, state.counters
        sampling = AngularSampling.create(s.healpix_order, self.inputs.symmetry, s.psi_step)
        for half in state.halves:
            if half.pdf_direction.size != sampling.n_directions:
                half.pdf_direction = np.full(sampling.n_directions, 1.0 / sampling.n_directions)
        K = self.n_classes
        sets = state.halves[::K]
        refs = []
        for half in state.halves:
            grid, cidx, _ = fourier_grid_from_volume(half.map, padding_factor=self.options.pad,
                                                     dtype=np.complex64, data_dim=3 if self.inputs.is_3d else 2)
            refs.append(Reference(grid=grid, c=cidx, pad=float(self.options.pad), array_kernels=self.array_kernels))
        if self.options.classification:
            # τ² of classification: each reference's own power in this iteration's window.
            self._reference_power = [reference_power(r, current_size=c.current_size, n_shells=self.inputs.n_shells)
                                     for r in refs]
        if self.device.on_gpu:
            with backend.use_device(self.device.device):
                refs = [r.on_device(self.xp) for r in refs]
        step_px = s.offset_step / self.inputs.pixel_size
        return EStepContext(
            ori=self.inputs.ori, pixel_size=self.inputs.pixel_size, references=refs,
            sigma2=np.stack([h.sigma2 for h in sets]),
            coarse_size=c.coarse_size, current_size=c.current_size, sampling=sampling,
            translations=translation_grid(s.offset_range / self.inputs.pixel_size, step_px, dim=3),
            offset_step=step_px, offset_step_angst=s.offset_step, perturbation=c.random_perturbation,
            sigma_rot=s.sigma_rot, sigma_tilt=s.sigma_tilt, sigma_psi=s.sigma_psi,
            local_search=s.local_search,
            pdf_direction=None if (s.sigma_rot > 0 or s.sigma_tilt > 0 or s.sigma_psi > 0)
            else np.stack([h.pdf_direction for h in state.halves]),
            sigma_offset=np.array([h.sigma_offset for h in sets]),
            scales=np.stack([h.scales for h in sets]) if self.options.scale else None,
            # Scale corrections use the shells where half 1's SSNR exceeds 3 (RELION broadcasts
            # rank 1's data_vs_prior to every rank).
            scale_ssnr=state.halves[0].ssnr,
            firstiter_cc=cc, oversampling=s.oversampling, is_3d=self.inputs.is_3d,
            optics_grids=self._optics_grids(state),
            n_classes=K, skip_align=self.options.skip_align and self.options.classification,
            pdf_class=np.array([h.pdf_class for h in state.halves]),
            strict_highres=self.options.classification and self.options.strict_highres_exp > 0,
            relion_code=self.options.relion_code,
        )

    def _choose_classes(self, state: RunState, *, cc: bool) -> None:
        """Which classes each particle is scored against in this classification iteration:
        class 1 only in a first cross-correlation iteration; one random class per particle in
        the seed iteration (the first after it, or the first; one reference, K > 1)."""
        K = self.n_classes
        first = 2 if self.options.firstiter_cc else 1
        self._seed_classes = None
        self._only_classes = None
        if K == 1:
            return
        if cc:
            self._only_classes = [0]
        elif state.counters.iteration == first and not self.options.continue_from:
            self._seed_classes = seed_classes(self._visiting_order(state), random_seed=self.seed, n_classes=K)

    def _classes_of(self, i: int) -> list[int] | None:
        if self._seed_classes is not None:
            return [self._seed_classes[i]]
        return self._only_classes

    def _subset(self, state: RunState, indices) -> list[int]:
        """With ``--fast_subsets``, the particles of this iteration's subset (the first of the
        visiting order, re-shuffled every iteration while subsets are in use); else all."""
        indices = list(indices)
        o = self.options
        if not o.fast_subsets:
            return indices
        n = len(state.particles)
        size = fast_subset_size(state.counters.iteration, n_classes=self.n_classes, n_particles=n)
        if size >= n:
            return indices
        order = list(range(n))
        libstdcxx_shuffle(order, Mt19937(self.seed + state.counters.iteration))
        chosen = set(order[:size])
        return [i for i in indices if i in chosen]

    def _optics_grids(self, state: RunState) -> tuple[tuple[int, float, int, int] | None, ...]:
        """(box, pixel, current size, coarse size) per optics group, None for the groups on the
        model's grid; empty when all are."""
        if all(self.inputs.optics_on_model_grid):
            return ()
        c, s = state.counters, state.sampling
        return tuple(None if on_grid else (box, px, *optics_image_sizes(
            current_size=c.current_size, model_ori=self.inputs.ori, model_pixel_size=self.inputs.pixel_size, box=box,
            pixel_size=px, sampling=s, particle_diameter=self.inputs.particle_diameter))
            for box, px, on_grid in zip(self.inputs.optics_boxes, self.inputs.optics_pixel_sizes, self.inputs.optics_on_model_grid))

    def run(self) -> int:
        """Every iteration from the first (or the one after ``--continue``'s) to convergence
        or ``--auto_iter_max`` (3D classification: to ``--iter``); returns the exit status."""
        state, first = self.start()
        o, d = self.options, self.inputs
        if o.preread_images:
            mine = self._my_particles(state)
            check_preread_fits(d.store.preread_bytes(mine), len(mine))
        self.log(f"{'3D classification' if o.classification else '3D auto-refine'}: {len(d.particle_set)} particles ({'3D' if d.is_3d else '2D stacks'}), "
                 f"box {d.ori} at {d.pixel_size:.3f} Å/px, {d.symmetry}, mask {d.particle_diameter:.0f} Å, "
                 f"{self.comm.size} process(es) x {o.threads} thread(s)")
        if o.classification:
            for iteration in range(first, o.n_iterations + 1):
                self.iterate(state, iteration, cc=o.firstiter_cc and iteration == 1 and not o.continue_from,
                             final=False)
            self.log(f"3D classification: {o.n_iterations} iterations done; class distribution "
                     + ", ".join(f"{h.pdf_class:.3f}" for h in state.halves))
            return 0
        for iteration in range(first, o.auto_iter_max + 1):
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
            ori=self.inputs.ori, pixel_size=self.inputs.pixel_size, counters=c, sampling=s,
            particle_diameter=self.inputs.particle_diameter, final=final)
        c.random_perturbation = next_random_perturbation(c.random_perturbation, max(o.perturb, 0.0),
                                                         self.seed + iteration)
        if o.classification:
            self._visiting_order(state)     # relion_refine shuffles once, in the first iteration it runs
            c.current_size, c.coarse_size = classification_image_sizes(self.inputs, o, state)
            self._choose_classes(state, cc=cc)
        ctx = self._context(state, cc=cc, final=final)
        # Accuracy estimate (rank 1 / the single process) and auto-sampling.
        if not cc:
            acc_rot, acc_trans = self._accuracy(ctx, state)
            c.acc_rot, c.acc_trans = acc_rot, acc_trans
        if iteration > 1 and not o.classification:   # RELION updates the sampling in the final iteration too
            changed = update_angular_sampling(
                s, c, auto_ignore_angles=o.auto_ignore_angles, auto_resol_angles=o.auto_resol_angles,
                local_order=o.auto_local_healpix_order, particle_diameter=self.inputs.particle_diameter,
                is_3d_data=self.inputs.is_3d, offset_rms_change=c.current_changes_offsets,
            )
            if changed:
                c.current_size, c.coarse_size = image_sizes(
                    ori=self.inputs.ori, pixel_size=self.inputs.pixel_size, counters=c, sampling=s,
                    particle_diameter=self.inputs.particle_diameter, final=final)
                ctx = self._context(state, cc=cc, final=final)
        self.log(f"Iteration {iteration}{' (final)' if final else ''}: resolution "
                 f"{angstrom(c.current_resolution):.2f} Å, image size {c.current_size} (coarse {c.coarse_size}), "
                 f"sampling {s.angular_step():.2f}° (HEALPix {s.healpix_order}{', local' if s.local_search else ''}), "
                 f"offsets {s.offset_range:.1f}/{s.offset_step:.1f} Å")
        t_e = time.time()
        accumulators, results = self.expectation(ctx, state, iteration, final=final)
        t_m = time.time()
        self.timings = {"expectation": t_m - t_e}
        if self.comm.is_leader:
            test_pause(f"maximisation:{iteration}", self.job_dir)  # test hook ($TOMODASH_TEST_PAUSE; kill matrix)
            if o.classification:
                maximise_classes(self.inputs, o, state, accumulators, results, cc=cc, tau2=self._reference_power)
            else:
                maximise(self.inputs, o, state, accumulators, results, cc=cc, final=final,
                         leader_sampling=self._leader_sampling)
        state_to_share = self._shared(state) if self.comm.is_leader else None
        self._apply_shared(state, self.comm.bcast(state_to_share))
        t_w = time.time()
        self.timings["maximisation"] = t_w - t_m
        if self.comm.is_leader:
            write_iteration_files(self.inputs, o, state, None if final else iteration)
        self.timings["io"] = time.time() - t_w
        self.timings["total"] = time.time() - t0
        self.iteration_timings.append({"iteration": iteration, **self.timings})
        self.log(f"  -> resolution {angstrom(c.current_resolution):.2f} Å, acc. rot {c.acc_rot:.2f}°, trans "
                 f"{c.acc_trans:.2f} Å, changes {c.current_changes_orientations:.2f}° / {c.current_changes_offsets:.2f} Å, "
                 f"<Pmax> {c.ave_pmax:.3f}, E {self.timings['expectation']:.1f} s, M {self.timings['maximisation']:.1f} s")

    def _accuracy(self, ctx: EStepContext, state: RunState) -> tuple[float, float]:
        chosen = None
        if self.comm.size == 1 or self.comm.rank == 1:
            # RELION (rank 1, with its own half-1 model) takes the first 100 particles of its
            # visiting order: half 1 first, then half 2 when half 1 has fewer than 100.
            order = self._visiting_order(state)
            items = [(self.inputs.store.load(i), replace(state.particles[i], half=0)) for i in order[:ACCURACY_PARTICLES]]
            if self.options.classification:
                chosen = self._class_accuracies(ctx, state, items)
            else:
                chosen = expected_accuracy(ctx, items, random_seed=self.seed)
        if self.comm.size > 1:
            chosen = self.comm.bcast(chosen, root=1)
        if self.options.classification:
            per_class = chosen
            for half, (rot, trans) in zip(state.halves, per_class):
                half.acc_rot, half.acc_trans = rot, trans
            # the best class's accuracy is the run's (relion_refine takes the minimum)
            return min(r for r, _ in per_class), min(t for _, t in per_class)
        return chosen

    def _class_accuracies(self, ctx: EStepContext, state: RunState, items: list) -> list[tuple[float, float]]:
        """Each class's (angular, translational) accuracy; 999 for a class with less than 1 %
        of the particles, as relion_refine leaves it."""
        out = []
        for k, half in enumerate(state.halves):
            if half.pdf_class < 0.01:
                out.append((999.0, 999.0))
                continue
            one = replace(ctx, references=[ctx.references[k]], n_classes=1, _views={})
            out.append(expected_accuracy(one, items, random_seed=self.seed))
        return out

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
        template = fourier_grid_from_volume(np.zeros((self.inputs.ori,) * 3), padding_factor=o.pad, r_max=r_max)
        cgrid = template[1]
        n_dirs = ctx.sampling.n_directions
        accs = [HalfAccumulator.create(c=cgrid, pad=float(o.pad), n_shells=self.inputs.n_shells, n_directions=n_dirs,
                                       n_groups=len(self.inputs.group_names), n_optics=self.inputs.n_optics,
                                       r_max=c.current_size // 2, data_dim=3 if self.inputs.is_3d else 2)
                for _ in state.halves]
        if self.device.on_gpu:
            with backend.use_device(self.device.device):
                accs = [a.on_device(self.xp) for a in accs]
        K = self.n_classes
        mine = self._my_particles(state)
        if o.classification:
            mine = self._subset(state, mine)
        batch = max(1, o.pool * o.threads)
        results: dict[int, ParticleResult] = {}
        started = time.time()
        n_total = len(state.particles) if not o.classification else len(self._subset(state, range(len(state.particles))))
        locks = [threading.Lock() for _ in range(len(state.halves) // K)]

        def expect(i: int) -> tuple[int, ParticleResult]:
            p = state.particles[i]
            noise = None
            if not o.zero_mask:
                noise = ctx.for_particle(p).noise(p)
                noise = np.where(np.isfinite(noise), noise, 0.0)
            first = p.half * K
            with backend.use_device(self.device.device):
                store = self.inputs.store
                images = store.load(i, noise=noise, offset_px=p.offset_px(float(store.pixel_sizes[i])))
                return i, expect_particle(ctx, images, p, accs[first:first + K], lock=locks[p.half],
                                          classes=self._classes_of(i))

        with particle_threads(o.threads) as pmap:
            for b in range(0, len(mine), batch):
                check_abort(self.job_dir)
                results.update(pmap(expect, mine[b:b + batch]))
                if self.comm.size == 1:
                    self._progress(iteration, "expectation", len(results), n_total, started)
                else:
                    write_rank_progress(self.comm, self.job_dir, iteration, len(results), len(mine))
        for acc in accs:
            acc.to_host()
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

    # ---- MPI sharing of the model ------------------------------------------------------------

    @staticmethod
    def _shared(state: RunState) -> dict:
        return {
            "halves": state.halves, "counters": state.counters, "sampling": state.sampling,
            "poses": [(p.angles, p.origin, p.origin_px, p.class_number) for p in state.particles],
            "joined": state.joined,
        }

    @staticmethod
    def _apply_shared(state: RunState, shared: dict) -> None:
        state.halves = shared["halves"]
        state.counters = shared["counters"]
        state.sampling = shared["sampling"]
        state.joined = shared["joined"]
        for p, (angles, origin, origin_px, class_number) in zip(state.particles, shared["poses"]):
            p.angles, p.origin, p.origin_px, p.class_number = angles, origin, origin_px, class_number


def run_refine(options: RefineOptions, *, comm: Communicator | None = None, log=print) -> int:
    """Run 3D auto-refine in this process (or this MPI rank)."""
    comm = comm or get_communicator()
    check_run_settings(options, comm.size)
    return RefineRun(options, comm=comm, log=log).run()
