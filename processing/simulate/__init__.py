"""Synthetic RELION 5 tomography datasets (the demo data and the ground truth of the tests).

``simulate_dataset(params, outdir)`` writes tilt images, ``tomograms.star`` (+ one STAR per
tilt series), ``particles.star`` (perturbed initial poses), ``particles_true.star``,
``optimisation_set.star``, ``truth_map.mrc`` and ``simulation.json``. ``render_map`` renders
the phantom at any pixel size / box for comparisons with reconstructions.
"""
from __future__ import annotations

from .dataset import (
    SimulatedTomogram,
    SimulationResult,
    build_phantom,
    load_parameters,
    planted_decoys,
    planted_duplicates,
    render_truth,
    simulate_dataset,
    truth_box_size,
)
from .params import SimulationParameters
from .phantom import Phantom, phantom_from_model, procedural_phantom, read_atoms, render_map
from .presets import DEMO, PRESETS, TEST, TUTORIAL, get_preset, sphere_capacity, with_particle_count

__all__ = [
    "SimulationParameters",
    "SimulationResult",
    "SimulatedTomogram",
    "Phantom",
    "PRESETS",
    "DEMO",
    "TEST",
    "TUTORIAL",
    "get_preset",
    "sphere_capacity",
    "with_particle_count",
    "simulate_dataset",
    "build_phantom",
    "load_parameters",
    "planted_decoys",
    "planted_duplicates",
    "render_truth",
    "truth_box_size",
    "procedural_phantom",
    "phantom_from_model",
    "read_atoms",
    "render_map",
]
