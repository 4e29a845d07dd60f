"""Reconstruct particle (RELION 5 ``relion_tomo_reconstruct_particle``)."""
from .reconstruct import ReconstructionResult, ReconstructionSettings, reconstruct_particles

__all__ = ["ReconstructionSettings", "ReconstructionResult", "reconstruct_particles"]
