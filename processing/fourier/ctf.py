"""Contrast transfer function and dose weighting, exactly as RELION 5 evaluates them (spec 2.6, 2.7).

Frequencies are in Å⁻¹. Defocus in Å (positive = underfocus), angles in degrees, Cs in mm,
voltage in kV, dose in e/Å².
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "CtfParameters",
    "electron_wavelength",
    "ctf_value",
    "dose_weight",
    "fourier_frequency_grid",
    "depth_defocus_offset",
]


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV."""
    volts = voltage_kv * 1e3
    return 12.2643247 / np.sqrt(volts * (1.0 + volts * 0.978466e-6))


@dataclass(frozen=True)
class CtfParameters:
    """CTF parameters of one image (RELION's STAR columns in brackets).

    defocus_u, defocus_v: Å [rlnDefocusU/V]; defocus_angle: degrees [rlnDefocusAngle];
    voltage: kV [rlnVoltage]; cs: mm [rlnSphericalAberration]; amplitude_contrast: Q0
    [rlnAmplitudeContrast]; phase_shift: degrees [rlnPhaseShift]; bfactor: Å² [rlnCtfBfactor];
    scale: [rlnCtfScalefactor].
    """

    defocus_u: float
    defocus_v: float
    defocus_angle: float = 0.0
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1
    phase_shift: float = 0.0
    bfactor: float = 0.0
    scale: float = 1.0


def _gamma(kx: NDArray, ky: NDArray, p: CtfParameters, defocus_u: NDArray, defocus_v: NDArray) -> NDArray:
    lam = electron_wavelength(p.voltage)
    phi = np.deg2rad(p.defocus_angle)
    c, s = np.cos(phi), np.sin(phi)
    # M = Q^T diag(-U, -V) Q with Q = [[c, s], [-s, c]]
    du, dv = -np.asarray(defocus_u), -np.asarray(defocus_v)
    m_xx = c * c * du + s * s * dv
    m_xy = c * s * (du - dv)
    m_yy = s * s * du + c * c * dv
    k2 = kx * kx + ky * ky
    cs_angst = p.cs * 1e7
    q0 = p.amplitude_contrast
    return (
        np.pi * lam * (m_xx * kx * kx + 2.0 * m_xy * kx * ky + m_yy * ky * ky)
        + 0.5 * np.pi * cs_angst * lam**3 * k2 * k2
        - np.deg2rad(p.phase_shift)
        - np.arctan(q0 / np.sqrt(1.0 - q0 * q0))
    )


def ctf_value(
    kx: ArrayLike,
    ky: ArrayLike,
    params: CtfParameters,
    *,
    defocus_offset: ArrayLike = 0.0,
    dose: float | None = None,
    bfactor_per_dose: float = 0.0,
    intact_first_peak: bool = False,
) -> NDArray[np.float64]:
    """RELION's CTF at spatial frequencies (kx, ky).

    Parameters
    ----------
    kx, ky
        Frequencies in Å⁻¹, broadcastable.
    params
        The image's CTF parameters.
    defocus_offset
        Added to both DefocusU and DefocusV (Å): the depth-dependent term of spec 2.6.
        May be an array broadcastable against the leading axes of ``kx`` (e.g. (n, 1, 1)).
    dose
        Cumulative dose (e/Å²). When given, the envelope is the dose weight of spec 2.7 instead
        of the B-factor envelope.
    bfactor_per_dose
        ``rlnCtfBfactorPerElectronDose``: if > 0, dose weighting uses B = this * dose.
    intact_first_peak
        "Ignore CTFs until first peak": the value is 1 wherever |gamma| < pi/2.

    Returns
    -------
    float64 array of the broadcast shape.
    """
    kx = np.asarray(kx, dtype=np.float64)
    ky = np.asarray(ky, dtype=np.float64)
    offset = np.asarray(defocus_offset, dtype=np.float64)
    gamma = _gamma(kx, ky, params, params.defocus_u + offset, params.defocus_v + offset)
    value = -np.sin(gamma)
    if intact_first_peak:
        value = np.where(np.abs(gamma) < np.pi / 2, 1.0, value)
    k2 = kx * kx + ky * ky
    if dose is not None:
        envelope = dose_weight(np.sqrt(k2), dose, bfactor_per_dose=bfactor_per_dose)
    elif params.bfactor != 0.0:
        envelope = np.exp(-params.bfactor * k2 / 4.0)
    else:
        envelope = 1.0
    value = value * envelope * params.scale
    # RELION clamps tiny values away from zero so that divisions stay finite.
    tiny = np.abs(value) < 1e-8
    if np.any(tiny):
        value = np.where(tiny, np.where(value < 0, -1e-8, 1e-8), value)
    return value


