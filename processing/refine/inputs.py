"""What a 3D auto-refine run reads once, before its first iteration (spec 5.3 items 1-3,
5.14): the particles, tomograms and optics groups, the reference maps, the solvent mask,
and on ``--continue`` the settings recorded in the files of the run being continued.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from processing.backend import cupy_problem
from processing.errors import InputError
from processing.fourier.fft import resample_and_window
from processing.geometry.symmetry import normalise_symmetry_name, symmetry_operators
from processing.glibc_random import GlibcRandom
from processing.io.mrc import read_mrc
from processing.io.optimisation_set import OptimisationSet
from processing.io.particles import ParticleSet
from processing.io.paths import resolve_path
from processing.io.refine_star import ModelStarContents, OptimiserStarContents, SamplingStarContents
from processing.io.tomograms import TomogramSet

from .devices import parse_gpu_ids
from .frequencies import pixels_per_shell
from .options import RefineOptions, option_flags
from .particles import ParticleStore, images_are_3d

__all__ = [
    "RefineInputs", "load_inputs", "input_files", "continuation_options", "reference_files",
    "read_reference", "resize_reference", "random_halves", "check_inputs", "check_run_settings",
]


@dataclass
class RefineInputs:
    """The fixed facts of one run: its files, particles and optics groups, the model's box.

    The model's box and pixel size are the first optics group's (RELION's MlModel); other
    groups may differ, and their images are then mapped onto the model's Fourier grid.
    """

    particles_file: str
    tomograms_file: str
    trajectories_file: str | None
    tomograms: TomogramSet
    particle_set: ParticleSet
    store: ParticleStore
    #: box (px) and pixel size (Å) of the model
    ori: int
    pixel_size: float
    #: per optics group (in the optics table's order): box, pixel size, and whether both equal the model's
    optics_boxes: list[int]
    optics_pixel_sizes: list[float]
    optics_on_model_grid: list[bool]
    #: ``(n_particles,)`` each particle's optics group (row of the optics table)
    optics_index: NDArray[np.int64]
    #: True for 3D pseudo-subtomograms, False for 2D tilt-image stacks
    is_3d: bool
    #: Å; ``--particle_diameter`` or, when not given, the box less 5 pixels
    particle_diameter: float
    mask_radius_px: float
    #: tomogram names in the tomogram set's order, and ``(n_particles,)`` each particle's index into them
    group_names: list[str]
    groups: NDArray[np.int64]
    n_shells: int
    #: ``(n_shells,)`` Fourier pixels per shell of the model's grid (2D or 3D)
    npix_per_shell: NDArray[np.float64]
    symmetry: str
    #: ``(n_ops, 3, 3)`` the point group's rotation matrices
    operators: NDArray[np.float64]
    seed: int
    #: ``(ori, ori, ori)`` values in [0, 1], or None without ``--solvent_mask``
    solvent_mask: NDArray[np.float64] | None

    @property
    def n_optics(self) -> int:
        return len(self.optics_boxes)


def input_files(options: RefineOptions) -> tuple[str, str, str | None]:
    """(particles, tomograms, trajectories or None): ``--i``/``--tomograms``/``--trajectories``,
    else the optimisation set's (``--ios``)."""
    o = options
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


def load_inputs(options: RefineOptions, *, seed: int) -> RefineInputs:
    """Read the run's particles, tomograms and solvent mask (not yet the images)."""
    o = options
    particles_file, tomograms_file, trajectories_file = input_files(o)
    tomograms = TomogramSet.read(tomograms_file)
    ps = ParticleSet.read(particles_file, tomograms)  # also refuses NaN/Inf poses, unknown tomograms
    _check_particle_rows(ps, particles_file)
    optics = ps.optics
    for label in ("rlnImageSize", "rlnImagePixelSize"):
        if optics is None or label not in optics.columns:
            raise InputError("particles were not extracted (no %s in the optics table): run Extract "
                             "subtomos first" % label, file=particles_file, table="optics", column=label)
    ori = int(optics["rlnImageSize"].iloc[0])
    pixel_size = float(optics["rlnImagePixelSize"].iloc[0])
    numbers = [int(g) for g in optics["rlnOpticsGroup"]]
    boxes = [int(b) for b in optics["rlnImageSize"]]
    pixel_sizes = [float(px) for px in optics["rlnImagePixelSize"]]
    for row, (box, px) in enumerate(zip(boxes, pixel_sizes)):
        if box < 2 or box % 2 or not px > 0:
            raise InputError(f"optics group {numbers[row]}: image size {box} must be even and the pixel size "
                             f"{px} positive", file=particles_file, table="optics", column="rlnImageSize",
                             row=row + 1)
    optics_index = np.array([numbers.index(int(g)) for g in ps.optics_groups()], dtype=np.int64)
    is_3d = images_are_3d(ps)
    diameter = o.particle_diameter if o.particle_diameter > 0 else (ori - 5) * pixel_size
    store = ParticleStore(
        ps, tomograms, box=np.array(boxes)[optics_index], pixel_size=np.array(pixel_sizes)[optics_index],
        mask_radius=diameter / 2.0, zero_mask=o.zero_mask, do_ctf=o.ctf, intact_first_peak=o.ctf_intact_first_peak,
        preread=o.preread_images, scratch_dir=o.scratch_dir if o.scratch_dir else None, seed=seed,
    )
    tomo_names = ps.tomo_names()
    group_names = sorted(set(tomo_names.tolist()), key=tomograms.names.index)
    symmetry = normalise_symmetry_name(o.symmetry)
    return RefineInputs(
        particles_file=particles_file, tomograms_file=tomograms_file, trajectories_file=trajectories_file,
        tomograms=tomograms, particle_set=ps, store=store, ori=ori, pixel_size=pixel_size,
        optics_boxes=boxes, optics_pixel_sizes=pixel_sizes,
        optics_on_model_grid=[box == ori and abs(px - pixel_size) <= 1e-6 * pixel_size
                              for box, px in zip(boxes, pixel_sizes)],
        optics_index=optics_index, is_3d=is_3d, particle_diameter=diameter,
        mask_radius_px=diameter / (2.0 * pixel_size), group_names=group_names,
        groups=np.array([group_names.index(t) for t in tomo_names], dtype=np.int64),
        n_shells=ori // 2 + 1, npix_per_shell=pixels_per_shell(ori, 3 if is_3d else 2),
        symmetry=symmetry, operators=symmetry_operators(symmetry), seed=seed,
        solvent_mask=_read_solvent_mask(o.solvent_mask, ori) if o.solvent_mask else None,
    )


def _check_particle_rows(ps: ParticleSet, particles_file: str) -> None:
    """An empty particle set, or one particle listed twice (it would count double in both the
    half maps and their FSC), is refused; O(n), from the table alone."""
    if len(ps) == 0:
        raise InputError("the particle set is empty: nothing to refine", file=particles_file, table="particles")
    table = ps.particles
    column = next((c for c in ("rlnImageName", "rlnTomoParticleName") if c in table.columns), None)
    if column is None:
        return
    values = table[column].astype(str)
    repeated = values.duplicated().to_numpy()
    if repeated.any():
        row = int(np.argmax(repeated))
        first = int(np.argmax((values == values.iloc[row]).to_numpy()))
        raise InputError(f"particle {values.iloc[row]!r} is listed twice (also at row {first + 1})",
                         file=particles_file, table="particles", column=column, row=row + 1)


def check_gpu(gpu: str) -> None:
    """``--gpu``: its device list parses, and CuPy sees a CUDA device here (each process checks
    its own device numbers when it starts: the ranks may run on other hosts)."""
    parse_gpu_ids(gpu)
    problem = cupy_problem()
    if problem is not None:
        raise InputError(f"'Use GPU acceleration?' (--gpu) needs CuPy and a CUDA GPU, and this machine has none: "
                         f"{problem}. Run without GPU acceleration, or on a GPU node", column="use_gpu")


def check_run_settings(options: RefineOptions, n_ranks: int) -> None:
    """The settings a run refuses whatever its data: no parallel disc I/O, GPU, an MPI count
    that cannot split the halves (the same checks as :func:`~processing.refine.driver.run_refine`,
    made here so that a job can refuse them before it writes anything). Classification runs
    on any number of processes (rank 0 leads, the others share all particles)."""
    if not options.parallel_disc_io:
        raise InputError("--no_parallel_disc_io is not allowed for subtomogram averaging (RELION forces "
                         "parallel disc I/O on for tomography data)", column="do_parallel_discio")
    if options.gpu is not None:
        check_gpu(options.gpu)
    if options.continue_from and Path(options.continue_from).is_file():
        options = continuation_options(options)      # auto-refine or classification: from the files
    if options.split_random_halves and n_ranks > 1 and (n_ranks < 3 or n_ranks % 2 == 0):
        raise InputError(f"with split random halves the number of MPI processes must be odd and >= 3 "
                         f"(or 1), got {n_ranks}", column="nr_mpi")


def check_inputs(options: RefineOptions, *, n_ranks: int = 1, root: str | Path | None = None) -> None:
    """Everything a run can refuse before it writes anything: settings, the particle and
    tomogram sets, the optics table, the solvent mask and the references (or, on
    ``--continue``, the files of the run continued). Reads no particle image.

    Parameters
    ----------
    n_ranks
        MPI processes the run will have.
    root
        Project directory the run will start in, when it is not the working directory: the
        particle, tomogram and trajectory files (those the optimisation set names too) are
        then found from there.

    Raises
    ------
    InputError
        Naming the file, table, column and row at fault.
    """
    check_run_settings(options, n_ranks)
    o = continuation_options(options) if options.continue_from else options
    if root is not None and not options.continue_from:
        particles, tomograms, trajectories = input_files(o)
        referrer = o.optimisation_set or None
        o = o.with_changes(
            particles=str(resolve_path(particles, root=root, referrer=referrer)),
            tomograms=str(resolve_path(tomograms, root=root, referrer=referrer)),
            trajectories=str(resolve_path(trajectories, root=root, referrer=referrer)) if trajectories else None,
            optimisation_set=None)
    # No scratch copy or pre-read here: this is only the look before the run.
    inputs = load_inputs(o.with_changes(scratch_dir=None, preread_images=False), seed=0)
    if not options.continue_from:
        for f in reference_files(o):
            read_reference(inputs, f, trust_ref_size=o.trust_ref_size)


def _read_solvent_mask(path: str, box: int) -> NDArray[np.float64]:
    m = read_mrc(path).data.astype(np.float64)
    if m.shape != (box,) * 3:
        raise InputError(f"solvent mask has shape {m.shape}, the reference {(box,) * 3}", file=path)
    if m.min() < -1e-6 or m.max() > 1 + 1e-6:
        raise InputError("solvent mask values must lie in [0, 1]", file=path)
    return np.clip(m, 0, 1)


def continuation_options(options: RefineOptions) -> RefineOptions:
    """On ``--continue``, the run's settings come from its optimiser/model/sampling files; the
    options relion_refine lets a continuation change (spec 5.14) are taken from the command line
    when it names them: ``--tau2_fudge``, ``--oversampling``, ``--perturb``, ``--pad``,
    ``--scale``, ``--auto_local_healpix_order``, ``--particle_diameter``, ``--solvent_mask``,
    ``--flatten_solvent`` (on only), ``--auto_ignore_angles``, ``--auto_resol_angles`` and the
    compute options. The sampling itself continues from the sampling file."""
    o = options
    path = Path(o.continue_from)
    if not path.is_file():
        raise InputError("optimiser file to continue from does not exist", file=path)
    if "_it" not in path.name or not path.name.endswith("_optimiser.star"):
        raise InputError("--continue needs a run_itNNN_optimiser.star file", file=path)

    def near(name: str) -> str:
        return str(resolve_path(name, referrer=path)) if name else name

    opt = OptimiserStarContents.read(path)
    samp = SamplingStarContents.read(near(opt.sampling_star_file))
    model = ModelStarContents.read(near(opt.model_star_file))
    # What the command line names explicitly overrides the files (relion_refine reads these with
    # an "OLD" default on --continue); anything else is the run's own setting.
    given = {flag.attr for name, flag in option_flags().items() if name in set(o.command_line)}

    def given_or(attr: str, from_files):
        return getattr(o, attr) if attr in given else from_files

    classification = not opt.do_auto_refine
    return o.with_changes(
        auto_refine=opt.do_auto_refine, split_random_halves=opt.do_split_random_halves,
        n_classes=model.nr_classes if classification else 1,
        n_iterations=given_or("n_iterations", opt.number_of_iterations) if classification else o.n_iterations,
        skip_align=opt.do_skip_align, fast_subsets=opt.do_fast_subsets,
        strict_highres_exp=given_or("strict_highres_exp", opt.highres_limit_expectation),
        particles=near(opt.data_star_file), tomograms=near(opt.tomograms_file) or o.tomograms,
        trajectories=near(opt.trajectories_file) or None, optimisation_set=None,
        symmetry=samp.symmetry, ctf=opt.do_correct_ctf, ctf_intact_first_peak=opt.do_ignore_ctf_until_first_peak,
        zero_mask=opt.do_zero_mask,
        # --flatten_solvent can only switch solvent flattening on
        flatten_solvent=opt.do_solvent_flattening or ("flatten_solvent" in given and o.flatten_solvent),
        solvent_correct_fsc=opt.do_solvent_fsc_correction,
        solvent_mask=o.solvent_mask or (opt.solvent_mask_name if opt.solvent_mask_name not in ("", "None") else None),
        low_resol_join_halves=opt.join_halves_until_resolution,
        auto_local_healpix_order=given_or("auto_local_healpix_order", opt.auto_local_healpix_order),
        particle_diameter=o.particle_diameter if o.particle_diameter > 0 else opt.particle_diameter,
        random_seed=opt.random_seed, scale=given_or("scale", opt.do_correct_scale),
        pad=given_or("pad", int(round(model.padding_factor))),
        tau2_fudge=given_or("tau2_fudge", model.tau2_fudge_factor),
        oversampling=given_or("oversampling", opt.adaptive_oversample_order),
        perturb=given_or("perturb", samp.perturb_factor),
    )


def random_halves(inputs: RefineInputs) -> NDArray[np.int64]:
    """``(n_particles,)`` each particle's half set, 0 or 1: the particles' rlnRandomSubset, or
    relion_refine's split (``srand(random_seed)``, then ``rand() % 2`` per particle in file
    order) when the column is absent or all 0."""
    subsets = inputs.particle_set.random_subset()
    n = len(inputs.particle_set)
    if subsets is None or np.all(subsets == 0):
        generator = GlibcRandom(inputs.seed)
        return np.array([generator.rand() % 2 for _ in range(n)], dtype=np.int64)
    if not np.isin(subsets, (1, 2)).all():
        bad = int(np.flatnonzero(~np.isin(subsets, (1, 2)))[0])
        raise InputError("rlnRandomSubset must be 1 or 2 for every particle (or absent for all)",
                         file=inputs.particles_file, table="particles", column="rlnRandomSubset", row=bad + 1)
    return subsets.astype(np.int64) - 1


def reference_files(options: RefineOptions) -> list[str]:
    """The reference of each half set: a file whose name contains ``half1`` (``half2``) is the
    first (second) half's, and the other half reads the name with the two swapped, as
    relion_refine does (``FileName::getHalf``: only the base name is changed)."""
    if not options.reference:
        raise InputError("a reference map is required (--ref)", column="--ref")
    given = options.reference
    path = Path(given)
    files = []
    for this, other in (("half2", "half1"), ("half1", "half2")):
        name = path.name.replace(this, other) if this in path.name else path.name
        files.append(str(path.with_name(name)) if path.name != name else given)
    for f in files:
        if not Path(f).is_file():
            raise InputError("reference map not found" + (
                f" (the other half set's map, named after {given})" if f != given else ""),
                file=f, column="--ref")
    return files


def read_reference(inputs: RefineInputs, path: str, *, trust_ref_size: bool) -> NDArray[np.float64]:
    """``(ori, ori, ori)`` a reference map on the model's box and pixel size: rescaled and
    windowed when ``trust_ref_size`` (``--trust_ref_size``), else it must already match."""
    ref = read_mrc(path)  # refuses NaN/Inf, complex and corrupt maps, naming the file
    vol = np.asarray(ref.data, dtype=np.float64)
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise InputError(f"reference must be a cubic 3D map, got shape {vol.shape}", file=path)
    if not vol.any():
        # An all-zero map has no power to normalise the first noise and tau² estimates by.
        raise InputError("reference map is all zeros", file=path, column="--ref")
    px = float(ref.pixel_size) if ref.pixel_size else inputs.pixel_size
    if vol.shape[0] == inputs.ori and abs(px - inputs.pixel_size) < 1e-3 * inputs.pixel_size:
        return vol
    if not trust_ref_size:
        raise InputError(
            f"reference box {vol.shape[0]} at {px:.3f} Å/px differs from the particles' "
            f"{inputs.ori} at {inputs.pixel_size:.3f} Å/px; set 'Resize reference if needed?' (--trust_ref_size)",
            file=path)
    return resize_reference(vol, px, inputs.ori, inputs.pixel_size)


def resize_reference(volume: NDArray, pixel: float, box: int, target_pixel: float) -> NDArray[np.float64]:
    """Fourier-rescale a map to ``target_pixel`` (the new size rounded down to even, as
    relion_refine's --trust_ref_size), then window it to ``box``."""
    new = int(math.floor(volume.shape[0] * (pixel / target_pixel) + 0.5))
    new -= new % 2
    return resample_and_window(volume, new_size=new, box=box, ndim=3)
