"""Image formation of tilt images: analytic Gaussian projections, CTF, dose, noise.

Contrast convention (spec 2.6, 3.4): RELION's CTF is ≈ +Q0 at k = 0 and positive at low
frequency for underfocus, and extraction multiplies the tilt-image patch by −CTF (contrast
inversion) to obtain white particles. For extraction to give CTF²·(positive projection), the
tilt image must be

    image_f = −(CTF_f ⊛ projection) + noise,

i.e. protein is dark in the tilt images, as in real data. ``CTF_f`` is evaluated per particle
with the defocus at the particle's depth (ΔDefocus = hand·px·slope·dz, slope 1) and the dose
envelope of its pre-exposure, exactly as RELION models it.

Per tilt and particle, the blobs are projected with the tilt's projection matrix P_f
(spec 1.3): blob a of particle p lands at rows 0, 1 of P_f·(p + R·r_a/px), a 2D Gaussian of
the same σ and integral amplitude·√(2π)·σ/px (sum projection in ts-px units). Blobs are
rendered into a ``patch``×``patch`` window whose integer origin is round(P_f·p) − patch/2
(sub-pixel positions are exact), the CTF is applied by FFT, and the window is added to the
image. Each window is periodic, so it is chosen wide enough to hold the CTF delocalisation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import scipy.fft
from numpy.typing import NDArray

from ..fourier.ctf import CtfParameters, ctf_value, electron_wavelength, fourier_frequency_grid
from .phantom import Phantom

__all__ = [
    "ParticleTiltRender",
    "auto_patch_size",
    "project_particles",
    "particle_ctfs",
    "apply_ctf",
    "add_patches",
    "masked_signal_variance",
]


@numba.njit(parallel=True, cache=True)
def _splat2d(out: NDArray, pos: NDArray, amp: NDArray, sig: NDArray) -> None:  # pragma: no cover - numba
    n_p, ny, nx = out.shape
    n_b = pos.shape[1]
    for p in numba.prange(n_p):
        for a in range(n_b):
            s = sig[a]
            reach = 4.5 * s
            cx, cy = pos[p, a, 0], pos[p, a, 1]
            x0 = max(int(math.ceil(cx - reach)), 0)
            x1 = min(int(math.floor(cx + reach)), nx - 1)
            y0 = max(int(math.ceil(cy - reach)), 0)
            y1 = min(int(math.floor(cy + reach)), ny - 1)
            if x1 < x0 or y1 < y0:
                continue
            inv = 1.0 / (2.0 * s * s)
            gx = np.empty(x1 - x0 + 1)
            for i in range(x1 - x0 + 1):
                d = x0 + i - cx
                gx[i] = math.exp(-d * d * inv)
            for j in range(y1 - y0 + 1):
                d = y0 + j - cy
                w = amp[a] * math.exp(-d * d * inv)
                for i in range(x1 - x0 + 1):
                    out[p, y0 + j, x0 + i] += w * gx[i]


def auto_patch_size(
    phantom: Phantom,
    pixel_size: float,
    *,
    max_defocus: float,
    voltage: float,
    cs: float,
    ctf: bool = True,
    cutoff: float = 0.01,
) -> int:
    """Even window size (ts-px) holding the particle and its CTF delocalisation.

    The highest significant frequency k_c is where the smallest blob's envelope
    exp(−2π²σ²k²) drops to ``cutoff`` (capped at Nyquist); its delocalisation is
    λ·Δf·k_c + Cs·λ³·k_c³ (Å). Sizes are rounded up to a multiple of 16.
    """
    sigma = float(phantom.sigmas.min())
    k_c = min(math.sqrt(math.log(1.0 / cutoff) / (2.0 * math.pi**2)) / sigma, 0.5 / pixel_size)
    reach = phantom.radius
    if ctf:
        lam = electron_wavelength(voltage)
        reach += lam * max_defocus * k_c + cs * 1e7 * lam**3 * k_c**3
    size = 2.0 * reach / pixel_size + 4.0
    return int(math.ceil(size / 16.0) * 16)


@dataclass(frozen=True)
class ParticleTiltRender:
    """Noise-free projections of the particles of one tilt (n = number of particles).

    patches : (n, S, S) float32 images (before CTF, after :func:`apply_ctf` with it).
    origins : (n, 2) int64 image (x, y) of each window's pixel [0, 0].
    centres : (n, 2) float64 projected particle centres P_f·p (image x, y; ts-px).
    depths : (n,) float64 depth (row 2 of P_f·p) minus the depth of the tomogram centre (ts-px).
    """

    patches: NDArray[np.float32]
    origins: NDArray[np.int64]
    centres: NDArray[np.float64]
    depths: NDArray[np.float64]


def project_particles(
    phantom: Phantom,
    rotations: NDArray[np.float64],
    positions: NDArray[np.float64],
    projection: NDArray[np.float64],
    *,
    pixel_size: float,
    patch_size: int,
    tomogram_centre: NDArray[np.float64],
) -> ParticleTiltRender:
    """CTF-free sum projections of particles in one tilt image.

    Parameters
    ----------
    phantom : the particle (blobs in Å around its centre).
    rotations : (n, 3, 3) particle→tomogram rotations R = A_sub·A_part.
    positions : (n, 3) decentred particle centres (ts-px).
    projection : (4, 4) P_f of the tilt (spec 1.3).
    pixel_size : ts pixel (Å).
    patch_size : S (even).
    tomogram_centre : (3,) C = Size/2 (ts-px), the zero of the depth-dependent defocus.
    """
    P = np.asarray(projection, dtype=np.float64)
    n = len(positions)
    centres3 = positions @ P[:3, :3].T + P[:3, 3]
    centres = centres3[:, :2]
    depths = centres3[:, 2] - (P[2, :3] @ tomogram_centre + P[2, 3])
    origins = np.rint(centres).astype(np.int64) - patch_size // 2
    # blob offsets in the image plane: rows 0,1 of P_f[:3,:3]·R·r_a / px
    rel = np.einsum("ij,njk,ak->nai", P[:2, :3], rotations, phantom.positions) / pixel_size
    pos2d = rel + (centres - origins)[:, None, :]
    sig_px = phantom.sigmas / pixel_size
    amp2d = phantom.amplitudes * math.sqrt(2.0 * math.pi) * sig_px
    out = np.zeros((n, patch_size, patch_size), dtype=np.float32)
    if n:
        _splat2d(out, np.ascontiguousarray(pos2d), amp2d.astype(np.float64), sig_px.astype(np.float64))
    return ParticleTiltRender(out, origins, centres, depths)


def particle_ctfs(
    params: CtfParameters,
    depths: NDArray[np.float64],
    *,
    patch_size: int,
    pixel_size: float,
    hand: int,
    defocus_slope: float = 1.0,
    dose: float | None = None,
) -> NDArray[np.float32]:
    """RELION's CTF of each particle in one tilt, on the (S, S//2+1) rfft2 grid.

    ``depths`` (n,) in ts-px relative to the tomogram centre; the defocus offset added to U
    and V is hand·px·slope·depth Å (spec 2.6). ``dose`` = pre-exposure (e/Å²) for the dose
    envelope (spec 2.7), or None for none. Returns (n, S, S//2+1) float32.
    """
    kx, ky = fourier_frequency_grid(patch_size, pixel_size)
    offset = (hand * pixel_size * defocus_slope * np.asarray(depths, dtype=np.float64))[:, None, None]
    return ctf_value(kx[None], ky[None], params, defocus_offset=offset, dose=dose).astype(np.float32)


def apply_ctf(patches: NDArray[np.float32], transfer: NDArray[np.float32], *, workers: int = -1) -> NDArray[np.float32]:
    """Multiply each patch's spectrum by ``transfer`` (n, S, S//2+1) (periodic convolution)."""
    spectrum = scipy.fft.rfft2(patches, workers=workers)
    spectrum *= transfer
    return scipy.fft.irfft2(spectrum, s=patches.shape[-2:], workers=workers).astype(np.float32)


def add_patches(image: NDArray[np.float32], patches: NDArray[np.float32], origins: NDArray[np.int64]) -> None:
    """Add windows (n, S, S) into ``image`` (H, W) at integer (x, y) origins, clipping at edges."""
    height, width = image.shape
    size = patches.shape[-1]
    for patch, (ox, oy) in zip(patches, origins):
        x0, y0 = max(ox, 0), max(oy, 0)
        x1, y1 = min(ox + size, width), min(oy + size, height)
        if x1 <= x0 or y1 <= y0:
            continue
        image[y0:y1, x0:x1] += patch[y0 - oy : y1 - oy, x0 - ox : x1 - ox]


def masked_signal_variance(
    patches: NDArray[np.float32], centres: NDArray[np.float64], origins: NDArray[np.int64], radius_px: float
) -> NDArray[np.float64]:
    """Variance of each window's pixels within ``radius_px`` of its particle centre, (n,)."""
    size = patches.shape[-1]
    yy, xx = np.mgrid[0:size, 0:size]
    local = centres - origins
    out = np.empty(len(patches))
    for i, (patch, (cx, cy)) in enumerate(zip(patches, local)):
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius_px**2
        out[i] = float(np.var(patch[mask], dtype=np.float64))
    return out
