"""Pose sampling for refinement: directions x psi x translations (spec 5.5, 5.7, 5.8).

The coarse grid is RELION's: HEALPix directions restricted to the asymmetric unit
(:mod:`.healpix`), a psi grid, and a Cartesian translation grid inside a sphere (3D) or
disc (2D). Adaptive oversampling refines each coarse pose into ``2**(3 os)`` orientations and
``2**(dim os)`` translations. Orientations are (rot, tilt, psi) in degrees (RELION ZYZ,
spec 2.1); translations are in the unit of ``offset_range``/``offset_step`` (RELION keeps
them in Angstrom; divide by the pixel size for pixels).

Angular priors (spec 5.8) restrict the directions and psi angles per particle, with Gaussian
weights, the same way as RELION's ``selectOrientationsWithNonZeroPriorProbability``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ..errors import InputError
from ..glibc_random import GlibcRandom, relion_rnd_unif
from .euler import euler_to_matrix, matrix_to_euler
from .healpix import (
    asymmetric_unit_directions,
    default_psi_step,
    direction_vectors,
    healpix_angular_step,
    oversampled_orientations,
    psi_grid,
)
from .symmetry import SymmetryGroup, direction_mates, normalise_symmetry_name, symmetry_group

__all__ = [
    "translation_grid",
    "oversampled_translations",
    "relion_oversampled_translations",
    "AngularSampling",
    "TranslationSampling",
    "SamplingGrid",
    "make_sampling",
    "real_wrap",
    "next_random_perturbation",
    "perturb_rotation_matrices",
    "perturb_orientations",
    "perturb_translations",
    "PriorSubset",
    "select_orientations_with_prior",
]

# RELION adds 1e-3 to range^2 for 2D translations ("prevent precision errors"), not in 3D.
_EPS_2D = 0.001


# ---------------------------------------------------------------------------------------
# Translations
# ---------------------------------------------------------------------------------------

def translation_grid(offset_range: float, offset_step: float, dim: int = 3) -> NDArray[np.float64]:
    """Coarse translations ``(ix, iy[, iz]) * step`` inside the search sphere/disc.

    Indices run over ``-m .. m`` with ``m = ceil(range / step)``; x outermost, z innermost
    (RELION's order). 3D keeps ``|t|^2 <= range^2``; 2D keeps ``|t|^2 < range^2 + 0.001``.

    Parameters
    ----------
    offset_range
        Search radius (Angstrom or pixels), >= 0.
    offset_step
        Grid step in the same unit, > 0.
    dim
        2 or 3.

    Returns
    -------
    (n, dim) float64 translations, same unit as the inputs. Range 5, step 2: 81 points in
    3D, 21 in 2D.
    """
    if dim not in (2, 3):
        raise InputError(f"translation dimension must be 2 or 3, got {dim!r}")
    if not offset_step > 0:
        raise InputError(f"offset step must be positive, got {offset_step!r}")
    if not offset_range >= 0:
        raise InputError(f"offset range must be >= 0, got {offset_range!r}")
    x = offset_range / offset_step
    m = int(x) if x == int(x) else int(x) + 1
    idx = np.arange(-m, m + 1)
    grids = np.meshgrid(*([idx] * dim), indexing="ij")
    t = np.stack([g.ravel() for g in grids], axis=-1) * float(offset_step)
    r2 = np.sum(t * t, axis=-1)
    if dim == 3:
        keep = r2 <= offset_range * offset_range
    else:
        keep = r2 < offset_range * offset_range + _EPS_2D
    return t[keep]


def relion_oversampled_translations(
    indices: ArrayLike, step_angst: float, pixel_size: float, oversampling: int = 1
) -> NDArray[np.float64]:
    """relion_refine's fine translations in pixels, bit for bit (``getTranslationsInPixel``):
    each axis of the coarse translation ``index * step_angst`` gives the children
    ``(t - step/2) + (k + 1/2) * step / 2**os`` in Å, in that order of operations, each divided
    by ``pixel_size``. The last bits matter because relion_refine rounds the offset they add
    up to (the next search centre, the pre-shift of volumes): a 16.2 Å step at 8.1 Å/px gives
    0.49999999999999989 px for half a pixel, which rounds to 0, not 1.

    Parameters
    ----------
    indices
        (..., dim) integer coarse-grid indices.
    step_angst
        Coarse step (Å).
    pixel_size
        The images' pixel size (Å).
    oversampling
        Adaptive oversampling order (0: the coarse translations themselves).

    Returns
    -------
    (..., 2**(dim*os), dim) float64 pixels; x outermost, last axis innermost (RELION's order).
    """
    t = np.asarray(indices, dtype=np.float64) * float(step_angst)
    dim = t.shape[-1]
    if oversampling == 0:
        return (t / pixel_size)[..., None, :]
    n = 1 << oversampling
    k = np.arange(n, dtype=np.float64)
    per_axis = ((t[..., :, None] - 0.5 * step_angst) + (0.5 + k) * step_angst / n) / pixel_size   # (..., dim, n)
    grids = np.meshgrid(*([np.arange(n)] * dim), indexing="ij")
    children = np.stack([g.ravel() for g in grids], axis=-1)                                     # (n**dim, dim)
    axes = np.arange(dim)
    return per_axis[..., axes[None, :], children]


def oversampled_translations(
    translations: ArrayLike, offset_step: float, oversampling: int = 1
) -> NDArray[np.float64]:
    """Oversampled children ``t - step/2 + (k + 1/2) step / 2**os`` per axis of coarse translations.

    Parameters
    ----------
    translations
        (..., dim) coarse translations.
    offset_step
        Coarse step (same unit).
    oversampling
        Adaptive oversampling order (os = 1: ``t +- step/4`` per axis).

    Returns
    -------
    (..., 2**(dim*os), dim) float64; x outermost, last axis innermost (RELION's order).
    """
    t = np.asarray(translations, dtype=np.float64)
    return relion_oversampled_translations(t / offset_step, offset_step, 1.0, oversampling)


# ---------------------------------------------------------------------------------------
# Sampling objects
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class AngularSampling:
    """Coarse orientations: asymmetric-unit HEALPix directions x psi.

    Attributes
    ----------
    healpix_order
        Coarse HEALPix order.
    symmetry
        Canonical symmetry name.
    psi_step
        Actual psi step (degrees), ``360 / ceil(360 / requested)``.
    pix
        (D,) NEST pixel of each direction.
    rot, tilt
        (D,) direction angles (degrees).
    psi
        (P,) psi angles (degrees, in [0, 360)).
    limit_tilt
        RELION ``--limit_tilt`` used (-91: none).
    """

    healpix_order: int
    symmetry: str
    psi_step: float
    pix: NDArray[np.int64] = field(repr=False)
    rot: NDArray[np.float64] = field(repr=False)
    tilt: NDArray[np.float64] = field(repr=False)
    psi: NDArray[np.float64] = field(repr=False)
    limit_tilt: float = -91.0

    @classmethod
    def create(
        cls,
        healpix_order: int,
        symmetry: str = "C1",
        psi_step: float | None = None,
        *,
        limit_tilt: float = -91.0,
    ) -> "AngularSampling":
        """Build the coarse angular sampling (psi step defaults to the HEALPix step)."""
        dirs = asymmetric_unit_directions(healpix_order, symmetry, limit_tilt=limit_tilt)
        psi, step = psi_grid(default_psi_step(healpix_order) if psi_step is None else psi_step)
        return cls(
            healpix_order=int(healpix_order),
            symmetry=normalise_symmetry_name(symmetry),
            psi_step=step,
            pix=dirs.pix,
            rot=dirs.rot,
            tilt=dirs.tilt,
            psi=psi,
            limit_tilt=float(limit_tilt),
        )

    @property
    def n_directions(self) -> int:
        """Number of coarse directions D."""
        return int(self.rot.shape[0])

    @property
    def n_psi(self) -> int:
        """Number of coarse psi angles P."""
        return int(self.psi.shape[0])

    def n_orientations(self, oversampling: int = 0) -> int:
        """``D * P * 8**os`` (RELION's ``NrOrientations``)."""
        return self.n_directions * self.n_psi * (1 << (3 * oversampling))

    def angular_step(self, oversampling: int = 0) -> float:
        """HEALPix angular step at ``order + os`` (degrees)."""
        return healpix_angular_step(self.healpix_order + oversampling)

    def direction_vectors(self) -> NDArray[np.float64]:
        """(D, 3) unit vectors of the directions."""
        return direction_vectors(self.rot, self.tilt)

    def orientations(self) -> tuple[NDArray, NDArray, NDArray]:
        """Coarse (rot, tilt, psi) of all D*P orientations, direction outer, psi inner, (D*P,)."""
        d, p = self.n_directions, self.n_psi
        return (np.repeat(self.rot, p), np.repeat(self.tilt, p), np.tile(self.psi, d))

    def matrices(
        self, dir_index: ArrayLike | None = None, psi_index: ArrayLike | None = None
    ) -> NDArray[np.float64]:
        """RELION matrices ``A(rot, tilt, psi)`` of selected directions x psi.

        Parameters
        ----------
        dir_index, psi_index
            (d,) and (p,) indices (all when None).

        Returns
        -------
        (d, p, 3, 3) float64.
        """
        di = np.arange(self.n_directions) if dir_index is None else np.asarray(dir_index)
        pi = np.arange(self.n_psi) if psi_index is None else np.asarray(psi_index)
        return euler_to_matrix(self.rot[di][:, None], self.tilt[di][:, None], self.psi[pi][None, :])

    def oversampled(
        self, dir_index: ArrayLike, psi_index: ArrayLike, oversampling: int = 1
    ) -> tuple[NDArray, NDArray, NDArray]:
        """Oversampled (rot, tilt, psi) of coarse (direction, psi) pairs, shape (..., 8**os).

        ``dir_index`` and ``psi_index`` broadcast; HEALPix child outer, psi child inner.
        """
        di = np.asarray(dir_index)
        pi = np.asarray(psi_index)
        return oversampled_orientations(
            self.pix[di], self.psi[pi], self.healpix_order, self.psi_step, oversampling
        )


@dataclass(frozen=True, eq=False)
class TranslationSampling:
    """Coarse translation grid.

    Attributes
    ----------
    offset_range, offset_step
        Search radius and step (Angstrom or pixels).
    dim
        2 (2D images) or 3 (3D translations of tomo particles).
    translations
        (T, dim) coarse translations (same unit).
    """

    offset_range: float
    offset_step: float
    dim: int
    translations: NDArray[np.float64] = field(repr=False)

    @classmethod
    def create(cls, offset_range: float, offset_step: float, dim: int = 3) -> "TranslationSampling":
        """Build the coarse grid with :func:`translation_grid`."""
        return cls(float(offset_range), float(offset_step), int(dim),
                   translation_grid(offset_range, offset_step, dim))

    @property
    def n_translations(self) -> int:
        """Number of coarse translations T."""
        return int(self.translations.shape[0])

    def n_oversampled(self, oversampling: int = 0) -> int:
        """``T * 2**(dim*os)`` (RELION's ``NrTranslations``)."""
        return self.n_translations * (1 << (self.dim * oversampling))

    def step(self, oversampling: int = 0) -> float:
        """Translational step at oversampling ``os``: ``step / 2**os``."""
        return self.offset_step / (1 << oversampling)

    def oversampled(self, index: ArrayLike, oversampling: int = 1) -> NDArray[np.float64]:
        """Oversampled children of coarse translations ``index``: (..., 2**(dim*os), dim)."""
        return oversampled_translations(self.translations[np.asarray(index)], self.offset_step,
                                        oversampling)


@dataclass(frozen=True, eq=False)
class SamplingGrid:
    """The full coarse pose grid (directions x psi x translations) and its perturbation.

    Attributes
    ----------
    angles
        The :class:`AngularSampling`.
    offsets
        The :class:`TranslationSampling`.
    perturbation_factor
        RELION ``--perturb`` (default 0.5).
    random_perturbation
        Current perturbation instance p in [-factor, factor] (RELION
        ``rlnSamplingPerturbInstance``).
    """

    angles: AngularSampling
    offsets: TranslationSampling
    perturbation_factor: float = 0.5
    random_perturbation: float = 0.0

    def n_orientations(self, oversampling: int = 0) -> int:
        """Orientations per class: ``D * P * 8**os``."""
        return self.angles.n_orientations(oversampling)

    def n_translations(self, oversampling: int = 0) -> int:
        """Translations: ``T * 2**(dim*os)``."""
        return self.offsets.n_oversampled(oversampling)

    def n_samples(self, oversampling: int = 0) -> int:
        """Hidden-variable sampling points per class (RELION ``NrHiddenVariableSamplingPoints``
        divided by the number of classes)."""
        return self.n_orientations(oversampling) * self.n_translations(oversampling)

    def with_next_perturbation(self, seed: int) -> "SamplingGrid":
        """A copy with the perturbation advanced once (:func:`next_random_perturbation`;
        ``seed`` = random_seed + iteration)."""
        p = next_random_perturbation(self.random_perturbation, self.perturbation_factor, seed)
        return replace(self, random_perturbation=p)

    def perturbed_matrices(self, A: ArrayLike) -> NDArray[np.float64]:
        """Apply the current angular perturbation to sampled matrices (..., 3, 3)."""
        return perturb_rotation_matrices(A, self.random_perturbation, self.angles.angular_step(0))

    def perturbed_translations(self, t: ArrayLike) -> NDArray[np.float64]:
        """Apply the current translational perturbation to sampled translations (..., dim)."""
        return perturb_translations(t, self.random_perturbation, self.offsets.offset_step)


def make_sampling(
    healpix_order: int,
    symmetry: str = "C1",
    *,
    offset_range: float,
    offset_step: float,
    psi_step: float | None = None,
    translation_dim: int = 3,
    limit_tilt: float = -91.0,
    perturbation_factor: float = 0.5,
    random_perturbation: float = 0.0,
) -> SamplingGrid:
    """Build RELION's coarse sampling for refinement.

    Parameters
    ----------
    healpix_order
        Coarse HEALPix order (``--healpix_order``).
    symmetry
        Point group (``--sym``).
    offset_range, offset_step
        ``--offset_range`` and ``--offset_step`` (RELION multiplies the pixel values by the
        pixel size and keeps Angstrom).
    psi_step
        ``--psi_step``; default the HEALPix step of ``healpix_order``.
    translation_dim
        3 for tomography (3D origins), 2 for single 2D images.
    limit_tilt
        ``--limit_tilt`` (-91: none).
    perturbation_factor, random_perturbation
        ``--perturb`` factor and the current instance.
    """
    if not 0.0 <= perturbation_factor <= 1.0:
        raise InputError(f"random perturbation factor must be in [0, 1], got {perturbation_factor!r}")
    return SamplingGrid(
        AngularSampling.create(healpix_order, symmetry, psi_step, limit_tilt=limit_tilt),
        TranslationSampling.create(offset_range, offset_step, translation_dim),
        float(perturbation_factor),
        float(random_perturbation),
    )


# ---------------------------------------------------------------------------------------
# Random perturbation (spec 5.8)
# ---------------------------------------------------------------------------------------

def real_wrap(x: float, x0: float, xf: float) -> float:
    """RELION's ``realWRAP``: wrap ``x`` into [x0, xf] by whole periods (xf - x0)."""
    if x0 <= x <= xf:
        return x
    period = xf - x0
    if period <= 0:
        return x0
    if x < x0:
        return x - int((x - x0) / period - 1) * period
    return x - int((x - xf) / period + 1) * period


def next_random_perturbation(previous: float, factor: float, seed: int) -> float:
    """Advance the perturbation instance as relion_refine does at the start of iteration i
    (``expectationSetup``: ``srand(random_seed + i)``, then
    ``wrap(p + rnd_unif(factor/2, factor), -factor, factor)``); ``seed`` = random_seed + i."""
    if factor == 0:
        return 0.0
    p = previous + relion_rnd_unif(GlibcRandom(seed), 0.5 * factor, factor)
    return real_wrap(p, -factor, factor)


def initial_random_perturbation(factor: float) -> float:
    """RELION's iteration-0 perturbation: drawn when the sampling is set up, before anything
    seeds glibc's generator (so from its default state, whatever ``--random_seed`` is)."""
    if factor == 0:
        return 0.0
    return real_wrap(relion_rnd_unif(GlibcRandom(1), 0.5 * factor, factor), -factor, factor)


def perturb_rotation_matrices(
    A: ArrayLike, perturbation: float, angular_step: float
) -> NDArray[np.float64]:
    """Right-multiply sampled orientations by ``A(p*step, p*step, p*step)``.

    Parameters
    ----------
    A
        (..., 3, 3) RELION matrices.
    perturbation
        Instance p (RELION ``random_perturbation``).
    angular_step
        Coarse angular step in degrees.

    Returns
    -------
    (..., 3, 3) float64.
    """
    A = np.asarray(A, dtype=np.float64)
    if perturbation == 0:
        return A.copy()
    d = perturbation * angular_step
    return A @ euler_to_matrix(d, d, d)


def perturb_orientations(
    rot: ArrayLike, tilt: ArrayLike, psi: ArrayLike, perturbation: float, angular_step: float
) -> tuple[NDArray, NDArray, NDArray]:
    """Perturbed (rot, tilt, psi) in degrees (RELION ``getOrientations``), shapes (...)."""
    if perturbation == 0:
        b = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (rot, tilt, psi)))
        return tuple(x.copy() for x in b)  # type: ignore[return-value]
    return matrix_to_euler(perturb_rotation_matrices(euler_to_matrix(rot, tilt, psi),
                                                     perturbation, angular_step))


def perturb_translations(t: ArrayLike, perturbation: float, offset_step: float) -> NDArray[np.float64]:
    """Translations shifted by ``p * offset_step`` on every axis, shape (..., dim)."""
    return np.asarray(t, dtype=np.float64) + perturbation * offset_step


# ---------------------------------------------------------------------------------------
# Angular priors (spec 5.8)
# ---------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class PriorSubset:
    """The directions and psi angles with non-zero prior for one particle.

    Attributes
    ----------
    dir_index
        (m,) int indices into the sampling's directions, ascending.
    dir_weight
        (m,) float64 prior weights, sum 1.
    psi_index
        (q,) int indices into the psi angles, ascending.
    psi_weight
        (q,) float64 prior weights, sum 1.
    """

    dir_index: NDArray[np.intp]
    dir_weight: NDArray[np.float64]
    psi_index: NDArray[np.intp]
    psi_weight: NDArray[np.float64]


def _gauss(x: NDArray, sigma: float) -> NDArray:
    return np.exp(-0.5 * (x / sigma) ** 2)


def _wrap_abs(diff: NDArray) -> NDArray:
    """RELION's |a - b| with one wrap: d > 180 -> |d - 360|."""
    d = np.abs(diff)
    return np.where(d > 180.0, np.abs(d - 360.0), d)


def _tilt_prior_distances(sampling: "AngularSampling", group: SymmetryGroup, prior_tilt: float) -> NDArray:
    """Tilt distance (deg) of every direction to ``prior_tilt``, minimised over symmetry mates,
    in RELION's exact arithmetic (``selectOrientationsWithNonZeroPriorProbability``, prior on
    tilt only): the stored tilt, then for each operator (identity included) the direction
    vector ``(sin t cos r, sin t sin r, cos t)`` times R, renormalised by its reciprocal length,
    back to a tilt with ``acos``, all with glibc's double functions.

    The bits matter: with ``--sigma_tilt 10`` around 90 the order-2 HEALPix rings at 60 and 120
    degrees lie exactly 3 sigma away, and RELION's rounding keeps the ring at 60 but not the
    one at 120 (its refine_demo poses sit at tilt 54.3, a child of the 60-degree ring, and never
    beyond 120).
    """
    key = (sampling.healpix_order, group.name, round(prior_tilt, 12), len(sampling.rot))
    cached = _TILT_DISTANCE_CACHE.get(key)
    if cached is not None:
        return cached
    ops = [(L.tolist(), R.tolist()) for L, R in zip(group.L, group.R)]
    out = np.empty(len(sampling.rot))
    for d, (rot, tilt) in enumerate(zip(sampling.rot.tolist(), sampling.tilt.tolist())):
        best = _wrapped_difference(tilt, prior_tilt)
        a, b = rot * _RELION_PI / 180, tilt * _RELION_PI / 180
        ca, cb, sa, sb = math.cos(a), math.cos(b), math.sin(a), math.sin(b)
        v = (sb * ca, sb * sa, cb)
        for L, R in ops:
            w = [((0.0 + v[0] * R[0][j]) + v[1] * R[1][j]) + v[2] * R[2][j] for j in range(3)]
            u = [((0.0 + L[i][0] * w[0]) + L[i][1] * w[1]) + L[i][2] * w[2] for i in range(3)]
            m = math.sqrt(((0.0 + u[0] * u[0]) + u[1] * u[1]) + u[2] * u[2])
            if m > 1e-6:
                u[2] = u[2] * (1.0 / m)
            best = min(best, _wrapped_difference(math.acos(max(-1.0, min(1.0, u[2]))) * 180 / _RELION_PI,
                                                 prior_tilt))
        out[d] = best
    if len(_TILT_DISTANCE_CACHE) > 4096:       # per-particle prior centres: keep it bounded
        _TILT_DISTANCE_CACHE.clear()
    _TILT_DISTANCE_CACHE[key] = out
    return out


def _wrapped_difference(a: float, b: float) -> float:
    d = abs(a - b)
    return abs(d - 360.0) if d > 180.0 else d


_TILT_DISTANCE_CACHE: dict[tuple, NDArray] = {}
#: RELION's PI (macros.h), the double nearest to pi.
_RELION_PI = 3.14159265358979323846


def _select(dist: NDArray, cutoff: float, sigma: float) -> tuple[list[NDArray], list[NDArray]]:
    """Per row: indices with dist < cutoff and Gaussian weights (fallback: nearest)."""
    keep = dist < cutoff
    out_i, out_w = [], []
    for row, k in zip(dist, keep):
        idx = np.flatnonzero(k)
        if idx.size == 0:
            idx = np.array([int(np.argmin(row))])
            w = np.ones(1)
        else:
            w = _gauss(row[idx], sigma)
            w = w / w.sum()
        out_i.append(idx)
        out_w.append(w)
    return out_i, out_w


def select_orientations_with_prior(
    sampling: AngularSampling,
    prior_rot: ArrayLike,
    prior_tilt: ArrayLike,
    prior_psi: ArrayLike,
    sigma_rot: float,
    sigma_tilt: float,
    sigma_psi: float,
    *,
    sigma_cutoff: float = 3.0,
    symmetry: str | SymmetryGroup | None = None,
    chunk_elements: int = 4_000_000,
) -> list[PriorSubset]:
    """Directions and psi angles with non-zero prior probability, per particle (spec 5.8).

    Direction branch (as RELION, first that applies):

    * ``sigma_rot > 0 and sigma_tilt > 0`` (local searches): distance = angle between the
      prior direction and the symmetry mate of the sampled direction closest to it; keep if
      < ``cutoff * max(sigma_rot, sigma_tilt)``; weight Gaussian(distance; max sigma);
    * ``sigma_rot > 0`` only: distance = ``|asin|`` of the mate's component perpendicular to
      the prior rot plane (minimised over mates);
    * ``sigma_tilt > 0`` only (``--sigma_tilt``): distance = ``|tilt_mate - prior_tilt|``
      minimised over the mates (rot unrestricted);
    * neither: all directions, equal weight.

    Psi: ``|psi - prior_psi|`` (wrapped) < ``cutoff * sigma_psi`` with Gaussian weight when
    ``sigma_psi > 0``, else all psi. Weights sum to 1; when nothing survives, the single
    nearest direction (or psi) is used with weight 1.

    Parameters
    ----------
    sampling
        The coarse angular sampling.
    prior_rot, prior_tilt, prior_psi
        (n,) (or scalar) prior centres in degrees, one per particle.
    sigma_rot, sigma_tilt, sigma_psi
        Prior widths in degrees (0 = no prior on that angle); the same for the batch.
    sigma_cutoff
        Cut-off in sigmas (RELION: 3).
    symmetry
        Group whose mates are considered (default: the sampling's group).
    chunk_elements
        Work-array size limit per chunk of particles (memory control).

    Returns
    -------
    list of :class:`PriorSubset`, one per particle.
    """
    g = symmetry_group(sampling.symmetry if symmetry is None else symmetry)
    pr, pt, pp = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (prior_rot, prior_tilt, prior_psi))
    )
    n = pr.shape[0]
    n_dir = sampling.n_directions
    mates = direction_mates(sampling.direction_vectors(), g)  # (D, K, 3)
    k = mates.shape[1]
    chunk = max(1, chunk_elements // max(1, n_dir * k))

    dir_idx: list[NDArray] = []
    dir_w: list[NDArray] = []
    if sigma_rot > 0 and sigma_tilt > 0:
        sigma = max(sigma_rot, sigma_tilt)
        prior_v = direction_vectors(pr, pt)  # (n, 3)
        for s in range(0, n, chunk):
            dots = np.einsum("pc,dkc->pdk", prior_v[s:s + chunk], mates).max(axis=-1)
            dist = np.rad2deg(np.arccos(np.clip(dots, -1.0, 1.0)))
            i, w = _select(dist, sigma_cutoff * sigma, sigma)
            dir_idx += i
            dir_w += w
    elif sigma_rot > 0:
        a = np.deg2rad(pr)
        for s in range(0, n, chunk):
            c, sn = np.cos(a[s:s + chunk]), np.sin(a[s:s + chunk])
            # component along the rotated y axis after undoing the prior rot about z
            y = -sn[:, None, None] * mates[None, ..., 0] + c[:, None, None] * mates[None, ..., 1]
            dist = np.abs(np.rad2deg(np.arcsin(np.clip(y, -1.0, 1.0)))).min(axis=-1)
            i, w = _select(dist, sigma_cutoff * sigma_rot, sigma_rot)
            dir_idx += i
            dir_w += w
    elif sigma_tilt > 0:
        for prior in pt:
            dist = _tilt_prior_distances(sampling, g, float(prior))[None]
            i, w = _select(dist, sigma_cutoff * sigma_tilt, sigma_tilt)
            dir_idx += i
            dir_w += w
    else:
        all_i = np.arange(n_dir)
        all_w = np.full(n_dir, 1.0 / n_dir)
        dir_idx = [all_i] * n
        dir_w = [all_w] * n

    if sigma_psi > 0:
        dist = _wrap_abs(sampling.psi[None, :] - pp[:, None])
        psi_idx, psi_w = _select(dist, sigma_cutoff * sigma_psi, sigma_psi)
    else:
        all_i = np.arange(sampling.n_psi)
        all_w = np.full(sampling.n_psi, 1.0 / sampling.n_psi)
        psi_idx, psi_w = [all_i] * n, [all_w] * n

    return [PriorSubset(dir_idx[i], dir_w[i], psi_idx[i], psi_w[i]) for i in range(n)]
