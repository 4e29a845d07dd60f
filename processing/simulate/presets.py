"""Named parameter sets for :func:`processing.simulate.simulate_dataset`."""
from __future__ import annotations

from ..errors import InputError
from .params import SimulationParameters

__all__ = ["PRESETS", "DEMO", "TEST", "get_preset"]

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

PRESETS: dict[str, SimulationParameters] = {"demo": DEMO, "test": TEST}


def get_preset(name: str) -> SimulationParameters:
    """The preset called ``name``; :class:`InputError` listing the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}", column="preset") from None
