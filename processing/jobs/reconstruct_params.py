"""Parameters of "Reconstruct particle" (``relion.reconstructparticletomo``)."""
from __future__ import annotations

from typing import ClassVar

import param

from processing.errors import InputError
from processing.geometry.symmetry import normalise_symmetry_name

from .base import FieldProblem
from .spec import JobSpec, OutputNode
from .tomo_inputs import TomoInputParameters, box_crop_problems

__all__ = ["ReconstructParameters", "SPEC"]


class ReconstructParameters(TomoInputParameters):
    """Average the particles in 3D from their current poses: half1, half2 and merged maps."""

    job_type_label: ClassVar[str] = "relion.reconstructparticletomo"
    process_dir: ClassVar[str] = "Reconstruct"
    is_tomo: ClassVar[bool] = False
    tabs: ClassVar[tuple[str, ...]] = ("I/O", "Average", "Running")
    program: ClassVar[str] = "relion_tomo_reconstruct_particle"
    cli_name: ClassVar[str] = "reconstruct"
    #: relion_tomo_reconstruct_particle flags that are not GUI fields: kept in ``other_args``.
    extra_flags: ClassVar[dict[str, dict]] = {
        "--no_ctf": {"action": "store_true", "help": "ignore the CTF (dose weighting only)"},
        "--taper": {"type": float, "default": 10.0, "help": "taper width at the box edge (px, default 10)"},
        "--j_out": {"type": int, "default": None, "help": "accepted for RELION compatibility (threads)"},
        "--j_in": {"type": int, "default": None, "help": "accepted for RELION compatibility (ignored)"},
        "--gpu": {"nargs": "?", "const": "", "default": None,
                  "help": "tomodash extension: backproject on CUDA GPUs through CuPy (relion_refine's device "
                          "syntax, one device per MPI process: '0:1' puts process 0 on device 0 and process 1 "
                          "on device 1; empty: spread over the visible devices)"},
    }

    binning = param.Number(
        1.0, bounds=(1, 16), step=1, label="Binning factor:",
        doc="Binning relative to the tilt-series pixel size; use the binning the particles "
            "were extracted at so the map can serve as their reference.",
        metadata={"tab": "Average", "var": "binning", "flag": "--bin"},
    )
    box_size = param.Integer(
        128, bounds=(32, 512), step=16, label="Box size (binned pix):",
        doc="Box (binned pixels) in which the map is reconstructed.",
        metadata={"tab": "Average", "var": "box_size", "flag": "--b"},
    )
    crop_size = param.Integer(
        -1, bounds=(-1, 512), step=16, label="Cropped box size (binned pix):",
        doc="Final box of the maps (binned pixels; -1: same as the box size). Use the "
            "cropped size of the extraction so the map matches the particles.",
        metadata={"tab": "Average", "var": "crop_size", "flag": "--crop"},
    )
    snr = param.Number(
        0.0, bounds=(0, None), softbounds=(0, 0.0001), step=0.00001, label="Wiener SNR constant:",
        doc="If positive, divide by CTF^2 + 1/SNR (Wiener filter). 0: RELION's heuristic, "
            "which divides by max(CTF^2, 0.001 x its radial average).",
        metadata={"tab": "Average", "var": "snr", "flag": "--SNR"},
    )
    sym_name = param.String(
        "C1", label="Symmetry:",
        doc="Point-group symmetry imposed on the map (C1, Cn, Dn, T, O, I1-I4), in RELION's "
            "orientation convention: Cn about Z, Dn with a 2-fold on X.",
        metadata={"tab": "Average", "var": "sym_name", "flag": "--sym"},
    )

    @property
    def effective_crop_size(self) -> int:
        return self.box_size if self.crop_size <= 0 else self.crop_size

    def problems(self) -> list[FieldProblem]:
        out = super().problems()
        out += box_crop_problems(self.box_size, self.crop_size)
        try:
            normalise_symmetry_name(self.sym_name)
        except InputError as exc:
            out.append(FieldProblem("sym_name", exc.message))
        return out


SPEC = JobSpec(
    name="reconstruct",
    params_class=ReconstructParameters,
    module="processing.jobs.reconstruct",
    outputs=(
        OutputNode("merged.mrc", "DensityMap.mrc.relion.tomo.map.reconstruct"),
        OutputNode("half1.mrc", "DensityMap.mrc.relion.tomo.halfmap.reconstruct", 99),
        OutputNode("optimisation_set.star", "TomoOptimisationSet.star.relion.tomo.reconstruct"),
    ),
    description="Reconstruct particle (relion.reconstructparticletomo)",
)
