"""Tilt-series acquisition: dose-symmetric tilt order, alignment, defocus (per tilt image).

Rows are in acquisition order (the order RELION 5's importer writes: cumulative dose
increasing), so ``rlnMicrographPreExposure`` of row i is i × dose per tilt.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..errors import InputError

__all__ = ["dose_symmetric_order", "TiltSeriesGeometry", "acquire"]


def dose_symmetric_order(tilt_min: float, tilt_max: float, step: float) -> NDArray[np.float64]:
    """Nominal tilt angles in Hagen dose-symmetric order (degrees).

    Starts at the tilt closest to 0, then +1 step, then alternates groups of two on each
    side (−1, −2, +2, +3, −3, −4, ...): 0, +3, −3, −6, +6, +9, −9, −12, ... When one side
    is exhausted the other side continues alone.
    """
    n = int(round((tilt_max - tilt_min) / step)) + 1
    if n < 1:
        raise InputError("empty tilt range", column="tilt_step")
    angles = tilt_min + step * np.arange(n)
    start = int(np.argmin(np.abs(angles)))
    plus = list(angles[start + 1 :])
    minus = list(angles[:start][::-1])
    order = [angles[start]]
    if plus:
        order.append(plus.pop(0))
    side = minus
    while plus or minus:
        for _ in range(2):
            if side:
                order.append(side.pop(0))
        side = plus if side is minus else minus
        if not side:
            side = plus or minus
    return np.round(np.asarray(order, dtype=np.float64), 6)


@dataclass(frozen=True)
class TiltSeriesGeometry:
    """Per-tilt metadata of one tilt series, in acquisition (= file) order; shapes (n_tilts,).

    nominal_tilt : rlnTomoNominalStageTiltAngle (deg); x_tilt, y_tilt, z_rot : rlnTomoXTilt,
    rlnTomoYTilt, rlnTomoZRot (deg); x_shift, y_shift : rlnTomoX/YShiftAngst (Å);
    pre_exposure : rlnMicrographPreExposure (e/Å²); defocus_u, defocus_v : Å;
    defocus_angle : deg.
    """

    nominal_tilt: NDArray[np.float64]
    x_tilt: NDArray[np.float64]
    y_tilt: NDArray[np.float64]
    z_rot: NDArray[np.float64]
    x_shift: NDArray[np.float64]
    y_shift: NDArray[np.float64]
    pre_exposure: NDArray[np.float64]
    defocus_u: NDArray[np.float64]
    defocus_v: NDArray[np.float64]
    defocus_angle: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.nominal_tilt.shape[0])


def acquire(
    *,
    tilt_min: float,
    tilt_max: float,
    tilt_step: float,
    dose_per_tilt: float,
    z_rot: float,
    shift_sigma: float,
    defocus_range: tuple[float, float],
    astigmatism_range: tuple[float, float],
    defocus_tilt_sigma: float,
    rng: np.random.Generator,
) -> TiltSeriesGeometry:
    """Draw the per-tilt metadata of one tilt series (see :class:`TiltSeriesGeometry`).

    The mean defocus is uniform in ``defocus_range`` and the astigmatism (U − V) uniform in
    ``astigmatism_range`` with a uniform angle; every tilt adds a common normal jitter
    (σ = ``defocus_tilt_sigma``) to U and V. Shifts are normal with σ = ``shift_sigma`` Å.
    """
    nominal = dose_symmetric_order(tilt_min, tilt_max, tilt_step)
    n = len(nominal)
    mean_defocus = rng.uniform(*defocus_range)
    astig = rng.uniform(*astigmatism_range)
    angle = float(np.round(rng.uniform(-90.0, 90.0), 3))
    jitter = rng.normal(0.0, defocus_tilt_sigma, n) if defocus_tilt_sigma > 0 else np.zeros(n)
    shifts = rng.normal(0.0, shift_sigma, (n, 2)) if shift_sigma > 0 else np.zeros((n, 2))
    return TiltSeriesGeometry(
        nominal_tilt=nominal,
        x_tilt=np.zeros(n),
        y_tilt=nominal.copy(),
        z_rot=np.full(n, z_rot),
        x_shift=np.round(shifts[:, 0], 4),
        y_shift=np.round(shifts[:, 1], 4),
        pre_exposure=np.arange(n, dtype=np.float64) * dose_per_tilt,
        defocus_u=np.round(mean_defocus + astig / 2.0 + jitter, 2),
        defocus_v=np.round(mean_defocus - astig / 2.0 + jitter, 2),
        defocus_angle=np.full(n, angle),
    )
