"""Expectation step for one particle: marginalise over orientations and 3D translations
(spec 5.5), with two-pass adaptive oversampling and the significance threshold.

Formulation (see DESIGN.md, "The refinement engine"). For particle images X_f (premultiplied,
CTF array C_f = CTF², noise σ²(k)) the score of orientation r and translation t is

    diff2(r, t) = Σ_f Σ_k |s C_f V_r,f(k) - X_f(k) e^{-2πi k·p_f(t)/N}|² / (2σ²(k))
                = A(r) - Re[ Σ_{f,k} W_r,f(k) · conj(X_f(k)) e^{+2πi k·p_f(t)/N} ] + const

with V_r,f(k) = V(A_f,r^T k) the central slice at A_f,r = Aproj_f · A(r),
W = s C V / σ², A(r) = Σ s² C² |V|² / (2σ²) and p_f(t) the 3D offset projected into image f.
The cross term for all translations and orientations of a particle is one complex matrix
product (T x FK) @ (FK x R): BLAS does the inner loop. Back-projection sums the shifted images
over translations first, again as a matrix product, before inserting one slice per tilt and
significant orientation.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from processing.backend import get_array_module, to_host
from processing.geometry.euler import euler_to_matrix, matrix_to_euler
from processing.geometry.sampling import (
    AngularSampling, PriorSubset, perturb_rotation_matrices, relion_oversampled_translations,
    select_orientations_with_prior,
)

from . import _array_kernels as AK
from . import _cuda_kernels as CK
from . import _kernels as K
from .frequencies import FrequencySet, cross_correlation_pixels, frequency_set, frequency_set_3d, highres_pixels
from .particles import ParticleImages, relion_round
from .relion_code import RelionCode

__all__ = [
    "Reference", "EStepContext", "ParticleState", "ParticleResult", "HalfAccumulator", "expect_particle",
    "central_slices", "phase_factors", "inverse_noise",
]

#: at most this many rotations per chunk of the reference-side matrix (BLAS works well from
#: a few dozen rows; more only costs memory) ...
ROTATION_CHUNK = 512
#: ... and at most this many bytes of central slices per chunk (per thread): large boxes with
#: many tilts get smaller chunks (a 128-px image with 40 tilts: 2 MB per rotation).
CHUNK_BYTES = 64 * 2**20

#: Work counters of this process (read by benchmarks/refine_bench.py): pose evaluations
#: (orientation x translation pairs scored) and the real floating-point operations of the
#: cross-term products (8 per complex multiply-add).
WORK = {"poses": 0, "matmul_flops": 0.0, "slices": 0}


@dataclass
class Reference:
    """One half's reference, as a centred padded Fourier grid (see processing.fourier.projector).

    A grid on the GPU (a cupy array) makes the E-step of this reference run there, with the
    array-module kernels (:mod:`._array_kernels`); ``array_kernels=True`` runs those kernels
    on a numpy grid too (the GPU's code path, checked on the CPU)."""

    grid: NDArray[np.complex64]
    c: int
    pad: float
    array_kernels: bool = False

    def __post_init__(self) -> None:
        xp = get_array_module(self.grid)
        self.grid = xp.ascontiguousarray(self.grid, dtype=np.complex64)
        self.grid_f32 = self.grid.view(np.float32).reshape(self.grid.shape + (2,))
        self.array_kernels = self.array_kernels or xp is not np

    @property
    def xp(self):
        """The array module the E-step of this reference computes with."""
        return get_array_module(self.grid)

    def on_device(self, xp) -> "Reference":
        """This reference with its grid in ``xp``'s memory (the GPU's for cupy)."""
        return Reference(grid=xp.asarray(self.grid), c=self.c, pad=self.pad, array_kernels=self.array_kernels)


@dataclass
class ParticleState:
    """The hidden-variable state of a particle carried between iterations."""

    angles: NDArray[np.float64]          # (3,) rot, tilt, psi (deg)
    origin: NDArray[np.float64]          # (3,) Å, subtomogram frame
    prior_angles: NDArray[np.float64]    # (3,) rot, tilt, psi prior centres (nan: none)
    origin_prior: NDArray[np.float64]    # (3,) Å
    half: int                            # 0 or 1
    group: int                           # scale-correction group (0-based)
    optics: int = 0                      # optics group (0-based): selects the noise spectrum
    class_number: int = 0                # rlnClassNumber (0: none yet; 1 after the first iteration)
    #: (3,) the offset in the particle's image pixels as relion_refine holds it between
    #: iterations (the search centre plus the fine translation, in its arithmetic): where it
    #: rounds the offset to whole pixels, a value a hair below half a pixel goes the other way
    #: from ``origin / pixel size``. None: ``origin / pixel size``, as RELION reads a STAR file.
    origin_px: NDArray[np.float64] | None = None

    def offset_px(self, pixel_size: float) -> NDArray[np.float64]:
        """The offset in pixels of size ``pixel_size`` (the particle's images)."""
        return self.origin / pixel_size if self.origin_px is None else self.origin_px


@dataclass
class ParticleResult:
    angles: NDArray[np.float64]
    origin: NDArray[np.float64]
    pmax: float
    n_significant: int
    log_likelihood: float
    direction_index: int
    class_index: int = 0             # 0-based class of the best pose
    origin_px: NDArray[np.float64] | None = None   # the new offset as ParticleState.origin_px


@dataclass
class EStepContext:
    """Everything the E-step of one iteration needs besides the particles."""

    ori: int
    pixel_size: float
    references: list[Reference]
    sigma2: NDArray[np.float64]                 # (2, n_optics, n_shells) noise power per half, optics group, shell
    coarse_size: int
    current_size: int
    sampling: AngularSampling
    translations: NDArray[np.float64]           # (T, 3) coarse offsets (px), unperturbed
    offset_step: float                          # coarse step (px)
    perturbation: float                         # random perturbation instance
    sigma_rot: float = 0.0
    sigma_tilt: float = 0.0
    sigma_psi: float = 0.0
    local_search: bool = False                  # prior centres = current angles
    pdf_direction: NDArray[np.float64] | None = None  # (2, n_directions) per half
    sigma_offset: NDArray[np.float64] = field(default_factory=lambda: np.full(2, 10.0))  # (2,) Å, per half
    scales: NDArray[np.float64] | None = None   # (2, n_groups) per half
    scale_ssnr: NDArray[np.float64] | None = None  # (n_shells,) SSNR that selects the scale-correction shells
    firstiter_cc: bool = False
    adaptive_fraction: float = 0.999
    oversampling: int = 1
    is_3d: bool = False
    #: per optics group (box px, pixel Å, current size, coarse size) of its images, None for a
    #: group on the model's grid; empty when every group is
    optics_grids: tuple[tuple[int, float, int, int] | None, ...] = ()
    #: model Fourier shells per image shell: (ori · pixel_size of the model) / (box · pixel of
    #: the images); 1 for the model's own grid
    remap: float = 1.0
    model_current_size: int = 0                 # the model's current size (views of other optics groups)
    #: classes per set (3D classification: K references, one set; auto-refine: 1 per half set).
    #: ``references`` and ``pdf_direction`` hold set-major entries: set s, class k at s·K + k.
    n_classes: int = 1
    #: classification without alignment (``--skip_align``): each particle keeps its pose
    skip_align: bool = False
    #: (n_sets · K,) class prior, used in place of the direction prior when not aligning
    pdf_class: NDArray[np.float64] | None = None
    #: ``--strict_highres_exp``: both passes score at the coarse size (the sums still use the
    #: current size)
    strict_highres: bool = False
    #: the RELION implementation whose rules the E-step follows where they differ: optics
    #: groups of another box (:meth:`projected`, :attr:`phase_box`), the log-likelihood's prior
    #: normalisation and which pixels are back-projected (:mod:`.relion_code`)
    relion_code: RelionCode = RelionCode.CPU
    model_ori: int = 0                          # the model's box (views of other optics groups)
    #: the coarse step in Å as the sampling holds it (0: offset_step · pixel_size), for the
    #: fine translations in relion_refine's arithmetic
    offset_step_angst: float = 0.0
    _views: dict = field(default_factory=dict, repr=False, compare=False)
    _projected: dict = field(default_factory=dict, repr=False, compare=False)

    def for_particle(self, state: "ParticleState") -> "EStepContext":
        """This context in the units of the particle's optics group: its box, pixel size and
        image sizes, translations in its pixels, noise spectra remapped onto its shells, and
        ``remap`` for the reference's coordinates (RELION's ``remap_image_sizes`` and
        ``applyScaleDifference``). The context itself when the group matches the model."""
        grid = self.optics_grids[state.optics] if self.optics_grids else None
        if grid is None:
            return self
        view = self._views.get(state.optics)
        if view is None:
            box, pixel, current, coarse = grid
            remap = (self.ori * self.pixel_size) / (box * pixel)
            to_model = _shell_remap(box // 2 + 1, remap)
            n_model = self.sigma2.shape[-1]
            sigma2 = np.where(to_model < n_model, self.sigma2[..., np.minimum(to_model, n_model - 1)], np.inf)
            factor = self.pixel_size / pixel
            view = replace(self, ori=box, pixel_size=pixel, current_size=current, coarse_size=coarse,
                           sigma2=sigma2, translations=self.translations * factor,
                           offset_step=self.offset_step * factor, remap=remap, optics_grids=(), _views={},
                           _projected={}, model_current_size=self.current_size, model_ori=self.ori)
            self._views[state.optics] = view
        return view

    def to_model_shells(self, sums: NDArray[np.float64], n_model: int) -> NDArray[np.float64]:
        """Per-shell sums over this context's image shells added into the model's shells
        (RELION: image shell i goes to ROUND(i · remap); beyond the model's last shell: dropped)."""
        if self.remap == 1.0 and sums.size == n_model:
            return sums
        index = _shell_remap(sums.size, self.remap)
        inside = index < n_model
        return np.bincount(index[inside], sums[inside], minlength=n_model)[:n_model]

    def frequencies(self, size: int) -> FrequencySet:
        insert_radius = None
        if self.remap != 1.0 and size == self.current_size:
            # Back-projection takes the window's pixels within the model's current radius.
            insert_radius = self.model_current_size / 2.0 / self.remap + 1e-9
        if self.is_3d:
            return frequency_set_3d(self.ori, size, insert_radius)
        return frequency_set(self.ori, size, insert_radius, trim_rows=self.relion_code.trims_inserted_rows)

    def projected(self, freq: FrequencySet) -> NDArray[np.float32]:
        """(K,) 1 at the pixels of ``freq`` that RELION's reference projection fills, 0 at
        the others, which it scores against a zero projection.

        With the model's radius ``R`` (current size / 2), the window's radius ``s/2`` and the
        reference coordinates ``p = pad · remap · |k|``:

        - RELION's accelerated code (``AccProjectorKernel``): ``floor(p²) <= (pad · min(R,
          s/2))²``;
        - its CPU code (``Projector::project``): ``|k| <= s/2`` and ``p² <= floor(pad · R)²``.

        On the model's own grid (``remap = 1``) both are ``|k| <= min(R, s/2)``, which leaves
        out the rest of shell ``s/2`` (its pixels reach ``s/2 + 1/2``). 3D data follow the
        same rules with ``|k|`` in 3D (``Projector::project`` of a volume)."""
        mask = self._projected.get(freq)
        if mask is None:
            k2 = freq.kx**2 + freq.ky**2 + (0.0 if freq.kz is None else freq.kz**2)
            pad = self.references[0].pad
            p2 = (pad * self.remap) ** 2 * k2
            model_radius = (self.model_current_size or self.current_size) // 2
            if not self.relion_code.accelerated:
                inside = (k2 <= (freq.size // 2) ** 2) & (p2 <= math.floor(model_radius * pad) ** 2)
            else:
                # p² is an integer on the model's own grid; the tolerance keeps it one
                inside = np.floor(p2 + 1e-9) <= (min(model_radius, freq.size // 2) * pad) ** 2
            mask = inside.astype(np.float32)
            self._projected[freq] = mask
        return mask

    @property
    def phase_box(self) -> int:
        """The box ``N`` of the likelihood's shift phases ``exp(-2πi k·t/N)``: the image's own,
        as RELION's accelerated code and every back-projection; RELION's CPU code divides by
        the model's box in ``getAllSquaredDifferences``, which scales the scored translations
        of an optics group of another box by box/ori."""
        return self.ori if self.relion_code.accelerated else (self.model_ori or self.ori)

    def noise(self, state: "ParticleState") -> NDArray[np.float64]:
        """(n_shells,) noise spectrum of the particle's half set and optics group."""
        return self.sigma2[state.half, state.optics]

    def scale(self, state: "ParticleState") -> float:
        return 1.0 if self.scales is None else float(self.scales[state.half, state.group])

    def reference_index(self, state: "ParticleState", class_index: int) -> int:
        """Index into ``references`` (and ``pdf_direction``) of the particle's set and a class."""
        return state.half * self.n_classes + class_index


def _shell_remap(n_shells: int, remap: float) -> NDArray[np.int64]:
    """Model shell of each of ``n_shells`` image shells: RELION's ROUND(remap · i)."""
    return np.floor(np.arange(n_shells) * remap + 0.5).astype(np.int64)


@dataclass
class HalfAccumulator:
    """Weighted sums of one half set over an iteration's E-step (spec 5.5 item 6)."""

    data: NDArray[np.complex128]
    weight: NDArray[np.float64]
    c: int
    pad: float
    sigma2_sum: NDArray[np.float64]        # (n_optics, n_shells) Σ w'|diff|² per shell
    r_max: int = 0                         # the model's current radius (px): the insertion sphere
    data_dim: int = 2                      # 2: images, 3: volumes (the map's normalisation)
    sigma2_images: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]  # (n_optics,) images
    highres_sum: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]  # (n_optics, n_shells)
    multiplicity_sum: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]  # (n_optics, n_shells) ΣM, 3D
    ctf2_sum: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]  # (n_optics, n_shells) Σ w' CTF-array
    offset_sum: float = 0.0                # Σ w' |Δorigin|² (Å²)
    weight_sum: float = 0.0                # Σ w' (particles)
    pdf_sum: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]
    scale_xa: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]
    scale_aa: NDArray[np.float64] = field(default=None)  # type: ignore[assignment]
    pmax_sum: float = 0.0
    n_particles: int = 0
    log_likelihood: float = 0.0

    @classmethod
    def create(cls, *, c: int, pad: float, n_shells: int, n_directions: int, n_groups: int,
               n_optics: int = 1, r_max: int | None = None, data_dim: int = 2) -> "HalfAccumulator":
        shape = (2 * c + 1, 2 * c + 1, c + 1)
        return cls(
            data=np.zeros(shape, np.complex128), weight=np.zeros(shape), c=c, pad=pad,
            r_max=int((c - 2) / pad) if r_max is None else int(r_max), data_dim=data_dim,
            sigma2_sum=np.zeros((n_optics, n_shells)), highres_sum=np.zeros((n_optics, n_shells)),
            sigma2_images=np.zeros(n_optics), multiplicity_sum=np.zeros((n_optics, n_shells)),
            ctf2_sum=np.zeros((n_optics, n_shells)),
            pdf_sum=np.zeros(n_directions), scale_xa=np.zeros(n_groups), scale_aa=np.zeros(n_groups),
        )

    def on_device(self, xp) -> "HalfAccumulator":
        """Keep the back-projection grids in ``xp``'s memory (the GPU's for cupy), where the
        E-step of a reference there inserts; :meth:`to_host` brings them back."""
        self.data, self.weight = xp.asarray(self.data), xp.asarray(self.weight)
        return self

    def to_host(self) -> "HalfAccumulator":
        """The back-projection grids back in host memory (for the MPI sums and the M-step)."""
        self.data, self.weight = to_host(self.data), to_host(self.weight)
        return self

    def arrays(self) -> list[NDArray]:
        """The arrays to sum across threads and MPI ranks, in a fixed order."""
        return [self.data, self.weight, self.sigma2_sum, self.sigma2_images, self.highres_sum, self.multiplicity_sum,
                self.ctf2_sum, self.pdf_sum, self.scale_xa, self.scale_aa,
                np.array([self.offset_sum, self.weight_sum, self.pmax_sum, float(self.n_particles),
                          self.log_likelihood])]

    def set_arrays(self, arrays: list[NDArray]) -> None:
        (self.data, self.weight, self.sigma2_sum, self.sigma2_images, self.highres_sum, self.multiplicity_sum,
         self.ctf2_sum, self.pdf_sum, self.scale_xa, self.scale_aa, scalars) = arrays
        (self.offset_sum, self.weight_sum, self.pmax_sum, n, self.log_likelihood) = scalars
        self.n_particles = int(round(n))

    def add(self, other: "HalfAccumulator") -> None:
        self.set_arrays([a + b for a, b in zip(self.arrays(), other.arrays())])


