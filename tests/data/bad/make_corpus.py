"""The bad-input corpus: broken copies of a small valid dataset, one directory per case.

Generated, never hand-kept: ``tests/test_bad_input.py`` builds a valid simulated dataset
(and, for 3D auto-refine, its extraction and a reference) and calls :func:`make_corpus`,
which copies it once per case (tilt images hard-linked, STAR files copied) and breaks one
thing in the copy. Run it alone to look at the cases::

    python tests/data/bad/make_corpus.py OUT_DIR

Each :class:`Case` says which entry points must refuse it and what the error must name:
``extract``, ``reconstruct`` (``tomodash extract/reconstruct`` with RELION's flags),
``import`` (``tomodash session new --import``), ``run`` (``tomodash run`` in a session) and
``refine`` (``tomodash refine`` with relion_refine's flags, on the refine dataset).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd

from processing.io.mrc import read_mrc, write_mrc
from processing.io.star import read_star, write_star

__all__ = ["Case", "CASES", "DATASET_ENTRY_POINTS", "REFINE_ENTRY_POINTS", "make_corpus", "clone",
           "make_valid_dataset", "make_valid_refine"]

#: entry points that read a raw dataset (tomograms.star + particles.star + tilt images)
DATASET_ENTRY_POINTS = ("extract", "reconstruct", "import", "run")
#: entry points that read an extracted particle set and a reference
REFINE_ENTRY_POINTS = ("refine",)
#: the tilt series and the tilt the image cases break (tilt index 3, 0-based: row 4)
TOMO = "TS_01"
TILT = 3

#: Checks only the pixels can show (NaN/Inf) are made while a job reads them, not by an
#: import (which reads no pixel) nor by a session before it launches a job.
PIXEL_ONLY = ("extract", "reconstruct")


@dataclass(frozen=True)
class Case:
    """One broken input.

    Attributes
    ----------
    name
        Directory name of the case.
    base
        ``"dataset"`` (a raw dataset) or ``"refine"`` (extracted particles + reference).
    entry_points
        Which entry points must refuse it (exit status 2).
    expect
        Substrings the error message must contain: the file, and table/column/row where the
        problem has them.
    break_it
        Breaks the copy in the directory given.
    symmetry
        ``--symmetry`` for the import (``None``: not given).
    """

    name: str
    base: str
    entry_points: tuple[str, ...]
    expect: tuple[str, ...]
    break_it: Callable[[Path], None] = field(repr=False)
    symmetry: str | None = None


# ---- building the valid inputs ------------------------------------------------------------------

def make_valid_dataset(out: Path) -> Path:
    """The TEST simulator preset (one 256² tilt series of 11 tilts, ~35 particles): ~3 s."""
    from processing.simulate import simulate_dataset
    from processing.simulate.presets import TEST

    simulate_dataset(dataclasses.replace(TEST, n_tomograms=1), out)
    return out


def make_valid_refine(dataset: Path, out: Path) -> Path:
    """``dataset`` cloned into ``out`` plus ``Extract/`` (2D stacks, bin 4, box 32, crop 24)
    and ``ref.mrc`` (a smooth blob on the particles' 24 px, 24 Å grid)."""
    from dashboard.cli import main

    clone(dataset, out)
    cwd = os.getcwd()
    os.chdir(out)  # relative paths in the extraction's STAR files, as in a project
    try:
        code = main(["extract", "--i", "optimisation_set.star", "--o", "Extract/", "--b", "32", "--crop", "24",
                     "--bin", "4", "--stack2d", "--j", "1"])
    finally:
        os.chdir(cwd)
    if code != 0:
        raise RuntimeError(f"extraction of the valid refine dataset failed ({code})")
    z, y, x = np.mgrid[-12:12, -12:12, -12:12]
    blob = np.exp(-(x * x + y * y + z * z) / (2 * 4.0 ** 2)).astype(np.float32)
    write_mrc(out / "ref.mrc", blob, 24.0)
    return out


def clone(src: Path, dst: Path) -> Path:
    """Copy a dataset: MRC files hard-linked (free; a case replaces, never edits, them),
    everything else copied."""
    for path in sorted(src.rglob("*")):
        target = dst / path.relative_to(src)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix in (".mrc", ".mrcs"):
            try:
                os.link(path, target)
                continue
            except OSError:
                pass
        shutil.copy2(path, target)
    return dst


# ---- breaking helpers ---------------------------------------------------------------------------

def _tilt_image(root: Path, tilt: int = TILT) -> Path:
    return sorted((root / "tilt_series" / TOMO).glob(f"{TOMO}_{tilt:03d}_*.mrc"))[0]


def _replace_bytes(path: Path, data: bytes) -> None:
    path.unlink()  # break the hard link first: the valid dataset must stay valid
    path.write_bytes(data)


def _replace_array(path: Path, data: np.ndarray, pixel: float = 6.0) -> None:
    path.unlink()
    write_mrc(path, data, pixel, stack=path.suffix == ".mrcs")


def _poke(path: Path, index: tuple[int, ...], value: float) -> None:
    """Set one pixel of an image (e.g. to Inf), keeping the rest."""
    image = read_mrc(path)
    data = np.array(image.data, dtype=np.float32)
    data[index] = value
    _replace_array(path, data, image.pixel_size)


def _write_complex(path: Path, shape: tuple[int, ...]) -> None:
    path.unlink()
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ones(shape, dtype=np.complex64))