def dose_weight(
    k: ArrayLike, dose: ArrayLike, *, bfactor_per_dose: float = 0.0
) -> NDArray[np.float64]:
    """Radiation-damage weight exp(-D / (2 Nc(k))) (Grant & Grigorieff), or exp(-b D k²/4).

    Parameters
    ----------
    k
        |k| in Å⁻¹.
    dose
        Cumulative dose in e/Å² (broadcastable against ``k``).
    bfactor_per_dose
        If > 0, use the B-factor model with B = bfactor_per_dose * dose.
    """
    k = np.asarray(k, dtype=np.float64)
    dose = np.asarray(dose, dtype=np.float64)
    if bfactor_per_dose > 0:
        return np.exp(-bfactor_per_dose * dose * k * k / 4.0)
    with np.errstate(divide="ignore"):
        critical = 0.245 * np.power(k, -1.665) + 2.81
    # At k = 0 the critical dose is infinite: no damage.
    return np.where(k > 0, np.exp(-dose / (2.0 * critical)), 1.0)


def fourier_frequency_grid(
    box: int, pixel_size: float, *, half: bool = True, positive_nyquist_row: bool = False,
) -> tuple[NDArray, NDArray]:
    """Frequencies (kx, ky) in Å⁻¹ of a 2D FFT of a ``box`` x ``box`` image.

    Returns arrays of shape (box, box//2+1) (half transform, numpy ``rfft2`` layout) or
    (box, box) (full ``fft2`` layout). Row ``box//2`` of an even box is ky = -1/(2·pixel_size),
    as numpy has it; ``positive_nyquist_row`` makes it +1/(2·pixel_size), as RELION's FFTW
    images have it (``CTF::getFftwImage``). The two differ only where the function is not
    symmetric under ky -> -ky at that row, e.g. an astigmatic CTF at kx != 0.
    """
    ky = np.fft.fftfreq(box, d=pixel_size)[:, None]
    if positive_nyquist_row and box % 2 == 0:
        ky = ky.copy()
        ky[box // 2] = -ky[box // 2]
    kx = (np.fft.rfftfreq(box, d=pixel_size) if half else np.fft.fftfreq(box, d=pixel_size))[None, :]
    return np.broadcast_arrays(kx, ky)


def depth_defocus_offset(
    depth_px: ArrayLike, *, hand: float, pixel_size: float, defocus_slope: float = 1.0
) -> NDArray[np.float64]:
    """Depth-dependent defocus change (Å) added to DefocusU and DefocusV (spec 2.6).

    ``hand * pixel_size * defocus_slope * dz`` with ``dz = (P_f p).z - (P_f C).z`` the depth of
    the particle relative to the tomogram centre in tilt-series pixels
    (see :func:`processing.geometry.projection.projection_depth`); ``hand`` is
    ``rlnTomoHand`` (+1/-1), ``pixel_size`` the tilt-series pixel (Å) and ``defocus_slope``
    ``rlnTomoDefocusSlope``. Pass the result as ``defocus_offset`` to :func:`ctf_value`.
    """
    return hand * pixel_size * defocus_slope * np.asarray(depth_px, dtype=np.float64)
