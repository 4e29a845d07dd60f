"""Options of a 3D auto-refine run: the relion_refine flags the tomo "3D auto-refine" job uses.

Units as on relion_refine's command line: offsets in pixels (of the particle images),
angles in degrees, resolutions and diameters in Å.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

__all__ = ["RefineOptions", "SAMPLING_CHOICES", "healpix_order_from_sampling"]

#: The GUI's angular-sampling menu; the 0-based index is the HEALPix order (oversampling 1).
SAMPLING_CHOICES: tuple[str, ...] = (
    "30 degrees", "15 degrees", "7.5 degrees", "3.7 degrees", "1.8 degrees",
    "0.9 degrees", "0.5 degrees", "0.2 degrees", "0.1 degrees",
)


def healpix_order_from_sampling(choice: str) -> int:
    """HEALPix order of a GUI angular-sampling choice (``"7.5 degrees"`` -> 2)."""
    try:
        return SAMPLING_CHOICES.index(choice)
    except ValueError:
        raise ValueError(f"unknown angular sampling {choice!r}; choose one of {', '.join(SAMPLING_CHOICES)}") from None


@dataclass(frozen=True)
class RefineOptions:
    """Everything that drives one 3D auto-refine run (relion_refine flag in brackets)."""

    # I/O
    output_root: str                                   # --o  (e.g. "Refine3D/job004/run")
    optimisation_set: str | None = None                # --ios
    particles: str | None = None                       # --i
    tomograms: str | None = None                       # --tomograms
    trajectories: str | None = None                    # --trajectories
    reference: str | None = None                       # --ref
    solvent_mask: str | None = None                    # --solvent_mask
    continue_from: str | None = None                   # --continue  (run_itNNN_optimiser.star)
    # Reference
    firstiter_cc: bool = False                         # --firstiter_cc (ref NOT on absolute greyscale)
    trust_ref_size: bool = False                       # --trust_ref_size (resize reference if needed)
    ini_high: float = -1.0                             # --ini_high (Å; <= 0: no initial low-pass)
    symmetry: str = "C1"                               # --sym
    # CTF
    ctf: bool = False                                  # --ctf
    ctf_intact_first_peak: bool = False                # --ctf_intact_first_peak
    # Optimisation
    particle_diameter: float = -1.0                    # --particle_diameter (Å; < 0: box-based)
    zero_mask: bool = False                            # --zero_mask
    flatten_solvent: bool = False                      # --flatten_solvent
    solvent_correct_fsc: bool = False                  # --solvent_correct_fsc
    tau2_fudge: float = 1.0                            # --tau2_fudge
    # Sampling
    oversampling: int = 1                              # --oversampling
    healpix_order: int = 2                             # --healpix_order
    psi_step: float = -1.0                             # --psi_step (deg; < 0: HEALPix step)
    auto_local_healpix_order: int = 4                  # --auto_local_healpix_order
    offset_range: float = 6.0                          # --offset_range (px)
    offset_step: float = 2.0                           # --offset_step (px)
    sigma_tilt: float = -1.0                           # --sigma_tilt (deg; <= 0: no tilt prior)
    auto_ignore_angles: bool = False                   # --auto_ignore_angles
    auto_resol_angles: bool = False                    # --auto_resol_angles
    perturb: float = 0.5                               # --perturb
    offset_prior_sigma: float = 10.0                   # --offset (Å, initial sigma of offsets)
    # Gold standard
    auto_refine: bool = True                           # --auto_refine
    split_random_halves: bool = True                   # --split_random_halves
    low_resol_join_halves: float = 40.0                # --low_resol_join_halves (Å)
    norm: bool = False                                 # --norm (off for tomography, as RELION)
    scale: bool = False                                # --scale
    auto_iter_max: int = 999                           # --auto_iter_max
    random_seed: int = -1                              # --random_seed (-1: from the clock)
    # Compute
    pad: int = 2                                       # --pad
    pool: int = 1                                      # --pool
    preread_images: bool = False                       # --preread_images
    scratch_dir: str | None = None                     # --scratch_dir
    combine_weights_via_disc: bool = True              # off with --dont_combine_weights_via_disc
    parallel_disc_io: bool = True                      # off with --no_parallel_disc_io
    threads: int = 1                                   # --j
    gpu: str | None = None                             # --gpu (None: CPU; "" or ids: GPU)
    # Anything else from the command line, kept for the record (note.txt, optimiser.star).
    command_line: tuple[str, ...] = field(default_factory=tuple)

    def with_changes(self, **changes) -> "RefineOptions":
        return replace(self, **changes)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