# ---------------------------------------------------------------------------------------


def _orientation_subset(ctx: EStepContext, state: ParticleState, reference: int) -> PriorSubset:
    """The orientations searched and their prior weights. Without orientation priors the
    weights are the class's direction distribution as the M-step left it (in classification
    it sums to the class's share, so the class prior is part of it; in auto-refine, one class,
    it is normalised); with priors, the Gaussian prior alone (relion_refine then uses no class
    prior)."""
    s = ctx.sampling
    if ctx.sigma_rot <= 0 and ctx.sigma_tilt <= 0 and ctx.sigma_psi <= 0:
        pdf = None if ctx.pdf_direction is None else ctx.pdf_direction[reference]
        if pdf is None or pdf.sum() <= 0:
            dw = np.full(s.n_directions, 1.0 / s.n_directions)
        else:
            dw = pdf / pdf.sum() if ctx.n_classes == 1 else pdf
        return PriorSubset(np.arange(s.n_directions), dw, np.arange(s.n_psi), np.full(s.n_psi, 1.0 / s.n_psi))
    centre = state.angles if ctx.local_search else np.where(np.isnan(state.prior_angles), state.angles,
                                                            state.prior_angles)
    return select_orientations_with_prior(
        s, centre[0], centre[1], centre[2], ctx.sigma_rot, ctx.sigma_tilt, ctx.sigma_psi,
    )[0]


