"""Expected accuracy of rotations and translations (RELION calculateExpectedAngularErrors,
spec 5.7): how far a pose must move before the model's projections become 100 times less
likely, given the CTFs and the noise."""
from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from processing.backend import to_host
from processing.geometry.euler import euler_to_matrix
from processing.glibc_random import GlibcRandom, relion_rnd_unif

from .estep import EStepContext, ParticleState, Reference, inverse_noise, phase_factors, central_slices
from .particles import ParticleImages

__all__ = ["expected_accuracy", "angle_steps", "shift_steps"]

#: -ln(0.01): the perturbed pose is 100 times less likely.
THRESHOLD = 4.60517


def angle_steps(limit: float = 30.0) -> NDArray[np.float64]:
    """RELION's growing angular error steps (deg): up to the first value beyond ``limit``
    (which is what a particle that never reaches the threshold is credited with)."""
    out, a = [], 0.0
    while a <= limit:
        a += 0.05 if a < 0.2 else 0.1 if a < 1 else 0.2 if a < 2 else 0.5 if a < 5 else 1.0 if a < 10 else \
            2.0 if a < 20 else 5.0
        out.append(a)
    return np.array(out)


def shift_steps(limit: float = 10.0) -> NDArray[np.float64]:
    """RELION's growing shift error steps (px), up to the first value beyond ``limit``."""
    out, s = [], 0.0
    while s <= limit:
        s += 0.1 if s < 1 else 0.2 if s < 2 else 0.5 if s < 5 else 1.0 if s < 10 else 2.0
        out.append(s)
    return np.array(out)


def _first_exceeding(diffs: NDArray, values: NDArray) -> float:
    above = np.flatnonzero(diffs > THRESHOLD)
    return float(values[above[0]] if above.size else values[-1])


def _random_axes(seed: int, n_images: int) -> NDArray[np.int64]:
    """Which axis each tilt image perturbs: RELION re-seeds with ``random_seed + part_id`` at
    every step and draws ``rnd_unif()`` per image (< 0.3333: rot / x, < 0.6667: tilt / y, else
    psi / z), so the choice is the same at every step and for both modes."""
    generator = GlibcRandom(seed)
    draws = np.array([relion_rnd_unif(generator, 0.0, 1.0) for _ in range(n_images)])
    return np.where(draws < 0.3333, 0, np.where(draws < 0.6667, 1, 2))


def expected_accuracy(
    ctx: EStepContext, particles: list[tuple[ParticleImages, ParticleState]], *, random_seed: int,
) -> tuple[float, float]:
    """Mean angular (deg) and translational (Å) accuracy over the given particles."""
    angles_found, shifts_found = [], []
    a_steps = angle_steps()
    s_steps = shift_steps()
    for particle, state in particles:
        ctx_p = ctx.for_particle(state)        # the particle's optics group: box, pixel, shells
        freq = ctx_p.frequencies(ctx_p.current_size)
        ref: Reference = ctx.references[state.half]
        geo = particle.geometry
        F = geo.rotations.shape[0]
        C = particle.ctf2.reshape(F, -1)[:, freq.flat].astype(np.float64)
        inv_s2 = inverse_noise(ctx_p.noise(state), freq)
        weight = (C * C) * inv_s2[None] / 2.0                              # (F, K)
        base = euler_to_matrix(*state.angles)
        v0 = to_host(central_slices(ref, geo.rotations @ base, freq, remap=ctx_p.remap)[0])  # (F, K)
        # Rotation: each tilt image perturbs one randomly chosen Euler angle by growing amounts.
        which = _random_axes(random_seed + geo.index, F)
        pert = np.tile(state.angles, (a_steps.size, F, 1))                  # (S, F, 3)
        pert[:, np.arange(F), which] += a_steps[:, None]
        mats = euler_to_matrix(pert[..., 0], pert[..., 1], pert[..., 2])    # (S, F, 3, 3)
        rot = np.einsum("fij,sfjk->sfik", geo.rotations, mats).reshape(-1, 3, 3)
        v1 = to_host(central_slices(ref, rot, freq, remap=ctx_p.remap)[0]).reshape(a_steps.size, F, -1)
        d = (np.abs(v1 - v0[None]) ** 2 * weight[None]).sum(axis=(1, 2))
        angles_found.append(_first_exceeding(d, a_steps))
        # Translation: each tilt image shifts along a randomly chosen axis of the subtomogram frame.
        axes = np.eye(3)[which]                                              # (F, 3)
        proj = np.einsum("fij,fj->fi", geo.rotations, axes)                 # (F, 3) per unit shift
        shifts = s_steps[:, None, None] * (proj if ctx.is_3d else proj[:, :2])[None]
        ph = phase_factors(freq, shifts, ctx_p.ori, -1.0)                         # (S, F, K)
        d = (np.abs(v0[None] * (1.0 - ph)) ** 2 * weight[None]).sum(axis=(1, 2))
        shifts_found.append(_first_exceeding(d, s_steps) * ctx_p.pixel_size)   # Å
    if not angles_found:
        return 999.0, 999.0
    return float(np.mean(angles_found)), float(np.mean(shifts_found))
