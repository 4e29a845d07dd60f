"""Facts derived from a form's values, shown beside it (box size in Å, Nyquist, angular step,
MPI layout). Each rule applies when the fields it needs exist, so it stays generic."""
from __future__ import annotations

import os
from pathlib import Path

from processing.errors import InputError

__all__ = ["derived_facts"]


def _pixel_size(session) -> float | None:
    try:
        px = session.settings.get("pixel_size") if session is not None else None
        return float(px) if px else None
    except (TypeError, ValueError):
        return None


def _map_header(session, path: str):
    from processing.io.mrc import read_mrc_header

    if not path:
        return None
    full = Path(path) if os.path.isabs(path) or session is None else session.root / path
    try:
        return read_mrc_header(full)
    except (InputError, OSError):
        return None


def derived_facts(params, session=None) -> list[str]:
    facts: list[str] = []
    px = _pixel_size(session)
    binning = getattr(params, "binning", None)
    if px and binning:
        bpx = px * float(binning)
        for field, what in (("box_size", "box"), ("crop_size", "cropped box")):
            size = getattr(params, field, None)
            if size and size > 0:
                facts.append(f"{what}: {size} px × {bpx:.2f} Å = {size * bpx:.0f} Å at bin {float(binning):g} "
                             f"(tilt series {px:g} Å/px)")
        facts.append(f"Nyquist at bin {float(binning):g}: {2 * bpx:.1f} Å")
    fn_ref = getattr(params, "fn_ref", None)
    header = _map_header(session, fn_ref) if fn_ref else None
    if header is not None and header.pixel_size:
        box = header.shape[-1]
        facts.append(f"reference: {box} px × {header.pixel_size:.2f} Å = {box * header.pixel_size:.0f} Å box, "
                     f"Nyquist {2 * header.pixel_size:.1f} Å")
        diameter = getattr(params, "particle_diameter", None)
        if diameter and diameter > box * header.pixel_size:
            facts.append(f"⚠ mask diameter {diameter:g} Å is larger than the box ({box * header.pixel_size:.0f} Å)")
    for field, what in (("sampling", "initial angular sampling"), ("auto_local_sampling", "local searches from")):
        if field == "sampling" and getattr(params, "job_type_label", "") == "relion.class3d":
            what = "angular sampling"              # the same in every iteration of a classification
        value = getattr(params, field, None)
        if isinstance(value, str) and value.endswith("degrees"):
            try:
                from processing.refine.options import healpix_order_from_sampling

                facts.append(f"{what}: {value} (HEALPix order {healpix_order_from_sampling(value)})")
            except (InputError, ValueError):
                pass
    mpi = getattr(params, "nr_mpi", None)
    if mpi and getattr(params, "job_type_label", "").startswith("relion.refine3d"):
        if mpi == 1:
            facts.append("1 MPI process: leader and both half sets in one process")
        elif mpi >= 3 and mpi % 2 == 1:
            facts.append(f"{mpi} MPI processes: 1 leader + {(mpi - 1) // 2} follower(s) per half set")
    if mpi and getattr(params, "job_type_label", "") == "relion.class3d":
        facts.append("1 MPI process: leader and all particles in one process" if mpi == 1 else
                     f"{mpi} MPI processes: 1 leader + {mpi - 1} follower(s) sharing all particles (no half sets)")
        classes = getattr(params, "nr_classes", None)
        if classes:
            facts.append(f"{classes} class{'es' if classes > 1 else ''}, {params.nr_iter} iterations")
    threads = getattr(params, "nr_threads", None)
    if mpi and threads:
        facts.append(f"{mpi * threads} CPU core(s) in all ({mpi} × {threads} threads)")
    return facts