def _projected_shifts(rotations: NDArray, offsets_px: NDArray, is_3d: bool) -> NDArray:
    """(T, F, d) shifts of each image for 3D offsets (T, 3) in the subtomogram frame."""
    if is_3d:
        return np.einsum("fij,tj->tfi", rotations, offsets_px)
    return np.einsum("fij,tj->tfi", rotations[:, :2, :], offsets_px)


def image_rotations(per_image: NDArray, searched: NDArray) -> NDArray[np.float64]:
    """(R·F, 3, 3) products P_f · A_r, rows ordered (rotation, image) with the F images fastest,
    of the images' (F, 3, 3) and the searched (R, 3, 3) rotations. ``optimize`` lets einsum
    use one matrix product (about 40x faster than its default loop at these shapes)."""
    return np.einsum("fij,rjk->rfik", per_image, searched, optimize=True).reshape(-1, 3, 3)


def phase_factors(freq: FrequencySet, shifts: NDArray, ori: int, sign: float, *, xp=np) -> NDArray[np.complex64]:
    """exp(sign 2πi k·s/N), shape (T, F, K), computed in ``xp``'s memory.

    The phase is a product over the axes, exp(i a s_x k_x) · exp(i a s_y k_y) (· z), and each
    axis takes a few dozen integer frequencies: the exponentials are taken once per distinct
    value and gathered per pixel (a quarter of the time of one per pixel)."""
    shifts = xp.asarray(shifts)
    scale = sign * 2.0 * np.pi / ori
    out = None
    for axis, (values, index) in enumerate(freq.axis_values):
        table = xp.exp((1j * scale) * shifts[..., axis, None] * xp.asarray(values)).astype(np.complex64)
        factor = xp.take(table, xp.asarray(index), axis=-1)
        out = factor if out is None else out * factor
    return out


def central_slices(
    ref: Reference, rotations: NDArray, freq: FrequencySet, power_weights: NDArray | None = None,
    *, remap: float = 1.0,
) -> tuple[NDArray[np.complex64], NDArray[np.float32]]:
    """Central-slice values ``(n, K)`` at ``freq`` for rotations ``(n, 3, 3)``, and their
    weighted power ``Σ_k |V|² power_weights[m % F, k]`` ``(n,)`` (zeros without weights).
    ``remap`` scales image frequencies to the reference's (see EStepContext.remap). Both live
    where the reference's grid does (see :class:`Reference`)."""
    if ref.array_kernels:
        return _central_slices_array(ref, rotations, freq, power_weights, remap=remap)
    n = rotations.shape[0]
    out = np.empty((n, freq.n), dtype=np.complex64)
    power = np.empty(n, dtype=np.float32)
    if power_weights is None:
        power_weights = np.zeros((1, freq.n), dtype=np.float32)
    power_weights = np.ascontiguousarray(power_weights, dtype=np.float32)
    rot = np.ascontiguousarray(rotations * remap if remap != 1.0 else rotations, dtype=np.float64)
    if freq.kz is None:
        _check_inside_grid(ref, freq, remap)
        K.gather_points(ref.grid_f32, ref.c, rot, ref.pad, freq.kx32, freq.ky32, power_weights, out, power)
    else:
        K.gather_points_3d(ref.grid, ref.c, rot, ref.pad, freq.kx, freq.ky, freq.kz, power_weights, out, power)
    return out, power


