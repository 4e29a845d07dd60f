"""Particles as the refinement sees them: tilt images (or 3D volumes), their projection
geometry and CTF² arrays (spec 5.2, 5.15).

Fourier arrays are RELION-normalised half transforms ``(N, N//2+1)`` with the real-space
origin at the box centre; frequencies in pixels of the particle box ``N``.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from processing.errors import InputError
from processing.fourier.ctf import CtfParameters, ctf_value, fourier_frequency_grid
from processing.fourier.fft import half_radius, rfft2_centered, rfft3_centered
from processing.fourier.masks import soft_mask_outside
from processing.geometry.euler import euler_to_matrix
from processing.io.mrc import read_mrc
from processing.io.particles import ParticleSet
from processing.io.paths import resolve_path
from processing.io.tomograms import TomogramSet

__all__ = ["ParticleGeometry", "ParticleImages", "ParticleStore", "images_are_3d", "relion_round", "SUBTOMO_MULTIPLICITY_THRESHOLD",
           "available_memory_bytes", "check_preread_fits"]

#: relion_refine's --subtomo_multi_thr: Fourier voxels of 3D pseudo-subtomograms with a lower
#: multiplicity carry no data.
SUBTOMO_MULTIPLICITY_THRESHOLD = 0.01


def available_memory_bytes() -> int | None:
    """Memory the kernel says a new allocation can use without swapping (``MemAvailable`` of
    /proc/meminfo, bytes); ``None`` where that is unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_preread_fits(needed: int, n_particles: int, *, available: int | None = None) -> None:
    """Refuse ``--preread_images`` when this process's pre-read particles (``needed`` bytes,
    :meth:`ParticleStore.preread_bytes`) would not fit in ``available`` bytes (default: the
    machine's available memory now; unknown: no check).

    Raises
    ------
    InputError
        Naming ``--preread_images`` ("Pre-read all particles into RAM?"), both sizes in GB.
    """
    available = available_memory_bytes() if available is None else available
    if available is None or needed <= available:
        return
    raise InputError(
        f"Pre-read all particles into RAM? needs about {needed / 1e9:.1f} GB for this process's {n_particles} "
        f"particles (their Fourier images, masked copies and CTFs), but only {available / 1e9:.1f} GB is "
        "available: set it to No (the particles are then read from disc as needed), or spread the particles "
        "over more MPI processes on more machines", column="--preread_images")


def images_are_3d(particles: ParticleSet) -> bool:
    """3D pseudo-subtomograms unless the file says its images are 2D stacks
    (``rlnTomoSubTomosAre2DStacks`` 1 in data_general), as relion_refine decides: RELION-4
    particle files, which have no data_general, hold 3D pseudo-subtomograms."""
    return particles.are_2d_stacks is not True


@dataclass
class ParticleGeometry:
    """Per-particle geometry that does not change during refinement.

    rotations: (F, 3, 3) ``P_f[:3,:3] @ A_sub`` of the particle's F images (2D stacks) or
    ``A_sub`` (1, 3, 3) for 3D volumes; ctf: per image CTF parameters (None: no CTF);
    dose: per image pre-exposure (e/Å²); bfactor_per_dose: tomogram's value.
    """

    index: int
    name: str
    tomogram: str
    image_file: Path
    ctf_file: Path | None
    rotations: NDArray[np.float64]
    ctf: list[CtfParameters]
    dose: NDArray[np.float64]
    bfactor_per_dose: float


@dataclass
class ParticleImages:
    """Loaded Fourier data of one particle.

    images: (F, N, N//2+1) complex64, unmasked; masked: same, soft-masked for the E-step;
    ctf2: (F, N, N//2+1) float32, the CTF array C of the image model ``X = C·V + noise``: CTF²
    (incl. dose) for CTF-premultiplied data, the CTF itself (|CTF| if phase-flipped) otherwise;
    multiplicity: 3D path only, (1, N, N, N//2+1);
    premultiplied: whether the images are CTF-premultiplied (``rlnCtfDataAreCtfPremultiplied``):
    back-projection then inserts X with weight C, otherwise C·X with weight C²;
    shell_power: 3D path only, (1, N//2+1) float64, Σ|masked|² per shell (non-redundant half)
    before the empty voxels are zeroed: RELION takes the power beyond the current size from the
    masked volume before its subtomogram correction.
    """

    geometry: ParticleGeometry
    images: NDArray[np.complex64]
    masked: NDArray[np.complex64]
    ctf2: NDArray[np.float32]
    multiplicity: NDArray[np.float32] | None = None
    premultiplied: bool = True
    shell_power: NDArray[np.float64] | None = None
    preshift_px: NDArray[np.float64] | None = None


