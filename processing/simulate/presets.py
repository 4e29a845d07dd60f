"""Named parameter sets for :func:`processing.simulate.simulate_dataset`."""
from __future__ import annotations

import math

import numpy as np

from ..errors import InputError
from .dataset import build_phantom
from .params import SimulationParameters
from .specimen import required_separation, sphere_lattice

__all__ = ["PRESETS", "DEMO", "TEST", "TUTORIAL", "get_preset", "sphere_capacity", "with_particle_count"]

#: The demo dataset: C6 hexamers (~210 Å) on four ~580 Å vesicles, one per tomogram,
#: ~280 particles, 41 tilts −60..+60 step 3°, 3 e/Å² per tilt, ts pixel 2.7 Å (bin 3 ≈ 8 Å),
#: 768² tilt images, tomograms 768×768×512, per-tilt particle SNR 0.05 at the first tilt.
DEMO = SimulationParameters(description="demo: C6 hexamers on vesicles, 4 tomograms")

#: A tiny dataset for unit tests (a few seconds): one tomogram, ~20 smaller particles,
#: 11 tilts, 256² images at 6 Å per pixel.
TEST = SimulationParameters(
    description="test: one small tomogram",
    n_tomograms=1,
    phantom_diameter_angst=150.0,
    sphere_radius_angst=330.0,
    sphere_radius_jitter_angst=0.0,
    tomogram_size=(256, 256, 160),
    image_size=(256, 256),
    pixel_size=6.0,
    original_pixel_size=1.5,
    tomogram_binning=4.0,
    tilt_min=-45.0,
    tilt_max=45.0,
    tilt_step=9.0,
    dose_per_tilt=5.0,
    defocus_range=(25000.0, 30000.0),
    hand=1,
    snr=0.05,
)

#: Shaped like the RELION 5 STA tutorial's HIV VLP data (EMPIAR-10164 subset), for scale
#: benchmarks: 5 tilt series of 41 tilts −60..+60 step 3°, 3 e/Å² per tilt, C6 hexamers
#: (~100 Å, like an HIV CA hexamer) in a lattice on 8 VLP-sized spheres per tomogram
#: (radius 620 ± 30 Å, ~1.2 µm diameter), 250 per sphere: 2,000 particles per tomogram,
#: 10,000 in all. :func:`with_particle_count` gives any other count (``tomodash simulate
#: --preset tutorial --particles N``).
#:
#: What differs from the tutorial, and why (it must write in minutes):
#:
#: * Stored pixel 2.7 Å (the tutorial's tilt series: 1.35 Å, 3710×3838 px). The images are
#:   the tutorial's field of view at bin 2: 1856×1920 px (3710/2, 3838/2 rounded up to even),
#:   tomograms 2000×2000×1500 ts-px (the tutorial's 4000×4000×3000 at 1.35 Å). Extraction
#:   binnings are relative to the stored pixel, so the tutorial's *bin 6, box 96* (8.1 Å,
#:   777 Å) is ``--bin 3 --b 96`` here and its *bin 2, box 256, crop 128* (2.7 Å) is
#:   ``--bin 1 --b 256 --crop 128``: the same output pixel sizes, boxes and physical extents.
#:   Nothing finer than 2.7 Å (Nyquist 5.4 Å) exists in these images.
#: * 2,000 particles per tomogram instead of ~6,100 (30,596 / 5): random placement fits
#:   about 8 spheres in this field. :func:`with_particle_count` adds tomograms of the same
#:   density beyond 10,000 (30,000 particles = 15 tomograms).
#: * A procedural C6 Gaussian phantom, not the CA hexamer; no membrane, no gold, no
#:   carbon; no tilt-series alignment errors beyond the simulator's per-tilt shifts (σ 10 Å).
#: * The hexamers on a sphere form a geodesic icosahedral net (252 sites, 250 kept: six
#:   neighbours, five at 12 sites; nearest neighbours 117-160 Å apart), each turned to face
#:   its nearest neighbour: like HIV's curved hexagonal lattice with pentamer defects, the
#:   neighbours inside the 500 Å mask give each particle's in-plane angle at the bin-6
#:   refinement's resolutions.
#:   A Fibonacci lattice with random in-plane angles (the other presets) gives none: the
#:   phantom alone is nearly round below 30 Å (it correlates 0.98 with itself turned by 30°
#:   at 40 Å), so a 60 Å start cannot find the angle and the two half sets later break the
#:   C6 symmetry each its own way.
#: * Per-tilt particle SNR 0.05 on the least-exposed tilt (the demo's); defocus 3-4 µm.
TUTORIAL = SimulationParameters(
    description="tutorial: HIV-like C6 lattice on VLP-sized spheres, 5 tomograms, 10,000 particles",
    n_tomograms=5,
    phantom_diameter_angst=100.0,
    spheres_per_tomogram=8,
    sphere_radius_angst=620.0,
    sphere_radius_jitter_angst=30.0,
    particle_gap_angst=10.0,
    max_particles_per_sphere=250,
    sphere_lattice="geodesic",
    tomogram_size=(2000, 2000, 1500),
    image_size=(1856, 1920),
    pixel_size=2.7,
    original_pixel_size=0.675,
    tomogram_binning=4.0,
    tilt_min=-60.0,
    tilt_max=60.0,
    tilt_step=3.0,
    dose_per_tilt=3.0,
    hand=-1,
)

PRESETS: dict[str, SimulationParameters] = {"demo": DEMO, "test": TEST, "tutorial": TUTORIAL}


def sphere_capacity(params: SimulationParameters) -> int:
    """How many particles the smallest sphere of ``params`` holds (radius minus its jitter):
    the size of the non-overlapping lattice the simulator builds on it, before any cap."""
    phantom = build_phantom(params)
    radius = params.sphere_radius_angst - params.sphere_radius_jitter_angst
    separation = required_separation(phantom, radius, params.particle_gap_angst)
    # The lattice's size does not depend on the random rotation; any generator will do.
    return len(sphere_lattice(separation, np.random.default_rng(0), kind=params.sphere_lattice))


def with_particle_count(params: SimulationParameters, n_particles: int) -> SimulationParameters:
    """``params`` changed to simulate at least ``n_particles`` particles, fewer than
    ``n_particles + n_tomograms × spheres_per_tomogram`` (exactly ``n_particles`` when it
    divides evenly).

    ``params.spheres_per_tomogram`` is taken as the most spheres a tomogram may hold. The
    tomograms keep ``params.n_tomograms`` unless that many cannot hold the particles, then
    more tomograms of the same density are added; each gets ``s`` spheres capped at ``c``
    particles (``max_particles_per_sphere``), with ``n_tomograms × s × c`` the total.

    Raises
    ------
    InputError
        ``n_particles`` < 1 (column ``n_particles``).
    """
    if n_particles < 1:
        raise InputError(f"must be ≥ 1 (got {n_particles!r})", column="n_particles")
    capacity = sphere_capacity(params)
    if params.max_particles_per_sphere > 0:
        capacity = min(capacity, params.max_particles_per_sphere)
    most_spheres = params.spheres_per_tomogram
    n_tomograms = max(params.n_tomograms, math.ceil(n_particles / (most_spheres * capacity)))
    per_tomogram = math.ceil(n_particles / n_tomograms)
    spheres = math.ceil(per_tomogram / capacity)
    cap = math.ceil(per_tomogram / spheres)
    return params.replace(n_tomograms=n_tomograms, spheres_per_tomogram=spheres, max_particles_per_sphere=cap)


def get_preset(name: str) -> SimulationParameters:
    """The preset called ``name``; :class:`InputError` listing the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}", column="preset") from None