def _central_slices_array(
    ref: Reference, rotations: NDArray, freq: FrequencySet, power_weights: NDArray | None, *, remap: float,
) -> tuple[NDArray[np.complex64], NDArray[np.float32]]:
    """:func:`central_slices` with the array-module kernels, in the grid's memory."""
    xp = ref.xp
    if power_weights is None:
        power_weights = xp.zeros((1, freq.n), dtype=np.float32)
    rot = xp.asarray(rotations * remap if remap != 1.0 else rotations, dtype=np.float64)
    if freq.kz is None:
        _check_inside_grid(ref, freq, remap)
        # On the GPU one fused CUDA kernel; with numpy the same arithmetic as array operations.
        kernels = AK if xp is np else CK
        return kernels.gather_points(ref.grid, ref.c, rot, ref.pad, xp.asarray(freq.kx32), xp.asarray(freq.ky32),
                                     xp.asarray(power_weights, dtype=np.float32))
    values, power = AK.gather_points_3d(ref.grid, ref.c, rot, ref.pad, xp.asarray(freq.kx), xp.asarray(freq.ky),
                                        xp.asarray(freq.kz), xp.asarray(power_weights, dtype=np.float32))
    return values, power.astype(np.float32)


def _check_inside_grid(ref: Reference, freq: FrequencySet, remap: float = 1.0) -> None:
    # gather_points has no bounds tests: every sample and its +1 neighbours must be stored.
    if freq.n and int(freq.radius_max * remap * ref.pad) + 1 > ref.c:
        raise ValueError(f"frequencies up to {freq.radius_max * remap:.1f} px exceed the reference grid "
                         f"(c={ref.c}, pad={ref.pad})")


def _multiplicity_powers(ctx: EStepContext) -> tuple[int, int, int]:
    """How many times RELION's CPU path has divided 1/σ² by the 3D multiplicity M (where
    M > 0.1) in (pass 1, pass 2, the back-projection).

    ``precalculateShiftedImagesCtfsAndInvSigma2s`` recomputes 1/σ² only when the image size
    changes, but divides by M on every call, and its weighted-sums call multiplies by M once
    when it did not recompute. So pass 1 scores with 1/(σ²M); pass 2 at an unchanged size (the
    coarse size equals the current size) divides again, 1/(σ²M²), and the back-projection then
    keeps 1/(σ²M); otherwise pass 2 uses 1/(σ²M) and the back-projection 1/σ². With
    ``--oversampling 0`` there is a single pass."""
    if ctx.oversampling > 0 and ctx.coarse_size == ctx.current_size:
        return 1, 2, 1
    return 1, 1, 0


def _divided_by_multiplicity(inv_s2: NDArray, multiplicity: NDArray, power: int) -> NDArray:
    """(F, K) 1/σ² divided by M**power where M > 0.1 (RELION's threshold)."""
    big = multiplicity > 0.1
    return np.where(big, inv_s2 / np.where(big, multiplicity, 1.0) ** power, inv_s2)


def _score(
    ctx: EStepContext, ref: Reference, particle: ParticleImages, freq: FrequencySet,
    part_rot: NDArray, offsets_px: NDArray, scale: float, sigma2: NDArray, *, multiplicity_power: int = 1,
) -> NDArray[np.float64]:
    """diff2 ``(T, R)`` (up to a constant) of all translations x orientations; for the
    first-iteration cross-correlation, minus the correlation (:func:`_cross_correlation_score`).

    The particle-side factors (CTF, 1/σ², the shift phases) are folded into one matrix
    ``Z (T, FK)``, so the cross term is a single real product of the interleaved (re, im)
    slices with conj(Z): Re(V·Z) = V_re·Z_re - V_im·Z_im, half the work of a complex product.
    The Σ|CTF·V|²/σ² term comes out of the gather kernel. The slices and the product are
    computed where the reference lives (the GPU for a cupy grid); diff2 comes back to the host.
    """
    if ctx.firstiter_cc:
        return _cross_correlation_score(ctx, ref, particle, freq.size, part_rot, offsets_px)
    xp = ref.xp
    geo = particle.geometry
    F = geo.rotations.shape[0]
    X = particle.masked.reshape(F, -1)[:, freq.flat]                       # (F, K)
    C = particle.ctf2.reshape(F, -1)[:, freq.flat].astype(np.float32)      # (F, K)
    inv_s2 = inverse_noise(sigma2, freq).astype(np.float32)
    if particle.multiplicity is not None:
        # RELION scores |C V - X|² / (σ² M^p) (empty voxels are already zero); see
        # _multiplicity_powers for p.
        M = particle.multiplicity.reshape(F, -1)[:, freq.flat]
        inv_s2 = _divided_by_multiplicity(inv_s2[None], M, multiplicity_power).astype(np.float32)
    else:
        inv_s2 = np.broadcast_to(inv_s2, C.shape)
    # Pixels the projection leaves empty compare the image with zero: a constant per particle.
    sc = np.float32(scale) * C * ctx.projected(freq)
    z_weight, power_weights = sc * inv_s2, sc * sc * inv_s2
    shifts = _projected_shifts(geo.rotations, offsets_px, ctx.is_3d)         # (T, F, d)
    # conj(Z) = weight · X e^{-2πi k·p/N}, viewed as interleaved float32 (T, 2FK).
    Zc = xp.asarray((X * z_weight).astype(np.complex64))[None] * phase_factors(
        freq, shifts, ctx.phase_box, -1.0, xp=xp)
    Zc = Zc.reshape(len(offsets_px), -1).view(np.float32)
    power_weights = xp.asarray(power_weights, dtype=np.float32)
    R = part_rot.shape[0]
    cross = xp.empty((len(offsets_px), R))
    power = xp.empty(R)
    chunk = _rotation_chunk(xp, F, freq.n)
    for start in range(0, R, chunk):
        rot = part_rot[start:start + chunk]
        r = rot.shape[0]
        total = image_rotations(geo.rotations, rot)
        V, p = central_slices(ref, total, freq, power_weights, remap=ctx.remap)
        power[start:start + r] = p.reshape(r, F).sum(axis=1)
        cross[:, start:start + r] = (V.reshape(r, -1).view(np.float32) @ Zc.T).T
    cross, power = to_host(cross), to_host(power)
    _count_scoring_work(R, len(offsets_px), F, freq.n)
    return 0.5 * power[None, :] - cross


def _cross_correlation_score(
    ctx: EStepContext, ref: Reference, particle: ParticleImages, size: int, part_rot: NDArray, offsets_px: NDArray,
) -> NDArray[np.float64]:
    """``(T, R)`` minus the first-iteration cross-correlation of all translations x
    orientations: RELION's sum over the particle's images of each image's normalised
    correlation ``Σ_k Re(C V X*) / (|C V| |X|)``, the projection's pixels and the image's whole
    window as :func:`cross_correlation_pixels` gives them (a scale correction would cancel)."""
    xp = ref.xp
    geo = particle.geometry
    F = geo.rotations.shape[0]
    pixels, window = cross_correlation_pixels(ctx.ori, size, 3 if ctx.is_3d else 2)
    masked = particle.masked.reshape(F, -1)
    X = masked[:, pixels.flat]
    C = particle.ctf2.reshape(F, -1)[:, pixels.flat].astype(np.float32) * ctx.projected(pixels)
    x_norm = np.sqrt((np.abs(masked[:, window]) ** 2).sum(axis=1))                 # (F,)
    shifts = _projected_shifts(geo.rotations, offsets_px, ctx.is_3d)
    Zc = xp.asarray((X * C).astype(np.complex64))[None] * phase_factors(
        pixels, shifts, ctx.phase_box, -1.0, xp=xp)
    Zc = xp.ascontiguousarray(Zc.view(np.float32).transpose(1, 2, 0))             # (F, 2K, T)
    power_weights = xp.asarray(C * C, dtype=np.float32)
    inv_x = xp.asarray(1.0 / np.maximum(x_norm, 1e-30), dtype=np.float32)
    R = part_rot.shape[0]
    cc = xp.empty((R, len(offsets_px)))
    chunk = _rotation_chunk(xp, F, pixels.n)
    for start in range(0, R, chunk):
        rot = part_rot[start:start + chunk]
        r = rot.shape[0]
        V, p = central_slices(ref, image_rotations(geo.rotations, rot), pixels, power_weights, remap=ctx.remap)
        per_image = xp.matmul(V.reshape(r, F, -1).view(np.float32).transpose(1, 0, 2), Zc)   # (F, r, T)
        norm = inv_x[:, None] / xp.maximum(xp.sqrt(p.reshape(r, F).T), 1e-30)               # (F, r)
        cc[start:start + r] = (per_image * norm[:, :, None]).sum(axis=0)
    _count_scoring_work(R, len(offsets_px), F, pixels.n)
    return -to_host(cc).T


