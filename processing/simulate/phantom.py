"""Phantoms made of isotropic 3D Gaussians ("pseudo-atoms") with point-group symmetry.

A phantom's density at a point r (Å, relative to the symmetry centre) is

    ρ(r) = Σ_a  amplitude_a · exp(-|r - position_a|² / (2 σ_a²)).

Values are samples of this function, independent of the pixel size; the line integral along
a direction in units of a pixel of size ``px`` is Σ_a amplitude_a·√(2π)·(σ_a/px)·exp(…) — a 2D
Gaussian at the projected centre. That is what a voxel-sum projection of the map rendered at
``px`` gives (RELION's projection scale, spec 2.5 and conformance README).
"""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
from numpy.typing import NDArray

from ..errors import InputError
from ..geometry.symmetry import symmetry_operators as point_group_operators

__all__ = [
    "Phantom",
    "procedural_phantom",
    "phantom_from_model",
    "read_atoms",
    "render_map",
]


@dataclass(frozen=True)
class Phantom:
    """A set of Gaussian blobs.

    Attributes
    ----------
    positions : (n, 3) float64, Å, (x, y, z) relative to the symmetry centre (box centre).
    amplitudes : (n,) float64, peak density of each blob.
    sigmas : (n,) float64, Å.
    symmetry : point group the blobs were replicated with (or declared for a model).
    """

    positions: NDArray[np.float64]
    amplitudes: NDArray[np.float64]
    sigmas: NDArray[np.float64]
    symmetry: str = "C1"

    @property
    def n_blobs(self) -> int:
        return int(self.positions.shape[0])

    @property
    def radius(self) -> float:
        """Radius (Å) of the sphere around the origin holding every blob out to 2σ."""
        return float(np.max(np.linalg.norm(self.positions, axis=1) + 2.0 * self.sigmas))

    def lateral_extent(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per blob: distance from the Z axis plus 2σ, and z minus/plus 2σ (Å).

        Returns ``(rho, z)`` each of shape (n,); used to pack particles on curved surfaces.
        """
        rho = np.hypot(self.positions[:, 0], self.positions[:, 1]) + 2.0 * self.sigmas
        return rho, self.positions[:, 2]

    def transformed(self, rotation: NDArray[np.float64]) -> NDArray[np.float64]:
        """Blob positions rotated by ``rotation`` (3, 3): (n, 3) Å."""
        return self.positions @ np.asarray(rotation).T


def _replicate(
    positions: NDArray, amplitudes: NDArray, sigmas: NDArray, symmetry: str
) -> Phantom:
    ops = point_group_operators(symmetry)
    pos = np.concatenate([positions @ op.T for op in ops])
    return Phantom(
        positions=pos,
        amplitudes=np.tile(amplitudes, len(ops)),
        sigmas=np.tile(sigmas, len(ops)),
        symmetry=symmetry,
    )


# Design of one asymmetric unit of the procedural phantom, in a wedge of the Cn group.
# Each row: rho (fraction of the outer radius), phi (fraction of the wedge angle),
# z (fraction of the outer radius), sigma (Å at diameter 210 Å).
_ASU_DESIGN = np.array(
    [
        # inner ring segment (alternating heights)
        [0.30, 0.10, -0.12, 6.0],
        [0.31, 0.35, 0.10, 6.0],
        [0.30, 0.60, -0.10, 6.0],
        [0.31, 0.85, 0.12, 6.0],
        # twisted spoke reaching outwards, below the mid-plane
        [0.40, 0.20, -0.20, 5.0],
        [0.50, 0.28, -0.22, 5.0],
        [0.60, 0.36, -0.24, 5.0],
        [0.70, 0.45, -0.24, 4.5],
        [0.80, 0.55, -0.22, 4.5],
        [0.90, 0.66, -0.20, 4.0],
        # knob on top, tapering upwards, off-centre in the wedge
        [0.62, 0.12, 0.25, 6.0],
        [0.64, 0.16, 0.38, 5.0],
        [0.66, 0.22, 0.49, 4.0],
        # tail hanging below at the outer edge
        [0.86, 0.82, -0.38, 4.0],
        [0.84, 0.90, -0.50, 3.5],
        # thin curved "helix" (fine detail)
        [0.46, 0.50, 0.02, 3.0],
        [0.50, 0.58, 0.07, 3.0],
        [0.54, 0.66, 0.12, 3.0],
        [0.57, 0.75, 0.17, 3.0],
        [0.59, 0.84, 0.22, 3.0],
        # small satellite between spoke and knob
        [0.75, 0.25, 0.05, 4.0],
        [0.95, 0.30, -0.05, 3.5],
    ]
)


def procedural_phantom(
    symmetry: str = "C6",
    *,
    diameter: float = 210.0,
    sigma_min: float = 0.0,
    seed: int = 0,
    jitter: float = 1.5,
) -> Phantom:
    """Procedural Gaussian phantom with point-group symmetry, symmetry axis along Z.

    One asymmetric unit holds a ring segment, a twisted spoke, a knob on top, a tail below and
    a thin curved strand: chiral and polar, so the orientation (and hand) is determinable.
    For Cn / Dn the design fills one 360°/n wedge (Dn: lifted above z = 0 so the two-fold
    about X maps it below); other groups get the same cluster shrunk and placed off-axis.

    Parameters
    ----------
    symmetry : RELION point-group name.
    diameter : approximate outer diameter (Å).
    sigma_min : lower bound for every blob σ (Å), e.g. one tilt-series pixel.
    seed : seed of the small positional jitter (``jitter`` Å × diameter/210, uniform ±).
    """
    point_group_operators(symmetry)  # validate the group name before designing
    name = symmetry.strip().upper()
    scale = diameter / 210.0
    outer = 0.5 * diameter / 1.05
    rho, phi_frac, zf, sig = _ASU_DESIGN.T
    if name[0] in "CD" and name[1:].isdigit():
        order = int(name[1:])
        wedge = 2.0 * np.pi / order
        phi = phi_frac * wedge
        if order == 1:  # give the single copy some bulk around the axis
            phi = phi_frac * 2.0 * np.pi
        x, y = outer * rho * np.cos(phi), outer * rho * np.sin(phi)
        z = outer * zf
        if name[0] == "D":
            z = z - z.min() + 0.12 * outer
        positions = np.stack([x, y, z], axis=1)
    else:
        compact = 0.35
        phi = phi_frac * 2.0 * np.pi
        positions = compact * outer * np.stack(
            [rho * np.cos(phi), rho * np.sin(phi), zf], axis=1
        ) + outer * np.array([0.30, 0.20, 0.55])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5048414E]))
    positions = positions + rng.uniform(-jitter, jitter, positions.shape) * scale
    sigmas = np.maximum(sig * scale, sigma_min)
    amplitudes = np.ones(len(positions))
    return _replicate(positions, amplitudes, sigmas, symmetry)


# ----------------------------------------------------------------------------------------
# Atomic models
# ----------------------------------------------------------------------------------------

_ATOMIC_NUMBER = {
    "H": 1, "C": 6, "N": 7, "O": 8, "NA": 11, "MG": 12, "P": 15, "S": 16, "CL": 17,
    "K": 19, "CA": 20, "MN": 25, "FE": 26, "CO": 27, "NI": 28, "CU": 29, "ZN": 30, "SE": 34,
}


def read_atoms(path: str | Path) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Heavy-atom coordinates and atomic numbers from a PDB or mmCIF file.

    PDB: ``ATOM``/``HETATM`` records (x, y, z in columns 31-54, element in 77-78, falling
    back to the atom name). mmCIF: the ``_atom_site`` loop (``Cartn_x/y/z``,
    ``type_symbol``). Hydrogens and waters are skipped; only the first model is read.

    Returns
    -------
    positions : (n, 3) Å; numbers : (n,) atomic numbers (unknown elements count as carbon).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read atomic model: {exc}", file=path) from exc
    is_cif = path.suffix.lower() in (".cif", ".mmcif") or "_atom_site." in text[:200000]
    positions, elements = (_parse_mmcif if is_cif else _parse_pdb)(text, path)
    if not positions:
        raise InputError("no atoms found (ATOM/HETATM records or _atom_site loop)", file=path)
    numbers = np.array([_ATOMIC_NUMBER.get(e.upper(), 6) for e in elements], dtype=np.float64)
    return np.asarray(positions, dtype=np.float64), numbers


def _parse_pdb(text: str, path: Path) -> tuple[list[list[float]], list[str]]:
    positions: list[list[float]] = []
    elements: list[str] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        record = line[:6].strip()
        if record == "ENDMDL":
            break
        if record not in ("ATOM", "HETATM"):
            continue
        if line[17:20].strip() in ("HOH", "WAT"):
            continue
        element = line[76:78].strip() if len(line) >= 78 else ""
        if not element:
            element = "".join(c for c in line[12:16] if c.isalpha())[:1]
        if element.upper() in ("H", "D"):
            continue
        try:
            positions.append([float(line[30:38]), float(line[38:46]), float(line[46:54])])
        except ValueError as exc:
            raise InputError(f"bad coordinates in line {lineno}: {line!r}", file=path) from exc
        elements.append(element)
    return positions, elements


def _parse_mmcif(text: str, path: Path) -> tuple[list[list[float]], list[str]]:
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "loop_" and i + 1 < len(lines) and lines[i + 1].strip().startswith("_atom_site."):
            break
        i += 1
    else:
        return [], []
    i += 1
    columns: list[str] = []
    while i < len(lines) and lines[i].strip().startswith("_atom_site."):
        columns.append(lines[i].strip().split()[0][len("_atom_site."):])
        i += 1
    try:
        cx, cy, cz = (columns.index(c) for c in ("Cartn_x", "Cartn_y", "Cartn_z"))
    except ValueError as exc:
        raise InputError("mmCIF _atom_site loop lacks Cartn_x/y/z", file=path) from exc
    ce = columns.index("type_symbol") if "type_symbol" in columns else None
    cres = columns.index("label_comp_id") if "label_comp_id" in columns else None
    cmodel = columns.index("pdbx_PDB_model_num") if "pdbx_PDB_model_num" in columns else None
    first_model: str | None = None
    positions: list[list[float]] = []
    elements: list[str] = []
    tokens: list[str] = []
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#") or line == "loop_" or line.startswith("_"):
            if tokens or positions:
                if line == "loop_" or line.startswith("_") or line.startswith("#"):
                    break
            continue
        tokens.extend(shlex.split(line, posix=True))
        while len(tokens) >= len(columns):
            row, tokens = tokens[: len(columns)], tokens[len(columns):]
            if cmodel is not None:
                first_model = first_model or row[cmodel]
                if row[cmodel] != first_model:
                    return positions, elements
            if cres is not None and row[cres] in ("HOH", "WAT"):
                continue
            element = row[ce] if ce is not None else "C"
            if element.upper() in ("H", "D"):
                continue
            try:
                positions.append([float(row[cx]), float(row[cy]), float(row[cz])])
            except ValueError as exc:
                raise InputError(f"bad coordinates in _atom_site row {row!r}", file=path) from exc
            elements.append(element)
    return positions, elements


def phantom_from_model(
    path: str | Path,
    *,
    symmetry: str = "C1",
    is_asymmetric_unit: bool = False,
    grain: float = 4.0,
    sigma_min: float = 0.0,
) -> Phantom:
    """Phantom from an atomic model: atoms (pooled on a grid of ``grain`` Å) as Gaussians.

    Parameters
    ----------
    path : PDB or mmCIF file.
    symmetry : declared point group; with ``is_asymmetric_unit`` the model is replicated by it
        (its coordinates must then be in the symmetry frame: axis Z through the origin).
        Otherwise the model is complete and re-centred on its density-weighted centroid.
    grain : pooling grid (Å); each occupied cell becomes one blob at the cell's weighted
        centroid with the summed atomic number. 0 keeps one blob per atom.
    sigma_min : lower bound of σ (Å). σ = max(sigma_min, 0.6·grain, 1 Å).

    Amplitudes are normalised to a mean of 1.
    """
    positions, numbers = read_atoms(path)
    if not is_asymmetric_unit:
        positions = positions - np.average(positions, axis=0, weights=numbers)
    if grain > 0:
        keys = np.floor(positions / grain).astype(np.int64)
        _, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        weight = np.bincount(inverse, weights=numbers)
        centroid = np.stack(
            [np.bincount(inverse, weights=numbers * positions[:, d]) for d in range(3)], axis=1
        ) / weight[:, None]
        positions, numbers = centroid, weight
    sigma = max(sigma_min, 0.6 * grain, 1.0)
    amplitudes = numbers / numbers.mean()
    sigmas = np.full(len(positions), sigma)
    if is_asymmetric_unit:
        return _replicate(positions, amplitudes, sigmas, symmetry)
    point_group_operators(symmetry)  # validate the name
    return Phantom(positions=positions, amplitudes=amplitudes, sigmas=sigmas, symmetry=symmetry)


# ----------------------------------------------------------------------------------------
# Rendering on a grid
# ----------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _splat3d(out: NDArray, pos: NDArray, amp: NDArray, sig: NDArray) -> None:  # pragma: no cover - numba
    nz, ny, nx = out.shape
    for a in range(pos.shape[0]):
        s = sig[a]
        reach = 4.5 * s
        cx, cy, cz = pos[a, 0], pos[a, 1], pos[a, 2]
        x0 = max(int(math.ceil(cx - reach)), 0)
        x1 = min(int(math.floor(cx + reach)), nx - 1)
        y0 = max(int(math.ceil(cy - reach)), 0)
        y1 = min(int(math.floor(cy + reach)), ny - 1)
        z0 = max(int(math.ceil(cz - reach)), 0)
        z1 = min(int(math.floor(cz + reach)), nz - 1)
        if x1 < x0 or y1 < y0 or z1 < z0:
            continue
        inv = 1.0 / (2.0 * s * s)
        gx = np.empty(x1 - x0 + 1)
        gy = np.empty(y1 - y0 + 1)
        for i in range(x1 - x0 + 1):
            d = x0 + i - cx
            gx[i] = math.exp(-d * d * inv)
        for j in range(y1 - y0 + 1):
            d = y0 + j - cy
            gy[j] = math.exp(-d * d * inv)
        for k in range(z1 - z0 + 1):
            d = z0 + k - cz
            gz = amp[a] * math.exp(-d * d * inv)
            for j in range(y1 - y0 + 1):
                w = gz * gy[j]
                for i in range(x1 - x0 + 1):
                    out[z0 + k, y0 + j, x0 + i] += w * gx[i]


def render_map(
    phantom: Phantom,
    box: int,
    pixel_size: float,
    *,
    rotation: NDArray[np.float64] | None = None,
    band_limit: bool = True,
) -> NDArray[np.float32]:
    """The phantom's density sampled on a ``box``³ grid, centre at voxel ``box//2``.

    Parameters
    ----------
    phantom : the blobs.
    box : grid size (voxels).
    pixel_size : voxel size (Å).
    rotation : optional (3, 3) applied to the blob positions (x' = rotation·x).
    band_limit : when some σ is below one voxel, render on a finer grid (integer factor) and
        Fourier-crop to ``box`` so the map is the band-limited density (what a binned
        reconstruction converges to) rather than an aliased sampling.

    Returns
    -------
    (box, box, box) float32 indexed [z, y, x]; values are density samples (independent of
    the pixel size up to the band limit).
    """
    factor = 1
    if band_limit:
        factor = int(min(4, max(1, math.ceil(pixel_size / max(phantom.sigmas.min(), 1e-6)))))
    fine_box = box * factor
    fine_px = pixel_size / factor
    positions = phantom.positions if rotation is None else phantom.transformed(rotation)
    # coarse voxel j sits at fine voxel factor*j, so the centre is fine voxel factor*(box//2)
    pos = positions / fine_px + factor * (box // 2)
    out = np.zeros((fine_box,) * 3, dtype=np.float64)
    _splat3d(out, np.ascontiguousarray(pos), phantom.amplitudes.astype(np.float64), phantom.sigmas / fine_px)
    if factor == 1:
        return out.astype(np.float32)
    # Fourier crop: the fine grid's origin (voxel 0) coincides with coarse voxel 0 because
    # coarse voxel j sits at fine voxel factor*j; keep frequencies |k| < coarse Nyquist.
    spectrum = np.fft.rfftn(out)
    keep = np.r_[0 : box // 2 + 1, fine_box - (box - box // 2 - 1) : fine_box]
    cropped = spectrum[np.ix_(keep, keep, np.arange(box // 2 + 1))]
    result = np.fft.irfftn(cropped, s=(box,) * 3, axes=(0, 1, 2)) / factor**3
    return result.astype(np.float32)
