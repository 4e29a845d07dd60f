"""relion_postprocess from files to files: read and check the half maps, mask and MTF, compute
the curves and the sharpened map, write ``<root>.mrc``, ``<root>_masked.mrc``, ``<root>.star``
and ``logfile.pdf`` beside them (every file atomically; nothing is written when an input is bad).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np

from processing.errors import InputError
from processing.io.atomic import atomic_write
from processing.io.mrc import read_mrc, read_mrc_header, write_mrc

from .curves import NeverBelowThreshold, PostprocessCurves, postprocess_curves
from .mtf import MtfCurve, mtf_weights, read_mtf
from .outputs import postprocess_tables, write_postprocess_star
from .sharpen import SharpenResult, SharpenSettings, sharpen_map

__all__ = ["other_half", "PostprocessInputs", "PostprocessResult", "check_inputs", "run_postprocess",
           "BLANK_PDF"]

#: A valid one-page blank PDF: RELION's ``logfile.pdf`` node without its EPS plots (RELION
#: itself writes an empty logfile.pdf when ghostscript is missing).
BLANK_PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\n"
    b"trailer<</Root 1 0 R>>\n%%EOF\n"
)


def other_half(path: str) -> str | None:
    """RELION's ``FileName::getTheOtherHalf``: in the file name (not the directories) replace
    every ``half1`` by ``half2``, or else every ``half2`` by ``half1``; ``None`` if neither."""
    head, sep, name = path.rpartition("/")
    if "half1" in name:
        name = name.replace("half1", "half2")
    elif "half2" in name:
        name = name.replace("half2", "half1")
    else:
        return None
    return f"{head}{sep}{name}"


@dataclass(frozen=True)
class PostprocessInputs:
    """What a post-processing run reads (paths as the user gave them, relative to the
    project directory) and its options.

    ``angpix <= 0``: the half map's header pixel size. ``mtf_angpix < 0``: ``angpix``.
    """

    half1: str
    half2: str = ""
    mask: str = ""
    angpix: float = -1.0
    mtf: str = ""
    mtf_angpix: float = -1.0
    sharpen: SharpenSettings = field(default_factory=SharpenSettings)
    randomize_fsc_at: float = 0.8
    randomize_at_angstrom: float = -1.0
    force_mask: bool = False
    random_seed: int = 0

    @property
    def half2_path(self) -> str:
        """``half2`` or, when empty, the other half of ``half1`` ('' if it has none)."""
        return self.half2 or (other_half(self.half1) or "")


@dataclass(frozen=True)
class PostprocessResult:
    """What a run produced: the curves, the sharpening, the pixel size used and the files."""

    curves: PostprocessCurves
    sharpen: SharpenResult
    pixel_size: float
    files: tuple[Path, ...]


def _shape(path: str, *, field_name: str, base: Path) -> tuple[tuple[int, ...], float]:
    full = base / path
    if not path:
        raise InputError("no file given", column=field_name)
    if not full.is_file():
        raise InputError("file not found", file=path, column=field_name)
    header = read_mrc_header(full)
    shape = tuple(int(v) for v in header.shape)
    if len(shape) != 3 or len(set(shape)) != 1:
        raise InputError(f"expected a cubic 3D map, got shape {shape}", file=path, column=field_name)
    return shape, float(header.pixel_size)


def check_inputs(inputs: PostprocessInputs, *, base: str | PathLike = ".") -> tuple[MtfCurve | None, float]:
    """Check everything that can be checked before the work (headers, the mask, the MTF); returns the MTF
    (or ``None``) and the pixel size to use.

    Raises
    ------
    InputError
        Naming the file and the field (``fn_in``, ``fn_mask``, ``fn_mtf``, ``angpix``, ...).
    """
    base = Path(base)
    if not inputs.half1:
        raise InputError("no half map given", column="fn_in")
    half2 = inputs.half2_path
    if not half2:
        raise InputError("the file name contains neither 'half1' nor 'half2', so the other half map "
                         "cannot be found (give it with --i2)", file=inputs.half1, column="fn_in")
    s1, px = _shape(inputs.half1, field_name="fn_in", base=base)
    s2, _ = _shape(half2, field_name="fn_in", base=base)
    if s1 != s2:
        raise InputError(f"the two half maps differ in size: {s1} and {s2} ({half2})", file=inputs.half1,
                         column="fn_in")
    if inputs.mask:
        sm, _ = _shape(inputs.mask, field_name="fn_mask", base=base)
        if sm != s1:
            raise InputError(f"the mask is {sm} but the half maps are {s1}", file=inputs.mask, column="fn_mask")
        _checked_mask(inputs.mask, base)
    pixel = inputs.angpix if inputs.angpix > 0 else px
    if pixel <= 0:
        raise InputError("no pixel size: give --angpix (the header has none)", file=inputs.half1, column="angpix")
    mtf = None
    if inputs.mtf:
        if not (base / inputs.mtf).is_file():
            raise InputError("file not found", file=inputs.mtf, column="fn_mtf")
        mtf = read_mtf(base / inputs.mtf)
    return mtf, pixel


def _read_map(path: Path, shown: str) -> np.ndarray:
    try:
        return read_mrc(path).data.astype(np.float64)
    except InputError as exc:
        raise InputError(exc.message, file=shown) from None


def _checked_mask(name: str, base: Path) -> np.ndarray:
    """The mask's values, refused (naming the file) outside [0, 1] or without a voxel > 0.5."""
    mask = _read_map(base / name, name)
    lo, hi = float(mask.min()), float(mask.max())
    if lo < -1e-6 or hi - 1.0 > 1e-6:
        raise InputError(f"mask values must lie in [0, 1] (found {lo:g} .. {hi:g})", file=name, column="fn_mask")
    if not (mask > 0.5).any():
        raise InputError("the mask has no voxel above 0.5", file=name, column="fn_mask")
    return mask