def _count_scoring_work(n_rotations: int, n_translations: int, n_images: int, n_pixels: int) -> None:
    """Add one particle's scoring to :data:`WORK`: its poses, its slices (one per rotation
    and image) and the real flops of the cross-term product over (re, im) of every pixel."""
    WORK["poses"] += n_rotations * n_translations
    WORK["matmul_flops"] += 2.0 * n_rotations * n_translations * n_images * 2 * n_pixels
    WORK["slices"] += n_rotations * n_images


def _rotation_chunk(xp, n_images: int, n_points: int) -> int:
    """Rotations per chunk of :func:`_score`: CHUNK_BYTES of slices on the CPU; on the GPU an
    eighth of the device's free memory (the slices and their gather temporaries, about eight
    times the slices' size), so that large batches keep it busy."""
    per_rotation = 8 * n_images * n_points
    if xp is np:
        return int(max(1, min(ROTATION_CHUNK, CHUNK_BYTES // per_rotation)))
    free, _ = xp.cuda.Device().mem_info
    return int(max(1, free // (8 * 8 * per_rotation)))


def inverse_noise(sigma2: NDArray, freq: FrequencySet) -> NDArray[np.float64]:
    """(K,) 1/σ² per pixel; zero at shell 0, which the likelihood leaves out."""
    return np.where(freq.scored, 1.0 / np.maximum(sigma2[np.minimum(freq.shell, sigma2.size - 1)], 1e-30), 0.0)


def _power_beyond(ctx: EStepContext, particle: ParticleImages) -> NDArray[np.float64]:
    """(ori//2+1,) the particle's masked power per shell beyond the current size (zero below)."""
    n_shells = ctx.ori // 2 + 1
    first = ctx.current_size // 2 + 1
    if particle.shell_power is not None:
        power = particle.shell_power.sum(axis=0)
        return np.where(np.arange(n_shells) >= first, power[:n_shells], 0.0)
    F = particle.masked.shape[0]
    hi_flat, hi_shell = highres_pixels(ctx.ori, ctx.current_size, 3 if ctx.is_3d else 2)
    full = np.abs(particle.masked.reshape(F, -1)[:, hi_flat]) ** 2
    return np.bincount(hi_shell, full.sum(axis=0), minlength=n_shells)[:n_shells]


def _likelihood_constants(
    ctx: EStepContext, particle: ParticleImages, sigma2: NDArray, freq: FrequencySet, *,
    log_prior_rot: NDArray, log_prior_t: NDArray, multiplicity_power: int = 1,
) -> float:
    """What turns log Σ exp(logw) into RELION's ``rlnLogLikeliContribution``
    (``ln Σw − min diff2 − Σ_img Σ_k ln 2πσ²``): the image terms the score leaves out
    (Σ|X|²/2σ² and half the power beyond the current size), the normalisation term, and the
    CPU code's prior normalisations (orientation priors, over every class searched, and offset
    priors divided by their means over the coarse grid), which the accelerated code leaves out
    together with the image power where the CTF is near zero."""
    F = particle.masked.shape[0]
    inv = inverse_noise(sigma2, freq)[None]
    if particle.multiplicity is not None:
        inv = _divided_by_multiplicity(inv, particle.multiplicity.reshape(F, -1)[:, freq.flat], multiplicity_power)
    X = particle.masked.reshape(F, -1)
    power = np.abs(X[:, freq.flat]) ** 2 * inv
    if ctx.relion_code.accelerated:
        # The accelerated code scores each image divided by its CTF with weights C²/σ², but
        # leaves the pixels with |C| <= 1e-8 undivided (getAllSquaredDifferences, its
        # "pixel_correction"): their weight all but zeroes them in every squared difference, so
        # their power is not in its log-likelihood. Poses and weights do not depend on them.
        power = np.where(np.abs(particle.ctf2.reshape(F, -1)[:, freq.flat]) > _ACCELERATED_CTF_FLOOR, power, 0.0)
    image_term = float(power.sum()) / 2.0
    image_term += float(_power_beyond(ctx, particle).sum()) / 2.0
    scored_sigma2 = sigma2[freq.shell[freq.scored]]
    # Image shells beyond the model's last shell (other optics groups) are not scored.
    log_norm = F * float(np.log(2.0 * np.pi * scored_sigma2[np.isfinite(scored_sigma2)]).sum())
    if ctx.relion_code.accelerated:
        # The accelerated code weighs by the priors as they are (AccUtilities::initOrientations).
        return -image_term - log_norm
    return -_log_mean(log_prior_rot) - _log_mean(log_prior_t) - image_term - log_norm


#: Below this |C| relion_refine's accelerated code does not divide an image pixel by its CTF.
_ACCELERATED_CTF_FLOOR = 1e-8


def _log_mean(log_values: NDArray) -> float:
    """log of the mean of exp(log_values), without overflow."""
    top = float(log_values.max())
    return top + float(np.log(np.mean(np.exp(log_values - top))))


def _offset_log_prior(ctx: EStepContext, state: ParticleState, centre_px: NDArray, offsets_px: NDArray) -> NDArray:
    """log P(offset) at the coarse translations ``offsets_px`` (T, 3) around the search centre
    ``centre_px`` (3,), as relion_refine 5.0 evaluates it
    (``convertAllSquaredDifferencesToWeights``): the centre and the prior in pixels plus the
    search translation in Å, the sum scaled by the pixel size, against σ_offset in Å. The
    translation term is therefore ``pixel_size`` times stiffer than the model's σ_offset says;
    matching RELION's poses (refine_demo fixture) needs it."""
    px = ctx.pixel_size
    v = (centre_px - state.origin_prior / px)[None, :] + offsets_px * px
    d2 = (v**2).sum(axis=1) * px * px
    return -d2 / (2.0 * float(ctx.sigma_offset[state.half]) ** 2)


def _fine_translations(ctx: EStepContext, coarse: NDArray[np.int64], oversampling: int) -> NDArray[np.float64]:
    """(len(coarse), 2**(3·os), 3) pixels: the oversampled children of the coarse
    translations ``coarse`` (indices into ``ctx.translations``) in relion_refine's arithmetic,
    moved by the random perturbation as the coarse ones are."""
    step_angst = ctx.offset_step_angst or ctx.offset_step * ctx.pixel_size
    indices = np.rint(ctx.translations[coarse] / ctx.offset_step)
    fine = relion_oversampled_translations(indices, step_angst, ctx.pixel_size, oversampling)
    return fine + ctx.perturbation * ctx.offset_step if ctx.perturbation else fine


def _significant(weights: NDArray, fraction: float) -> NDArray[np.bool_]:
    """Boolean mask of the largest weights whose sum first reaches ``fraction`` of the total.

    Only weights above ``(1 - fraction) * total / (2 n)`` are sorted: all the others together
    hold less than the ``1 - fraction`` left out, so the chosen set lies among them (exact).
    """
    flat = weights.ravel()
    total = flat.sum()
    candidates = np.flatnonzero(flat > (1.0 - fraction) * total / (2.0 * flat.size))
    order = candidates[np.argsort(flat[candidates])[::-1]]
    csum = np.cumsum(flat[order])
    n = min(int(np.searchsorted(csum, fraction * total) + 1), order.size)
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:n]] = True
    return mask.reshape(weights.shape)


@dataclass
class _ClassSearch:
    """One class's coarse orientations in a particle's search: grid indices, rotation
    matrices and log prior weights."""

    k: int
    reference: int
    d_idx: NDArray[np.int64]
    p_idx: NDArray[np.int64]
    rot: NDArray[np.float64]
    log_prior: NDArray[np.float64]


def _class_searches(ctx: EStepContext, state: ParticleState, classes: Sequence[int]) -> list[_ClassSearch]:
    sampling = ctx.sampling
    coarse_step = sampling.angular_step(0)
    out = []
    for k in classes:
        reference = ctx.reference_index(state, k)
        if ctx.skip_align:
            # Classification without alignment: the particle's own pose, the class prior alone.
            rot = euler_to_matrix(*state.angles)[None]
            prior = 1.0 if ctx.pdf_class is None else float(ctx.pdf_class[reference])
            out.append(_ClassSearch(k, reference, np.zeros(1, np.int64), np.zeros(1, np.int64), rot,
                                    np.array([np.log(prior + 1e-300)])))
            continue
        subset = _orientation_subset(ctx, state, reference)
        # Coarse orientations (direction outer, psi inner) with their prior weights.
        d_idx = np.repeat(subset.dir_index, subset.psi_index.size)
        p_idx = np.tile(subset.psi_index, subset.dir_index.size)
        log_prior = np.log(np.repeat(subset.dir_weight, subset.psi_index.size) *
                           np.tile(subset.psi_weight, subset.dir_index.size) + 1e-300)
        rot = perturb_rotation_matrices(
            euler_to_matrix(sampling.rot[d_idx], sampling.tilt[d_idx], sampling.psi[p_idx]),
            ctx.perturbation, coarse_step)
        out.append(_ClassSearch(k, reference, d_idx, p_idx, rot, log_prior))
    return out


def expect_particle(
    ctx: EStepContext, particle: ParticleImages, state: ParticleState,
    acc: HalfAccumulator | Sequence[HalfAccumulator] | None,
    *, lock: AbstractContextManager | None = None, classes: Sequence[int] | None = None,
) -> ParticleResult:
    """Run both E-step passes for one particle and add its weighted sums to ``acc``
    (under ``lock``, when threads share the accumulators).

    ``acc`` is one accumulator per class of the particle's set (a single one when the set has
    one class); ``classes`` restricts the marginalisation to those classes (0-based; default
    all): relion_refine's first classification iteration gives each particle one random class,
    and a first cross-correlation iteration uses class 1 only. Every class is scored on the
    same coarse orientations and translations; the significant samples are chosen over all of
    them together, as the hidden variables (class, orientation, translation) form one grid."""
    ctx = ctx.for_particle(state)
    K = ctx.n_classes
    if classes is None:
        classes = range(K)
    accs: list[HalfAccumulator | None]
    if acc is None:
        accs = [None] * K
    elif isinstance(acc, HalfAccumulator):
        accs = [acc]
    else:
        accs = list(acc)
    scale = ctx.scale(state)
    sigma2 = ctx.noise(state)
    os_ = 0 if ctx.skip_align else ctx.oversampling
    sampling = ctx.sampling
    coarse_step = sampling.angular_step(0)
    searches = _class_searches(ctx, state, classes)
    if ctx.skip_align:
        trans = np.zeros((1, 3))
        offset_grid = trans
    else:
        trans = ctx.translations + ctx.perturbation * ctx.offset_step
        offset_grid = ctx.translations
    # The search is centred on the old offset: exactly for 2D stacks, whose shifts are applied
    # here in Fourier space; rounded to whole pixels for volumes, which the store has already
    # moved by that much (relion_refine drops the fraction, getFourierTransformsAndCtfs). The
    # accelerated code rounds it for 2D stacks too (its old offset is rounded before the
    # translations are added), so there the offsets stay on the grid of the rounded centre.
    if particle.preshift_px is None:
        centre_px = state.offset_px(ctx.pixel_size)
        if ctx.relion_code.accelerated:
            centre_px = relion_round(centre_px)
        origin_px = centre_px
    else:
        centre_px = particle.preshift_px
        origin_px = np.zeros(3)
    # The prior is evaluated at the unperturbed coarse translations (RELION's
    # sampling.translations; the perturbation only moves the shifts applied to the images).
    log_prior_t = np.zeros(1) if ctx.skip_align else _offset_log_prior(ctx, state, centre_px, offset_grid)

    # ---- pass 1: coarse grid at the coarse image size, every class side by side
    powers = _multiplicity_powers(ctx) if not ctx.skip_align else (1, 1, 0)
    freq_c = ctx.frequencies(ctx.current_size if ctx.skip_align else ctx.coarse_size)
    diff2 = np.concatenate([
        _score(ctx, ctx.references[c.reference], particle, freq_c, c.rot, origin_px[None] + trans, scale, sigma2,
               multiplicity_power=powers[0]) for c in searches], axis=1)
    log_prior_rot = np.concatenate([c.log_prior for c in searches])
    column_class = np.concatenate([np.full(c.rot.shape[0], j) for j, c in enumerate(searches)])
    column_start = np.concatenate([[0], np.cumsum([c.rot.shape[0] for c in searches])])
    if ctx.firstiter_cc:
        # Hard assignment by normalised cross-correlation: priors only restrict the search.
        logw = -diff2
        best = np.unravel_index(np.argmax(logw), logw.shape)
        significant = np.zeros(logw.shape, dtype=bool)
        significant[best] = True
    else:
        logw = -diff2 + log_prior_rot[None, :] + log_prior_t[:, None]
        w = np.exp(logw - logw.max())
        significant = _significant(w, ctx.adaptive_fraction)
    n_significant = int(significant.sum())

    # ---- pass 2: oversampled children of the significant coarse pairs at the current size
    freq_f = ctx.frequencies(ctx.current_size)
    freq_score = ctx.frequencies(ctx.coarse_size) if ctx.strict_highres else freq_f
    sig_t, sig_r = np.nonzero(significant)
    ut, t_inv = np.unique(sig_t, return_inverse=True)
    if ctx.skip_align:
        fine_t = trans.copy()
        n_child_t = 1
    else:
        fine_t = _fine_translations(ctx, ut, os_)                                   # (nt, 8, 3)
        n_child_t = fine_t.shape[1]
        fine_t = fine_t.reshape(-1, 3)
    blocks = []    # per class with significant samples: (search, coarse cols, fine rotations, diff2, valid)
    for j, c in enumerate(searches):
        in_class = column_class[sig_r] == j
        if not in_class.any():
            continue
        ur, r_inv = np.unique(sig_r[in_class] - column_start[j], return_inverse=True)
        if ctx.skip_align:
            fine_rot = c.rot
            n_child_r = 1
        else:
            rot_c, tilt_c, psi_c = sampling.oversampled(c.d_idx[ur], c.p_idx[ur], os_)   # (nr, 8)
            n_child_r = rot_c.shape[1]
            fine_rot = perturb_rotation_matrices(euler_to_matrix(rot_c, tilt_c, psi_c), ctx.perturbation,
                                                 coarse_step).reshape(-1, 3, 3)
        if ctx.skip_align and not ctx.strict_highres:
            # one pose per class, already scored at the current size in pass 1
            d2 = diff2[:, column_start[j]:column_start[j + 1]]
        else:
            d2 = _score(ctx, ctx.references[c.reference], particle, freq_score, fine_rot, origin_px[None] + fine_t,
                        scale, sigma2, multiplicity_power=powers[1])
        parent_ok = np.zeros((ut.size, ur.size), dtype=bool)
        parent_ok[t_inv[in_class], r_inv] = True
        valid = np.repeat(np.repeat(parent_ok, n_child_t, axis=0), n_child_r, axis=1)
        logw2 = -d2
        if not ctx.firstiter_cc:
            t_prior = log_prior_t if ctx.skip_align else log_prior_t[ut]
            logw2 = logw2 + np.repeat(c.log_prior[ur], n_child_r)[None, :] + np.repeat(t_prior, n_child_t)[:, None]
        blocks.append((c, ur, n_child_r, fine_rot, np.where(valid, logw2, -np.inf)))
    logw2 = np.concatenate([b[4] for b in blocks], axis=1)
    if ctx.firstiter_cc:
        best2 = np.unravel_index(np.argmax(logw2), logw2.shape)
        w2 = np.zeros(logw2.shape)
        w2[best2] = 1.0
        # RELION's rlnLogLikeliContribution of a cross-correlation iteration: the best
        # correlation averaged over the particle's images.
        log_sum = float(logw2[best2]) / particle.geometry.rotations.shape[0]
    else:
        top = logw2.max()
        w2 = np.exp(logw2 - top)
        total = w2.sum()
        w2 /= total
        log_sum = float(np.log(total) + top) + _likelihood_constants(
            ctx, particle, sigma2, freq_score, log_prior_rot=log_prior_rot, log_prior_t=log_prior_t,
            multiplicity_power=powers[1])
    bt, br = np.unravel_index(np.argmax(w2), w2.shape)
    pmax = float(w2[bt, br])
    block_start = np.concatenate([[0], np.cumsum([b[3].shape[0] for b in blocks])])
    b_best = int(np.searchsorted(block_start, br, side="right") - 1)
    c_best, ur_best, n_child_best, fine_best, _ = blocks[b_best]
    col = br - block_start[b_best]
    angles = np.array([float(a) for a in matrix_to_euler(fine_best[col])])
    new_origin_px = centre_px + fine_t[bt]
    new_origin = new_origin_px * ctx.pixel_size
    direction = int(c_best.d_idx[ur_best[col // n_child_best]])

    if any(a is not None for a in accs):
        sig2 = w2 >= 0.0 if ctx.firstiter_cc else _significant(w2, ctx.adaptive_fraction)
        # RELION keeps each significant weight normalised by the sum over all samples.
        w_sig = np.where(sig2, w2, 0.0)
        for b, (c, ur, n_child_r, fine_rot, _) in enumerate(blocks):
            w_class = w_sig[:, block_start[b]:block_start[b + 1]]
            target = accs[c.k] if c.k < len(accs) else None
            if target is None or not w_class.any():
                continue
            is_best = b == b_best
            _accumulate(ctx, ctx.references[c.reference], particle, state, target, freq_f, fine_rot, origin_px,
                        centre_px, fine_t, w_class, scale, c.d_idx[ur], n_child_r,
                        pmax=pmax if is_best else 0.0, log_likelihood=log_sum if is_best else 0.0,
                        lock=lock, multiplicity_power=powers[2], count_particle=is_best)
    return ParticleResult(angles=angles, origin=new_origin, origin_px=new_origin_px, pmax=pmax,
                          n_significant=n_significant, log_likelihood=log_sum, direction_index=direction,
                          class_index=int(c_best.k))


def _accumulate(
    ctx: EStepContext, ref: Reference, particle: ParticleImages, state: ParticleState, acc: HalfAccumulator,
    freq: FrequencySet, fine_rot: NDArray, origin_px: NDArray, centre_px: NDArray, fine_t: NDArray, w: NDArray,
    scale: float, coarse_dirs: NDArray, n_child_r: int, *, pmax: float, log_likelihood: float,
    lock: AbstractContextManager | None, multiplicity_power: int = 0, count_particle: bool = True,
) -> None:
    """Back-projection, noise, offset, direction and scale sums of the significant samples,
    added to ``acc`` under ``lock`` (threads share the accumulator): the insertion chunk by
    chunk of significant orientations (bounded memory), the sums once at the end.
    ``origin_px`` is the shift still to apply to the images, ``centre_px`` the offset the
    translations ``fine_t`` are relative to (both px). ``w`` holds the weights of one class;
    the particle's pmax, likelihood and count go to the accumulator of its best class
    (``count_particle``). The slices, products and insertion run where the reference lives
    (the accumulator's grids then live there too); the per-shell sums come back to the host."""
    xp = ref.xp
    geo = particle.geometry
    F = geo.rotations.shape[0]
    rows = np.flatnonzero(w.sum(axis=1) > 0)
    cols = np.flatnonzero(w.sum(axis=0) > 0)
    wt = w[np.ix_(rows, cols)]                                             # (T', R')
    w_r = wt.sum(axis=0)                                                   # (R',)
    shifts = _projected_shifts(geo.rotations, origin_px[None] + fine_t[rows], ctx.is_3d)
    E = phase_factors(freq, shifts, ctx.ori, -1.0, xp=xp).reshape(len(rows), -1)    # (T', FK)
    X = xp.asarray(particle.images.reshape(F, -1)[:, freq.flat])
    Xm = xp.asarray(particle.masked.reshape(F, -1)[:, freq.flat])
    C_host = particle.ctf2.reshape(F, -1)[:, freq.flat]
    C = xp.asarray(C_host)
    # The sums take 1/σ² (RELION: "for storeWeightedSums the factor M should not be there"),
    # or 1/(σ²M) after its double division (see _multiplicity_powers); the multiplicity also
    # enters the noise normalisation. The origin pixel, which the likelihood leaves out, is
    # back-projected with 1/σ²(0) (storeWeightedSums restores it after any division).
    sigma2 = ctx.noise(state)
    inv_s2 = np.broadcast_to(inverse_noise(sigma2, freq), C_host.shape)
    if particle.multiplicity is not None and multiplicity_power:
        inv_s2 = _divided_by_multiplicity(inv_s2, particle.multiplicity.reshape(F, -1)[:, freq.flat],
                                          multiplicity_power)
    inv_s2 = xp.asarray(np.where(freq.shell == 0, 1.0 / max(float(sigma2[0]), 1e-30), inv_s2))
    # Back-projection of the unmasked images, for the pixels with |k| <= size/2 only.
    ins = xp.asarray(np.flatnonzero(freq.inserted))          # integer indices: the GPU's arrays take them
    # Premultiplied images already carry the CTF (C = CTF²) and are inserted as they are, with
    # weight s C; otherwise X is multiplied by s C (C = CTF) and the weight is s² C²
    # (storeWeightedSums scales the CTF array once by the group's scale in both cases).
    if particle.premultiplied:
        data_factor = inv_s2[:, ins]
        weight_factor = scale * C[:, ins] * inv_s2[:, ins]
    else:
        data_factor = scale * C[:, ins] * inv_s2[:, ins]
        weight_factor = (scale * scale) * C[:, ins] * C[:, ins] * inv_s2[:, ins]
    weighted_images = X[:, ins] * data_factor
    strong = xp.asarray(np.flatnonzero(_strong_pixels(ctx, freq))) if ctx.scales is not None else None
    # The significant orientations in chunks of bounded size: a wide local search at the full
    # image size has hundreds of them, and (R', F, K) arrays of each would take gigabytes.
    # The residuals compare the image with zero where the projection leaves pixels empty.
    C_projected = C * xp.asarray(ctx.projected(freq))
    resid = xp.zeros((F, freq.n))
    xa = aa = 0.0
    rot_all = image_rotations(geo.rotations, fine_rot[cols])                # (R'·F, 3, 3)
    chunk = _rotation_chunk(xp, F, freq.n)
    for start in range(0, len(cols), chunk):
        part = slice(start, min(start + chunk, len(cols)))
        n_part = part.stop - part.start
        shift_sum = (xp.asarray(wt[:, part].T.astype(np.complex64)) @ E).reshape(n_part, F, -1)  # (r, F, K)
        rot = rot_all[part.start * F:part.stop * F]
        V = central_slices(ref, rot, freq, remap=ctx.remap)[0].reshape(n_part, F, -1)
        CV = scale * C_projected[None] * V
        values = (shift_sum[..., ins] * weighted_images[None]).reshape(n_part * F, -1).astype(np.complex128)
        w_part = xp.asarray(w_r[part])
        weights = (w_part[:, None, None] * weight_factor[None]).reshape(n_part * F, -1)
        # Noise: Σ w' |s C V - Xm_shift|² per shell, over the significant samples only, so the
        # image power counts Σ w' (about the adaptive fraction, 0.999) times, as in storeWeightedSums.
        mshift = shift_sum * Xm[None]
        resid += (w_part[:, None, None] * (xp.abs(CV) ** 2) - 2.0 * (CV * xp.conj(mshift)).real).sum(axis=0)
        if strong is not None:
            # the scale correction over the shells where the reference's SSNR (half 1's) exceeds 3
            xa += float((CV[..., strong] * xp.conj(mshift[..., strong])).real.sum()) / max(scale, 1e-12)
            aa += float((w_part[:, None, None] * xp.abs(CV[..., strong]) ** 2).sum()) / max(scale * scale, 1e-12)
        with lock or nullcontext():
            _scatter(acc, rot * ctx.remap, freq, values, weights.astype(np.float64), freq.inserted,
                     array_kernels=ref.array_kernels)
    resid += float(w_r.sum()) * (xp.abs(Xm) ** 2)
    # Per-shell sums over the image's shells, then onto the model's (other optics groups).
    n_shells = ctx.ori // 2 + 1
    n_model = acc.sigma2_sum.shape[1]
    measured = freq.measured
    noise = np.bincount(freq.shell[measured], to_host(resid.sum(axis=0))[measured], minlength=n_shells)[:n_shells]
    noise = ctx.to_model_shells(noise, n_model)
    multiplicity = None
    if particle.multiplicity is not None:
        per_pixel = particle.multiplicity.reshape(F, -1)[:, freq.flat].sum(axis=0)
        multiplicity = np.bincount(freq.shell[measured], per_pixel[measured], minlength=n_shells)[:n_shells]
        multiplicity = ctx.to_model_shells(multiplicity, n_model)
    # Image power beyond the current size, for the next iteration's larger images; it is part
    # of the noise sums once per particle, not once per class.
    highres = ctx.to_model_shells(_power_beyond(ctx, particle), n_model)
    # Σ w' CTF-array per shell (classification's average CTF² for τ² of premultiplied data).
    ctf2_shells = ctx.to_model_shells(
        np.bincount(freq.shell[measured], C_host.sum(axis=0)[measured], minlength=n_shells)[:n_shells],
        n_model) * float(w_r.sum())
    # Offsets (Å²) relative to the prior and the direction distribution.
    total = (centre_px[None] + fine_t[rows]) * ctx.pixel_size
    d2 = ((total - state.origin_prior[None]) ** 2).sum(axis=1)
    with lock or nullcontext():
        acc.sigma2_sum[state.optics] += noise
        if count_particle:
            acc.sigma2_images[state.optics] += F
            if multiplicity is not None:
                acc.multiplicity_sum[state.optics] += multiplicity
            acc.highres_sum[state.optics] += highres
        acc.offset_sum += float((wt.sum(axis=1) * d2).sum())
        acc.weight_sum += float(w_r.sum())
        np.add.at(acc.pdf_sum, coarse_dirs[cols // n_child_r], w_r)
        acc.scale_xa[state.group] += float(xa)
        acc.scale_aa[state.group] += float(aa)
        acc.ctf2_sum[state.optics] += ctf2_shells
        if count_particle:
            acc.pmax_sum += pmax
            acc.n_particles += 1
            acc.log_likelihood += log_likelihood


def _strong_pixels(ctx: EStepContext, freq: FrequencySet) -> NDArray[np.bool_]:
    """(K,) pixels whose shell has SSNR > 3 (RELION's data_vs_prior of half 1)."""
    if ctx.scale_ssnr is None:
        return freq.measured
    return (ctx.scale_ssnr[np.minimum(freq.shell, ctx.scale_ssnr.size - 1)] > 3.0) & freq.measured


def _scatter(acc: HalfAccumulator, rot: NDArray, freq: FrequencySet, values: NDArray, weights: NDArray,
             pixels: NDArray[np.bool_], *, array_kernels: bool = False) -> None:
    # The numba and the array-module insertions share their signatures; the arrays go where
    # the accumulator's grids are (a no-op on the CPU).
    kernels = AK if array_kernels else K
    xp = get_array_module(acc.data)
    r = xp.asarray(np.ascontiguousarray(rot, dtype=np.float64))
    kx, ky = xp.asarray(freq.kx[pixels]), xp.asarray(freq.ky[pixels])
    values, weights = xp.asarray(values), xp.asarray(weights)
    if freq.kz is None:
        # 2D slices: every pixel with |k| <= r_max. RELION (backproject2Dto3D) decides the pixels
        # exactly on that circle by the last bits of its matrices; keeping them all matched its
        # Nyquist-shell FSC best (within 0.006 on three data sets; its double-precision ellipse
        # rule on our matrices gave 0.02-0.07, the accelerated kernels' float rule 0.01).
        kernels.scatter_points(acc.data, acc.weight, acc.c, r, acc.pad, kx, ky, values, weights)
    else:
        # 3D volumes (backrotate3D): |p|^2 truncated to an integer against int(r_max * pad)^2.
        limit = float(int(acc.r_max * acc.pad) ** 2)
        kernels.scatter_points_3d(acc.data, acc.weight, acc.c, r, acc.pad, kx, ky, xp.asarray(freq.kz[pixels]), values,
                                  weights, limit)
