"""Parameters of a simulated RELION 5 tomography dataset (one frozen dataclass).

Units are given with every field: Å for lengths, ts-px for tilt-series pixels, degrees for
angles, e/Å² for doses, kV / mm for the microscope.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

__all__ = ["SPHERE_LATTICES", "SimulationParameters"]

#: The arrangements of particles on a sphere (``SimulationParameters.sphere_lattice``).
SPHERE_LATTICES = ("fibonacci", "geodesic")


@dataclass(frozen=True)
class SimulationParameters:
    """Everything that defines a simulated dataset; the same parameters and seed give the
    same bytes.

    Specimen
    --------
    symmetry : point group of the phantom (RELION name: ``C6``, ``D3``, ...).
    pdb : optional PDB/mmCIF model; ``None`` = procedural Gaussian phantom.
    pdb_is_asymmetric_unit : replicate the model by ``symmetry`` (model coordinates must then
        be in the symmetry frame, symmetry axis Z through the origin); otherwise the model is
        taken as complete and centred on its centroid.
    pdb_grain_angst : atoms are pooled into pseudo-atoms on a grid of this spacing (Å);
        0 = one Gaussian per atom.
    phantom_diameter_angst : lateral extent of the procedural phantom (Å).
    phantom_seed : seed of the procedural phantom's blob jitter (independent of ``seed``, so
        that datasets made with different seeds share the same particle).
    blob_sigma_min_px : lower bound of every Gaussian's σ, in ts-px (≥ 1 keeps the sampled
        Gaussians essentially alias-free).

    Tomograms and particles
    -----------------------
    n_tomograms : number of tilt series / tomograms.
    spheres_per_tomogram : vesicles per tomogram; particles sit on their surfaces.
    sphere_radius_angst : radius of the sphere on which particle centres lie (Å).
    sphere_radius_jitter_angst : uniform ± jitter of the radius per sphere (Å).
    particle_gap_angst : extra clearance between neighbouring particles (Å).
    max_particles_per_sphere : cap (after the non-overlapping lattice is built); 0 = no cap.
    sphere_lattice : how the particles sit on a sphere. ``"fibonacci"``: a Fibonacci lattice
        (nearly uniform, no neighbour order), each particle at a random in-plane angle.
        ``"geodesic"``: a geodesic icosahedral net (hexagonal, with five-fold sites at the 12
        icosahedron vertices, as an HIV capsid lattice has pentamers), each particle's
        in-plane angle locked to the net (its x axis towards its nearest neighbour): the
        neighbours then give the in-plane orientation at low resolution, as a real lattice
        does, where a lone C6 particle shows none (a 100 Å hexamer is nearly round at 40 Å).
    tomogram_size : ``(rlnTomoSizeX, Y, Z)`` in ts-px.
    image_size : tilt-image ``(width, height)`` in ts-px.
    pixel_size : ``rlnTomoTiltSeriesPixelSize`` (Å / ts-px).
    original_pixel_size : ``rlnMicrographOriginalPixelSize`` (Å), informational.
    tomogram_binning : ``rlnTomoTomogramBinning``, informational (no tomogram is written).

    Acquisition
    -----------
    tilt_min, tilt_max, tilt_step : nominal tilt range (degrees).
    dose_per_tilt : e/Å² per tilt image; ``rlnMicrographPreExposure`` = dose before a tilt.
    z_rot : ``rlnTomoZRot`` (degrees) of the first tomogram; later ones add ``z_rot_spread``
        times (index - mean index).
    z_rot_spread : see ``z_rot`` (degrees).
    shift_sigma_angst : σ of the per-tilt ``rlnTomoX/YShiftAngst`` (Å).
    defocus_range : per-tomogram mean defocus drawn uniformly from this range (Å, underfocus > 0).
    astigmatism_range : DefocusU - DefocusV drawn uniformly from this range (Å).
    defocus_tilt_sigma : per-tilt defocus jitter σ (Å).
    hand : ``rlnTomoHand`` (+1 / -1), sign of the depth-dependent defocus (spec 2.6).
    voltage, cs, amplitude_contrast : kV, mm, Q0.

    Image formation
    ---------------
    ctf : apply the CTF (with depth-dependent defocus); False = pure projections.
    dose_weighting : apply the dose-damage envelope (spec 2.7).
    snr : highest per-tilt particle SNR of each tilt series; ``None`` = no noise.
        Per-tilt SNR = mean over particles of the variance of the particle's noise-free image
        signal within its circular mask (radius ``mask_radius_angst``) / the noise variance.
        All tilts of a series share one noise variance (same dose per tilt), set so that the
        tilt with the most signal (usually the first, least exposed) has SNR = ``snr``; every
        other tilt has less (dose damage). The achieved value of every tilt is reported.
    mask_radius_angst : radius of the SNR mask (Å); ``None`` = half the phantom's diameter.
    patch_size : size of the per-particle rendering window (ts-px, even); ``None`` = large
        enough for the particle plus the CTF delocalisation of its significant frequencies.

    Initial poses (particles.star; particles_true.star holds the truth)
    ------------------------------------------------------------------
    rot_error_deg : largest ``rlnAngleRot`` error (degrees; in-plane about the particle's
        symmetry axis): normal with σ = half of it, clipped at ± it.
    tilt_error_deg, psi_error_deg : σ of normal errors on ``rlnAngleTilt`` / ``rlnAnglePsi``.
    position_error_angst : RMS 3D error of the initial centred coordinates (Å).

    Planted duplicates (off by default; the default outputs do not change)
    -----------------------------------------------------------------------
    duplicate_fraction : fraction of each tomogram's particles that get a second pick (0..1;
        the count is rounded), as a picker that finds one particle twice: its own position
        error, orientation error and row in particles.star. ``simulation.json`` lists them
        (``planted_duplicates``: second pick -> first pick of the same particle).
    duplicate_distance_angst : ``(min, max)`` distance (Å) of a second pick from the particle's
        true centre, uniform in that range, in a random direction.

    Planted decoys (off by default; the default outputs do not change)
    ------------------------------------------------------------------
    decoy_fraction : fraction of each tomogram's lattice sites (0..1, the count is rounded)
        where no complex is placed: the site is left as empty membrane (a membrane patch is
        rendered there, curved like its vesicle) and picked like a particle — a "bad
        particle" with the picker's pose (normal from the membrane, random in-plane angle,
        the same pose errors). The complexes at the other sites and all picks keep the rows,
        names and poses of the dataset without decoys. ``simulation.json`` lists them
        (``planted_decoys``); ``particles_true.star`` holds the decoy pick's membrane pose.

    Output
    ------
    truth_box : box of ``truth_map.mrc`` (voxels at ``pixel_size``); ``None`` = automatic.
    absolute_paths : write absolute paths in the STAR files (default: relative to the
        dataset directory, which must then be the working directory of the reader).
    seed : master seed of every random draw.
    """

    # specimen
    symmetry: str = "C6"
    pdb: str | None = None
    pdb_is_asymmetric_unit: bool = False
    pdb_grain_angst: float = 4.0
    phantom_diameter_angst: float = 210.0
    phantom_seed: int = 0
    blob_sigma_min_px: float = 1.0
    # tomograms and particles
    n_tomograms: int = 4
    spheres_per_tomogram: int = 1
    sphere_radius_angst: float = 580.0
    sphere_radius_jitter_angst: float = 20.0
    particle_gap_angst: float = 10.0
    max_particles_per_sphere: int = 0
    sphere_lattice: str = "fibonacci"
    tomogram_size: tuple[int, int, int] = (768, 768, 512)
    image_size: tuple[int, int] = (768, 768)
    pixel_size: float = 2.7
    original_pixel_size: float = 0.675
    tomogram_binning: float = 8.0
    # acquisition
    tilt_min: float = -60.0
    tilt_max: float = 60.0
    tilt_step: float = 3.0
    dose_per_tilt: float = 3.0
    z_rot: float = 85.0
    z_rot_spread: float = 1.5
    shift_sigma_angst: float = 10.0
    defocus_range: tuple[float, float] = (30000.0, 40000.0)
    astigmatism_range: tuple[float, float] = (100.0, 600.0)
    defocus_tilt_sigma: float = 100.0
    hand: int = -1
    voltage: float = 300.0
    cs: float = 2.7
    amplitude_contrast: float = 0.1
    # image formation
    ctf: bool = True
    dose_weighting: bool = True
    snr: float | None = 0.05
    mask_radius_angst: float | None = None
    patch_size: int | None = None
    # initial poses
    rot_error_deg: float = 30.0
    tilt_error_deg: float = 5.0
    psi_error_deg: float = 5.0
    position_error_angst: float = 16.0
    # planted duplicates
    duplicate_fraction: float = 0.0
    duplicate_distance_angst: tuple[float, float] = (3.0, 20.0)
    # planted decoys
    decoy_fraction: float = 0.0
    # output
    truth_box: int | None = None
    absolute_paths: bool = False
    seed: int = 0
    # free-form note written into simulation.json
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first invalid field."""

        def bad(name: str, why: str) -> InputError:
            return InputError(f"{why} (got {getattr(self, name)!r})", column=name)

        if self.pixel_size <= 0:
            raise bad("pixel_size", "must be > 0 Å")
        if self.n_tomograms < 1:
            raise bad("n_tomograms", "must be ≥ 1")
        if self.spheres_per_tomogram < 1:
            raise bad("spheres_per_tomogram", "must be ≥ 1")
        if self.sphere_radius_angst <= 0:
            raise bad("sphere_radius_angst", "must be > 0 Å")
        if len(self.tomogram_size) != 3 or min(self.tomogram_size) < 8:
            raise bad("tomogram_size", "must be three sizes ≥ 8 ts-px")
        if len(self.image_size) != 2 or min(self.image_size) < 16:
            raise bad("image_size", "must be two sizes ≥ 16 ts-px")
        if self.tilt_step <= 0 or self.tilt_max < self.tilt_min:
            raise bad("tilt_step", "tilt range must be non-empty with a positive step")
        if self.hand not in (1, -1):
            raise bad("hand", "must be +1 or -1")
        if not 0.0 <= self.amplitude_contrast < 1.0:
            raise bad("amplitude_contrast", "must lie in [0, 1)")
        if self.snr is not None and self.snr <= 0:
            raise bad("snr", "must be > 0 (or None for no noise)")
        if self.blob_sigma_min_px <= 0:
            raise bad("blob_sigma_min_px", "must be > 0")
        if self.patch_size is not None and (self.patch_size < 16 or self.patch_size % 2):
            raise bad("patch_size", "must be an even number ≥ 16")
        if self.truth_box is not None and self.truth_box < 8:
            raise bad("truth_box", "must be ≥ 8")
        if self.dose_per_tilt < 0:
            raise bad("dose_per_tilt", "must be ≥ 0")
        if self.defocus_range[0] > self.defocus_range[1]:
            raise bad("defocus_range", "must be (low, high)")
        if self.sphere_lattice not in SPHERE_LATTICES:
            raise bad("sphere_lattice", f"must be one of {', '.join(SPHERE_LATTICES)}")
        if not 0.0 <= self.duplicate_fraction <= 1.0:
            raise bad("duplicate_fraction", "must lie in [0, 1]")
        if not 0.0 <= self.decoy_fraction <= 1.0:
            raise bad("decoy_fraction", "must lie in [0, 1]")
        low, high = self.duplicate_distance_angst
        if not 0.0 <= low <= high:
            raise bad("duplicate_distance_angst", "must be (min, max) with 0 <= min <= max Å")

    def replace(self, **changes: Any) -> "SimulationParameters":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists). The planted-duplicate and planted-decoy
        fields and the sphere lattice are left out while they hold their defaults, so default
        datasets keep their bytes."""
        out = dataclasses.asdict(self)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for names in (("duplicate_fraction", "duplicate_distance_angst"), ("decoy_fraction",), ("sphere_lattice",)):
            if all(out[n] == defaults[n] for n in names):
                for name in names:
                    out.pop(name)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