def _set_mode(path: Path, mode: int) -> None:
    data = bytearray(path.read_bytes())
    data[12:16] = np.int32(mode).tobytes()
    _replace_bytes(path, bytes(data))


def _edit_table(path: Path, table: str, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    blocks = read_star(path)
    blocks[table] = edit(blocks[table].copy())
    write_star(path, blocks)


def _set_value(path: Path, table: str, column: str, row: int, value: str) -> None:
    """Put the text ``value`` at 1-based ``row`` of ``column``."""
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df[column] = df[column].astype(object)
        df.loc[row - 1, column] = value
        return df
    _edit_table(path, table, edit)


def _drop_column(path: Path, table: str, column: str) -> None:
    _edit_table(path, table, lambda df: df.drop(columns=[column]))


def _no_rows(path: Path, table: str) -> None:
    _edit_table(path, table, lambda df: df.iloc[:0])


def _image(root: Path) -> Path:
    """The first extracted particle's 2D stack (refine dataset)."""
    blocks = read_star(root / "Extract" / "particles.star")
    return root / str(blocks["particles"]["rlnImageName"].iloc[0])


def _tilt_series(root: Path) -> Path:
    return root / "tilt_series" / f"{TOMO}.star"


ALL = DATASET_ENTRY_POINTS
ROW4 = ("table data_TS_01", "column rlnMicrographName", "row 4")

CASES: list[Case] = [
    # -- tilt images: the file itself -------------------------------------------------------
    Case("tilt_corrupt", "dataset", ALL, ("TS_01_003_", *ROW4),
         lambda r: _replace_bytes(_tilt_image(r), b"not an MRC file\n" * 10)),
    Case("tilt_truncated", "dataset", ALL, ("TS_01_003_", "truncated", *ROW4),
         lambda r: _replace_bytes(_tilt_image(r), _tilt_image(r).read_bytes()[:60000])),
    Case("tilt_header_only", "dataset", ALL, ("TS_01_003_", *ROW4),
         lambda r: _replace_bytes(_tilt_image(r), _tilt_image(r).read_bytes()[:1024])),
    Case("tilt_mode99", "dataset", ALL, ("TS_01_003_", "mode 99", *ROW4), lambda r: _set_mode(_tilt_image(r), 99)),
    Case("tilt_complex", "dataset", ALL, ("TS_01_003_", "complex", *ROW4),
         lambda r: _write_complex(_tilt_image(r), (256, 256))),
    Case("tilt_wrong_size", "dataset", ALL, ("TS_01_003_", "128 x 256", *ROW4),
         lambda r: _replace_array(_tilt_image(r), np.zeros((256, 128), np.float32))),
    Case("tilt_first_wrong_size", "dataset", ALL, ("TS_01_000_", "200 x 200", "row 1"),
         lambda r: _replace_array(_tilt_image(r, 0), np.zeros((200, 200), np.float32))),
    Case("tilt_missing", "dataset", ALL, ("TS_01.star", "TS_01_003_", *ROW4), lambda r: _tilt_image(r).unlink()),
    Case("tilt_all_nan", "dataset", PIXEL_ONLY, ("TS_01_003_", "NaN", "tilt 4"),
         lambda r: _replace_array(_tilt_image(r), np.full((256, 256), np.nan, np.float32))),
    Case("tilt_one_inf", "dataset", PIXEL_ONLY, ("TS_01_003_", "NaN or infinite", "tilt 4"),
         lambda r: _poke(_tilt_image(r), (100, 100), np.inf)),
    # -- tilt-series STAR files -------------------------------------------------------------
    Case("tiltseries_star_missing", "dataset", ALL, ("TS_01.star", "not found"), lambda r: _tilt_series(r).unlink()),
    Case("tiltseries_nan_defocus", "dataset", ALL, ("TS_01.star", "table data_TS_01", "column rlnDefocusU", "row 4"),
         lambda r: _set_value(_tilt_series(r), TOMO, "rlnDefocusU", 4, "nan")),
    Case("tiltseries_inf_dose", "dataset", ALL,
         ("TS_01.star", "table data_TS_01", "column rlnMicrographPreExposure", "row 2"),
         lambda r: _set_value(_tilt_series(r), TOMO, "rlnMicrographPreExposure", 2, "inf")),
    Case("tiltseries_no_rows", "dataset", ALL, ("TS_01.star", "data_TS_01"), lambda r: _no_rows(_tilt_series(r), TOMO)),
    # -- tomograms.star -----------------------------------------------------------------------
    Case("tomograms_negative_pixel", "dataset", ALL,
         ("tomograms.star", "table data_global", "column rlnTomoTiltSeriesPixelSize", "row 1"),
         lambda r: _set_value(r / "tomograms.star", "global", "rlnTomoTiltSeriesPixelSize", 1, "-6.0")),
    Case("tomograms_size_zero", "dataset", ALL, ("tomograms.star", "table data_global", "column rlnTomoSizeX", "row 1"),
         lambda r: _set_value(r / "tomograms.star", "global", "rlnTomoSizeX", 1, "0")),
    Case("tomograms_nan_amplitude", "dataset", ALL,
         ("tomograms.star", "table data_global", "column rlnAmplitudeContrast", "row 1"),
         lambda r: _set_value(r / "tomograms.star", "global", "rlnAmplitudeContrast", 1, "nan")),
    Case("tomograms_missing_column", "dataset", ALL, ("tomograms.star", "table data_global", "column rlnVoltage"),
         lambda r: _drop_column(r / "tomograms.star", "global", "rlnVoltage")),
    Case("tomograms_no_rows", "dataset", ALL, ("tomograms.star",), lambda r: _no_rows(r / "tomograms.star", "global")),
    Case("tomograms_corrupt", "dataset", ALL, ("tomograms.star",),
         lambda r: (r / "tomograms.star").write_text("data_global\nloop_\n_rlnTomoName #1\n_rlnVoltage #2\nTS_01\n")),
    # -- particles.star ------------------------------------------------------------------------
    Case("particles_unknown_tomogram", "dataset", ALL,
         ("particles.star", "table data_particles", "column rlnTomoName", "row 5"),
         lambda r: _set_value(r / "particles.star", "particles", "rlnTomoName", 5, "TS_99")),
    Case("particles_no_rows", "dataset", ALL, ("particles.star", "table data_particles"),
         lambda r: _no_rows(r / "particles.star", "particles")),
    Case("particles_missing_column", "dataset", ALL,
         ("particles.star", "table data_particles", "column rlnCenteredCoordinateXAngst"),
         lambda r: _drop_column(r / "particles.star", "particles", "rlnCenteredCoordinateXAngst")),
    Case("particles_non_numeric", "dataset", ALL,
         ("particles.star", "table data_particles", "column rlnCenteredCoordinateYAngst", "row 3"),
         lambda r: _set_value(r / "particles.star", "particles", "rlnCenteredCoordinateYAngst", 3, "abc")),
    Case("particles_nan_coordinate", "dataset", ALL,
         ("particles.star", "table data_particles", "column rlnCenteredCoordinateZAngst", "row 7"),
         lambda r: _set_value(r / "particles.star", "particles", "rlnCenteredCoordinateZAngst", 7, "nan")),
    Case("particles_inf_angle", "dataset", ALL, ("particles.star", "table data_particles", "column rlnAngleTilt", "row 2"),
         lambda r: _set_value(r / "particles.star", "particles", "rlnAngleTilt", 2, "inf")),
    Case("particles_nan_origin", "dataset", ALL,
         ("particles.star", "table data_particles", "column rlnOriginXAngst", "row 6"),
         lambda r: _set_value(r / "particles.star", "particles", "rlnOriginXAngst", 6, "nan")),
    Case("particles_missing_file", "dataset", ("extract", "reconstruct", "run"), ("particles.star",),
         lambda r: (r / "particles.star").unlink()),
    Case("particles_corrupt", "dataset", ALL, ("particles.star",),
         lambda r: (r / "particles.star").write_text("data_particles\nloop_\n_rlnTomoName #1\n\"unclosed\n")),
    # -- import settings -----------------------------------------------------------------------
    Case("symmetry_unknown", "dataset", ("import",), ("symmetry", "Q5"), lambda r: None, symmetry="Q5"),
    # -- 3D auto-refine: references --------------------------------------------------------------
    Case("ref_nan", "refine", REFINE_ENTRY_POINTS, ("ref.mrc", "NaN"),
         lambda r: _replace_array(r / "ref.mrc", np.full((24, 24, 24), np.nan, np.float32), 24.0)),
    Case("ref_zero", "refine", REFINE_ENTRY_POINTS, ("ref.mrc", "all zeros"),
         lambda r: _replace_array(r / "ref.mrc", np.zeros((24, 24, 24), np.float32), 24.0)),
    Case("ref_complex", "refine", REFINE_ENTRY_POINTS, ("ref.mrc", "complex"),
         lambda r: _write_complex(r / "ref.mrc", (24, 24, 24))),
    Case("ref_truncated", "refine", REFINE_ENTRY_POINTS, ("ref.mrc",),
         lambda r: _replace_bytes(r / "ref.mrc", (r / "ref.mrc").read_bytes()[:5000])),
    Case("ref_mode99", "refine", REFINE_ENTRY_POINTS, ("ref.mrc", "mode 99"), lambda r: _set_mode(r / "ref.mrc", 99)),
    Case("ref_missing", "refine", REFINE_ENTRY_POINTS, ("ref.mrc", "not found"), lambda r: (r / "ref.mrc").unlink()),
    # -- 3D auto-refine: particles -------------------------------------------------------------
    Case("refine_particles_empty", "refine", REFINE_ENTRY_POINTS, ("particles.star", "table data_particles", "empty"),
         lambda r: _no_rows(r / "Extract" / "particles.star", "particles")),
    Case("refine_particles_duplicate", "refine", REFINE_ENTRY_POINTS,
         ("particles.star", "table data_particles", "column rlnImageName", "listed twice"),
         lambda r: _edit_table(r / "Extract" / "particles.star", "particles",
                               lambda df: pd.concat([df, df.iloc[[2]]], ignore_index=True))),
    Case("refine_nan_angle", "refine", REFINE_ENTRY_POINTS,
         ("particles.star", "table data_particles", "column rlnAngleRot", "row 4"),
         lambda r: _set_value(r / "Extract" / "particles.star", "particles", "rlnAngleRot", 4, "nan")),
    Case("refine_nan_origin", "refine", REFINE_ENTRY_POINTS,
         ("particles.star", "table data_particles", "column rlnOriginYAngst", "row 2"),
         lambda r: _set_value(r / "Extract" / "particles.star", "particles", "rlnOriginYAngst", 2, "nan")),
    Case("refine_tomogram_size_zero", "refine", REFINE_ENTRY_POINTS,
         ("tomograms.star", "table data_global", "column rlnTomoSizeZ", "row 1"),
         lambda r: _set_value(r / "tomograms.star", "global", "rlnTomoSizeZ", 1, "0")),
    Case("refine_image_complex", "refine", REFINE_ENTRY_POINTS, ("_stack2d.mrcs", "complex"),
         lambda r: _write_complex(_image(r), (11, 24, 24))),
    Case("refine_image_nan", "refine", REFINE_ENTRY_POINTS, ("_stack2d.mrcs", "NaN"),
         lambda r: _replace_array(_image(r), np.full((11, 24, 24), np.nan, np.float32), 24.0)),
    Case("refine_image_header_only", "refine", REFINE_ENTRY_POINTS, ("_stack2d.mrcs",),
         lambda r: _replace_bytes(_image(r), _image(r).read_bytes()[:1024])),
    Case("refine_image_missing", "refine", REFINE_ENTRY_POINTS, ("_stack2d.mrcs", "not found"),
         lambda r: _image(r).unlink()),
]


def make_corpus(dataset: Path, refine: Path | None, out: Path, *, names: list[str] | None = None) -> dict[str, Path]:
    """Write every case (or those in ``names``) under ``out``; returns ``{name: directory}``.

    Parameters
    ----------
    dataset
        A valid raw dataset (:func:`make_valid_dataset`).
    refine
        A valid refine dataset (:func:`make_valid_refine`), or None to skip the refine cases.
    """
    made: dict[str, Path] = {}
    for case in CASES:
        if names is not None and case.name not in names:
            continue
        base = dataset if case.base == "dataset" else refine
        if base is None:
            continue
        directory = clone(base, out / case.name)
        case.break_it(directory)
        made[case.name] = directory
    return made


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/data/bad/make_corpus.py OUT_DIR")
    target = Path(sys.argv[1]).resolve()
    valid = make_valid_dataset(target / "_valid_dataset")
    valid_refine = make_valid_refine(valid, target / "_valid_refine")
    for case_name, case_dir in make_corpus(valid, valid_refine, target).items():
        print(f"{case_name:<28} {case_dir}")