def relion_round(values: NDArray[np.floating]) -> NDArray[np.float64]:
    """RELION's ``ROUND``: to the nearest integer, halves away from zero."""
    values = np.asarray(values, dtype=np.float64)
    return np.where(values > 0, np.floor(values + 0.5), -np.floor(-values + 0.5))


def shift_whole_pixels(volume: NDArray, shift_px: NDArray) -> NDArray:
    """``volume`` (Z, Y, X) moved by the whole-pixel ``shift_px`` (x, y, z): ``out(r) = in(r -
    shift)``, zero where the source lies outside the box (RELION's ``selfTranslate`` with
    ``DONT_WRAP``)."""
    out = np.zeros_like(volume)
    src, dst = [], []
    for axis, s in zip((2, 1, 0), shift_px):
        s, n = int(s), volume.shape[axis]
        if abs(s) >= n:
            return out
        src.append(slice(max(0, -s), n - max(0, s)))
        dst.append(slice(max(0, s), n - max(0, -s)))
    out[dst[2], dst[1], dst[0]] = volume[src[2], src[1], src[0]]
    return out


class ParticleStore:
    """Loads particles for the E-step: pre-read into RAM, copied to scratch, or read on demand.

    Parameters
    ----------
    particles, tomograms
        The particle set (after extraction) and its tomogram set.
    box, pixel_size
        Particle box (px) and pixel size (Å) of the images: one value for all particles, or one
        per particle (optics groups extracted with different boxes or binnings).
    mask_radius
        Radius (Å) of the soft circular/spherical mask of the E-step (particle diameter / 2).
    zero_mask
        Fill outside the mask with the soft background mean (True) or with noise (False).
    do_ctf, intact_first_peak
        CTF correction options.
    preread
        Keep every particle's Fourier data in memory after the first load.
    scratch_dir
        Copy the particle files there first and read them from there.
    root
        Project directory for relative paths.
    """

    def __init__(
        self,
        particles: ParticleSet,
        tomograms: TomogramSet,
        *,
        box: int | NDArray[np.integer],
        pixel_size: float | NDArray[np.floating],
        mask_radius: float,
        zero_mask: bool = True,
        do_ctf: bool = True,
        intact_first_peak: bool = False,
        preread: bool = False,
        scratch_dir: str | os.PathLike | None = None,
        root: Path | None = None,
        seed: int = 0,
    ) -> None:
        n = len(particles)
        self.boxes = np.broadcast_to(np.asarray(box, dtype=np.int64), (n,)).copy()
        self.pixel_sizes = np.broadcast_to(np.asarray(pixel_size, dtype=np.float64), (n,)).copy()
        self.mask_radius = float(mask_radius)
        self.zero_mask = zero_mask
        self.do_ctf = do_ctf
        self.intact_first_peak = intact_first_peak
        self.preread = preread
        self.seed = seed
        self.is_3d = images_are_3d(particles)
        self.geometries = self._geometries(particles, tomograms, root)
        # RELION's optics flags (absent: false), per particle.
        self.premultiplied = particles.optics_column("rlnCtfDataAreCtfPremultiplied", default=0.0) > 0
        self.phase_flipped = particles.optics_column("rlnCtfDataArePhaseFlipped", default=0.0) > 0
        self._cache: dict[int, ParticleImages] = {}
        self._raw: dict[int, NDArray[np.float32]] = {}
        self._weights: dict[int, NDArray[np.float32]] = {}
        if scratch_dir:
            self._copy_to_scratch(Path(scratch_dir))

    # ---- geometry -------------------------------------------------------------------

    def _geometries(self, particles: ParticleSet, tomograms: TomogramSet, root: Path | None) -> list[ParticleGeometry]:
        names = particles.particle_names()
        tomo_names = particles.tomo_names()
        images = particles.image_names()
        if images is None:
            raise InputError("particles have no rlnImageName: run Extract subtomos first",
                             file=particles.path, table="particles", column="rlnImageName")
        sub = particles.subtomogram_angles()
        a_sub = np.broadcast_to(np.eye(3), (len(particles), 3, 3)) if sub is None else euler_to_matrix(
            sub[:, 0], sub[:, 1], sub[:, 2])
        positions = particles.positions(tomograms, apply_origins=True)
        visible = particles.visible_frames() if not self.is_3d else None
        ctf_images = None
        if self.is_3d:
            if "rlnCtfImage" not in particles.particles.columns:
                raise InputError("3D pseudo-subtomograms need rlnCtfImage (the weights file)",
                                 file=particles.path, table="particles", column="rlnCtfImage")
            ctf_images = particles.particles["rlnCtfImage"].astype(str).to_numpy()
        out: list[ParticleGeometry] = []
        tilt_ctf_cache: dict[str, object] = {}
        for i in range(len(particles)):
            tomo = tomograms[str(tomo_names[i])]
            image_file = resolve_path(str(images[i]), root=root, referrer=particles.path)
            if self.is_3d:
                out.append(ParticleGeometry(
                    index=i, name=str(names[i]), tomogram=tomo.name, image_file=image_file,
                    ctf_file=resolve_path(str(ctf_images[i]), root=root, referrer=particles.path),
                    # The pseudo-subtomogram is already in the subtomogram frame (extraction
                    # inserted each tilt at P_f A_sub), so only A_part remains to be searched.
                    rotations=np.eye(3)[None], ctf=[], dose=np.zeros(0),
                    bfactor_per_dose=tomo.bfactor_per_electron_dose,
                ))
                continue
            if visible is None:
                raise InputError("2D stacks need rlnTomoVisibleFrames", file=particles.path,
                                 table="particles", column="rlnTomoVisibleFrames", row=i + 1)
            frames = np.flatnonzero(np.asarray(visible[i]) > 0)
            if tomo.name not in tilt_ctf_cache:
                tilt_ctf_cache[tomo.name] = tomo.projection_rotations()
            proj = tilt_ctf_cache[tomo.name]
            if frames.size and frames.max() >= proj.shape[0]:
                raise InputError(
                    f"rlnTomoVisibleFrames has {len(visible[i])} entries, tilt series {tomo.name} "
                    f"{proj.shape[0]} tilts", file=particles.path, table="particles",
                    column="rlnTomoVisibleFrames", row=i + 1)
            ctf = tomo.ctf(positions[i:i + 1])
            params = [ctf.parameters(0, int(f)) for f in frames]
            # relion_refine's per-image CTF ignores the per-tilt B-factor (spec 2.7).
            params = [CtfParameters(**{**p.__dict__, "bfactor": 0.0}) for p in params]
            out.append(ParticleGeometry(
                index=i, name=str(names[i]), tomogram=tomo.name, image_file=image_file, ctf_file=None,
                rotations=proj[frames] @ a_sub[i], ctf=params, dose=ctf.dose[frames],
                bfactor_per_dose=tomo.bfactor_per_electron_dose,
            ))
        return out

    def _copy_to_scratch(self, scratch: Path) -> None:
        scratch.mkdir(parents=True, exist_ok=True)
        for g in self.geometries:
            for attr in ("image_file", "ctf_file"):
                src = getattr(g, attr)
                if src is None:
                    continue
                dst = scratch / f"{g.index:07d}_{src.name}"
                if not dst.exists():
                    shutil.copyfile(src, dst)
                setattr(g, attr, dst)

    def __len__(self) -> int:
        return len(self.geometries)

    def preread_bytes(self, indices: list[int] | NDArray[np.integer]) -> int:
        """Bytes the pre-read cache of :meth:`load` holds once particles ``indices`` are loaded.

        Per 2D stack of F tilts and box n: the half transforms and their masked copy (complex64)
        and the CTF array (float32), F·n·(n/2+1)·20 bytes, plus the raw float32 images
        (F·n²·4) without ``--zero_mask``. Per 3D particle: half transforms, masked copy
        (complex64), CTF² and multiplicity (float32), n·n·(n/2+1)·24 bytes, plus the raw volume
        (n³·4) and the weights file (2n·n·(n/2+1)·4).
        """
        total = 0
        for i in np.asarray(indices, dtype=np.int64):
            n = int(self.boxes[i])
            half = n * (n // 2 + 1)
            if self.is_3d:
                total += n * half * 24 + n**3 * 4 + 2 * n * half * 4
            else:
                frames = len(self.geometries[i].ctf)
                total += frames * half * 20 + (0 if self.zero_mask else frames * n * n * 4)
        return int(total)

    # ---- images ---------------------------------------------------------------------

    def _ctf2(self, g: ParticleGeometry) -> NDArray[np.float32]:
        """The image model's CTF array: CTF² for premultiplied data, else CTF (|CTF| when the
        data are phase-flipped), dose weighting included (spec 5.12)."""
        n = int(self.boxes[g.index])
        # relion_refine's CTF images put the Nyquist row at +n/2: it changes only pixels beyond
        # the projections' radius, which the accelerated code leaves out of its log-likelihood
        # where the CTF is near zero (estep._likelihood_constants).
        kx, ky = fourier_frequency_grid(n, float(self.pixel_sizes[g.index]), positive_nyquist_row=True)
        out = np.ones((len(g.ctf), n, n // 2 + 1), dtype=np.float32)
        if not self.do_ctf:
            return out
        for f, params in enumerate(g.ctf):
            c = ctf_value(kx, ky, params, dose=float(g.dose[f]), bfactor_per_dose=g.bfactor_per_dose,
                          intact_first_peak=self.intact_first_peak)
            if self.premultiplied[g.index]:
                out[f] = c * c
            else:
                out[f] = np.abs(c) if self.phase_flipped[g.index] else c
        return out

    def spectrum_transforms(self, i: int, *, masked: bool) -> NDArray[np.complex64]:
        """(F, ...) half transforms of particle ``i`` as relion_refine's initial noise estimate
        reads them: soft-masked or not, and for 3D data before the subtomogram correction (the
        empty voxels keep the mask's spread)."""
        if not self.is_3d:
            item = self.load(i)
            return item.masked if masked else item.images
        g = self.geometries[i]
        data = read_mrc(g.image_file).data.astype(np.float64)
        volume = self._mask(data, i, None) if masked else data
        return rfft3_centered(volume).astype(np.complex64)[None]

    def load(self, i: int, *, noise: NDArray | None = None, offset_px: NDArray | None = None) -> ParticleImages:
        """Fourier data of particle ``i`` (cached when pre-reading). Without ``--zero_mask``,
        ``noise`` (the particle's noise spectrum per shell) fills the solvent of the masked copy.

        ``offset_px`` (3,), the particle's current offset in its pixels as relion_refine holds
        it (:meth:`~processing.refine.estep.ParticleState.offset_px`; None: zero): a 3D volume
        is first moved by it, rounded to whole pixels, in real space (relion_refine pre-shifts
        every image that is not a 2D tilt stack, ``getFourierTransformsAndCtfs``); the result's
        ``preshift_px`` says by how much. 2D stacks ignore it."""
        fill = None if self.zero_mask else noise
        preshift = None
        if self.is_3d:
            preshift = relion_round(np.zeros(3) if offset_px is None else np.asarray(offset_px, dtype=np.float64))
        cached = self._cache.get(i)
        if cached is not None and preshift is not None and not np.array_equal(cached.preshift_px, preshift):
            cached = None
        if cached is not None and fill is None:
            return cached
        g = self.geometries[i]
        if i in self._raw:
            data = self._raw[i].astype(np.float64)
        else:
            if not g.image_file.exists():
                raise InputError("particle image not found", file=g.image_file)
            data = read_mrc(g.image_file).data.astype(np.float64)
        raw = data
        if preshift is not None and np.any(preshift):
            data = shift_whole_pixels(data, preshift)
        if fill is not None and cached is not None:
            return self._with_noise_fill(cached, data, fill)
        if self.is_3d:
            item = self._load_3d(g, data, preshift)
        else:
            if data.ndim == 2:
                data = data[None]
            box = int(self.boxes[i])
            if data.shape[0] != len(g.ctf) or data.shape[1:] != (box, box):
                raise InputError(
                    f"stack has shape {data.shape}, expected ({len(g.ctf)}, {box}, {box}) "
                    "from rlnTomoVisibleFrames and rlnImageSize", file=g.image_file)
            item = ParticleImages(
                geometry=g,
                images=rfft2_centered(data).astype(np.complex64),
                masked=self._masked_transform(data, i, None),
                ctf2=self._ctf2(g), premultiplied=bool(self.premultiplied[i]),
            )
        if self.preread:
            self._cache[i] = item
            if not self.zero_mask or self.is_3d:
                # 3D volumes are shifted again when their rounded offset changes.
                self._raw[i] = raw.astype(np.float32)
        if fill is not None:
            item = self._with_noise_fill(item, data, fill)
        return item

    def _with_noise_fill(self, item: ParticleImages, data: NDArray, noise: NDArray) -> ParticleImages:
        masked = self._masked_transform(data, item.geometry.index, noise).reshape(item.masked.shape)
        if item.multiplicity is not None:
            masked[item.multiplicity == 0] = 0
        return replace(item, masked=masked)

    def _masked_transform(self, data: NDArray, i: int, noise: NDArray | None) -> NDArray[np.complex64]:
        transform = rfft3_centered if self.is_3d else rfft2_centered
        return transform(self._mask(data, i, noise)).astype(np.complex64)

    def _mask(self, data: NDArray, i: int, noise_sigma2: NDArray | None = None) -> NDArray:
        """Soft mask of the particle diameter; outside it the soft-weighted background mean
        (``--zero_mask``), or coloured noise of spectrum ``noise_sigma2`` (per shell) drawn
        with the particle's seed (RELION fills with noise from the current model's spectrum;
        its own random numbers are not reproduced)."""
        ndim = 3 if self.is_3d else 2
        radius_px = self.mask_radius / float(self.pixel_sizes[i])
        masked = soft_mask_outside(data, radius=radius_px, edge_width=5.0, ndim=ndim)
        if self.zero_mask or noise_sigma2 is None:
            return masked
        # Outside the mask: coloured noise drawn from the current noise spectrum (seeded per particle).
        from processing.fourier.masks import radius_grid

        rng = np.random.default_rng(self.seed + i)
        shape = data.shape[-ndim:]
        r = radius_grid(shape)
        t = np.clip((r - radius_px) / 5.0, 0.0, 1.0)
        t = 0.5 - 0.5 * np.cos(np.pi * t)
        noise = rng.standard_normal(data.shape)
        spec = np.fft.rfftn(noise, axes=tuple(range(-ndim, 0)))
        shells = np.minimum(np.rint(half_radius(shape[0], ndim=ndim)).astype(int), len(noise_sigma2) - 1)
        spec *= np.sqrt(np.maximum(noise_sigma2[shells], 0.0) * 2.0) * np.sqrt(np.prod(shape))
        noise = np.fft.irfftn(spec, s=shape, axes=tuple(range(-ndim, 0)))
        return data * (1.0 - t) + noise * t

    def _load_3d(self, g: ParticleGeometry, data: NDArray, preshift: NDArray | None) -> ParticleImages:
        n = int(self.boxes[g.index])
        if data.shape != (n, n, n):
            raise InputError(f"volume has shape {data.shape}, expected {(n, n, n)}", file=g.image_file)
        weights = self._weights.get(g.index)
        if weights is None:
            weights = read_mrc(g.ctf_file).data.astype(np.float32)
            if self.preread:
                self._weights[g.index] = weights
        if weights.shape != (2 * n, n, n // 2 + 1):
            raise InputError(f"weights volume has shape {weights.shape}, expected {(2 * n, n, n // 2 + 1)}",
                             file=g.ctf_file)
        masked = self._mask(data, g.index, None)
        # RELION's default subtomo correction (get3DCTFAndMulti, applySubtomoCorrection): the file
        # holds CTF² (used as |.|) over the multiplicity M; voxels with M below
        # --subtomo_multi_thr (0.01) are zeroed in the images, the CTF and M.
        ctf2 = np.abs(weights[:n]) if self.do_ctf else np.ones_like(weights[:n])
        multiplicity = np.where(weights[n:] > SUBTOMO_MULTIPLICITY_THRESHOLD, weights[n:], 0.0).astype(np.float32)
        if np.any(weights[n:] < 0):
            raise InputError("the multiplicity volume has negative values", file=g.ctf_file)
        # get3DCTFAndMulti reads the CTF and multiplicity only within radius n/2; beyond, both
        # are zero, so the corner voxels count as empty.
        multiplicity[half_radius(n, ndim=3) > n // 2] = 0.0
        empty = multiplicity < SUBTOMO_MULTIPLICITY_THRESHOLD
        images = rfft3_centered(data).astype(np.complex64)
        masked_ft = rfft3_centered(masked).astype(np.complex64)
        shell_power = _shell_power(masked_ft, n)
        for array in (images, masked_ft, ctf2):
            array[empty] = 0
        return ParticleImages(
            geometry=g, images=images[None], masked=masked_ft[None], ctf2=ctf2[None].astype(np.float32),
            multiplicity=multiplicity[None], shell_power=shell_power[None],
            preshift_px=np.zeros(3) if preshift is None else preshift,
        )


def _shell_power(transform: NDArray[np.complexfloating], n: int) -> NDArray[np.float64]:
    """(n//2+1,) Σ|F|² per shell ``round(|k|)`` of a 3D half transform, non-redundant pixels."""
    from .frequencies import highres_pixels

    flat, shells = highres_pixels(n, 0, 3)
    power = np.abs(transform.reshape(-1)[flat].astype(np.complex128)) ** 2
    return np.bincount(shells, power, minlength=n // 2 + 1)[: n // 2 + 1]