def run_postprocess(
    inputs: PostprocessInputs,
    *,
    output_root: str,
    base: str | PathLike = ".",
    command: str = "",
    log: Callable[[str], None] = print,
) -> PostprocessResult:
    """Post-process two half maps as relion_postprocess does and write its files.

    Parameters
    ----------
    inputs
        Files and options (:class:`PostprocessInputs`).
    output_root
        Output root as written in the STAR file (``PostProcess/job005/postprocess``),
        relative to ``base``; its directory must exist.
    base
        The project directory the paths are relative to.
    command
        The command line, written as a comment at the top of the STAR file.
    log
        Progress messages.
    """
    base = Path(base)
    mtf, pixel = check_inputs(inputs, base=base)
    half2 = inputs.half2_path
    h1 = _read_map(base / inputs.half1, inputs.half1)
    h2 = _read_map(base / half2, half2)
    mask = _checked_mask(inputs.mask, base) if inputs.mask else None
    n = h1.shape[0]
    log(f"== Reading input half-reconstructions: {inputs.half1}, {half2} ({n}^3, {pixel:g} A/px)")
    try:
        curves = postprocess_curves(
            h1, h2, pixel_size=pixel, mask=mask, randomize_fsc_at=inputs.randomize_fsc_at,
            randomize_at_angstrom=inputs.randomize_at_angstrom, force_mask=inputs.force_mask,
            random_seed=inputs.random_seed,
        )
    except NeverBelowThreshold as exc:
        raise InputError(str(exc), file=inputs.half1, column="fn_in") from None
    if curves.randomize_at is not None:
        log(f"  + fraction f (solvent mask based): {curves.mask_fraction_f:g}")
        log(f"  + randomize phases beyond: {curves.randomise_from_angstrom:g} Angstroms")
    for warning in curves.warnings:
        log(f" WARNING: {warning}")
    mtf_grid = None
    if mtf is not None:
        mtf_px = inputs.mtf_angpix if inputs.mtf_angpix > 0 else pixel
        mtf_grid = mtf_weights(mtf, box=n, pixel_size=pixel, mtf_pixel_size=mtf_px)
    sharp = sharpen_map(0.5 * (h1 + h2), fsc_corrected=curves.corrected, pixel_size=pixel,
                        settings=inputs.sharpen, final_resolution=curves.resolution, mtf=mtf_grid)
    if sharp.fit is not None:
        log(f"  + slope of fit: {sharp.fit.slope:g}; intercept: {sharp.fit.intercept:g}; "
            f"correlation: {sharp.fit.correlation:g}")
    if abs(sharp.bfactor) > 0:
        log(f"  + apply b-factor of: {sharp.bfactor:g}")
    else:
        log(" WARNING: map will not be sharpened.")
    root = base / output_root
    files = [root.with_name(root.name + ".mrc")]
    write_mrc(files[0], sharp.map, pixel)
    if mask is not None:
        files.append(root.with_name(root.name + "_masked.mrc"))
        write_mrc(files[-1], sharp.map * mask, pixel)
    tables = postprocess_tables(curves, sharp, half1=inputs.half1, half2=half2, output_root=output_root,
                                mask=inputs.mask or None, auto_bfac=inputs.sharpen.auto_bfac)
    files.append(root.with_name(root.name + ".star"))
    write_postprocess_star(files[-1], tables, command=command)
    files.append(root.parent / "logfile.pdf")
    with atomic_write(files[-1], mode="wb") as handle:
        handle.write(BLANK_PDF)
    log(f"  + FINAL RESOLUTION: {curves.resolution:g}")
    return PostprocessResult(curves, sharp, pixel, tuple(files))
