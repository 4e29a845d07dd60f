"""The state of a 3D auto-refine run between iterations: each half set's model and every
particle's hidden variables; what the iteration files record and a continuation restores.
In 3D classification ``RunState.halves`` holds one model per class (one set of particles)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from .estep import ParticleState
from .schedule import RefineCounters, SamplingState

__all__ = ["HalfState", "RunState"]


@dataclass
class HalfState:
    """One half set's reference and model: as in RELION, where each half's ranks keep their own
    model, the nuisance parameters (noise spectra, orientation distribution, scale corrections,
    offset prior width) are estimated within the half, so the halves stay independent."""

    map: NDArray[np.float64]
    fsc: NDArray[np.float64]
    ssnr: NDArray[np.float64]
    tau2: NDArray[np.float64]
    sigma2_ref: NDArray[np.float64]
    completeness: NDArray[np.float64]
    sigma2: NDArray[np.float64]              # (n_optics, n_shells) noise power
    pdf_direction: NDArray[np.float64]       # (n_directions,)
    scales: NDArray[np.float64]              # (n_groups,) intensity-scale corrections
    sigma_offset: float = 10.0               # Å
    pdf_class: float = 1.0                   # the class's share (3D classification; 1 in auto-refine)
    acc_rot: float = 999.0                   # deg, the class's accuracy (3D classification)
    acc_trans: float = 999.0                 # Å
    ave_pmax: float = 0.0
    log_likelihood: float = 0.0


@dataclass
class RunState:
    """Everything needed to write an iteration's files and to continue from them."""

    halves: list[HalfState]
    counters: RefineCounters
    sampling: SamplingState
    particles: list[ParticleState]
    pmax: NDArray[np.float64]
    n_significant: NDArray[np.int64]
    log_likelihood_particles: NDArray[np.float64]
    joined: bool = False
    unfil: list[NDArray[np.float64]] = field(default_factory=list)
