"""Tomogram sets: RELION 5 ``tomograms.star`` and its per-tilt-series STAR files (spec 1.2, 1.3).

RELION 5 layout: table ``data_global`` (one row per tilt series) in ``tomograms.star``, and for
each tilt series a STAR file (path in ``rlnTomoTiltSeriesStarFile``) holding one loop table
``data_<rlnTomoName>`` with one row per tilt image ("frame", in file order).

RELION 4 layout (still read): no ``rlnTomoTiltSeriesStarFile``; the per-tilt tables
``data_<rlnTomoName>`` are further blocks of ``tomograms.star`` and carry the projection
matrices as ``rlnTomoProjX/Y/Z/W`` 4-vectors (rows 0..3 of the matrix).

Per-tilt tables are loaded lazily, on first use: a set whose particles only touch a few tilt
series works even if the other per-tilt files are absent. Relative paths are resolved with
:func:`processing.io.paths.resolve_path` (project root first, then the directory of
``tomograms.star`` and its parents).

Units: sizes and positions in ts-px (``rlnTomoTiltSeriesPixelSize`` Å each), angles in
degrees, defocus in Å, dose in e/Å².
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from ..errors import InputError
from ..fourier.ctf import CtfParameters
from ..geometry.projection import tilt_projection_matrices, tomogram_centre
from .mrc import read_mrc_header
from .paths import resolve_path
from .star import numeric_column, read_star, require_columns, string_column, vector_column, write_star

__all__ = ["TiltSeries", "Tomogram", "TomogramSet", "TiltCtf", "read_tomogram_set", "write_tomogram_set"]

#: attribute of :class:`TiltSeries` -> per-tilt STAR label.
TILT_LABELS: dict[str, str] = {
    "micrograph_names": "rlnMicrographName",
    "pre_exposure": "rlnMicrographPreExposure",
    "defocus_u": "rlnDefocusU",
    "defocus_v": "rlnDefocusV",
    "defocus_angle": "rlnDefocusAngle",
    "ctf_scale": "rlnCtfScalefactor",
    "ctf_bfactor": "rlnCtfBfactor",
    "phase_shift": "rlnPhaseShift",
    "x_tilt": "rlnTomoXTilt",
    "y_tilt": "rlnTomoYTilt",
    "z_rot": "rlnTomoZRot",
    "x_shift_angst": "rlnTomoXShiftAngst",
    "y_shift_angst": "rlnTomoYShiftAngst",
}

_PROJ_LABELS = ("rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnTomoProjW")

#: attribute of :class:`Tomogram` -> global-table label (sizes: rlnTomoSizeX/Y/Z).
GLOBAL_LABELS: dict[str, str] = {
    "name": "rlnTomoName",
    "voltage": "rlnVoltage",
    "cs": "rlnSphericalAberration",
    "amplitude_contrast": "rlnAmplitudeContrast",
    "pixel_size": "rlnTomoTiltSeriesPixelSize",
    "hand": "rlnTomoHand",
    "defocus_slope": "rlnTomoDefocusSlope",
    "bfactor_per_electron_dose": "rlnCtfBfactorPerElectronDose",
    "optics_group_name": "rlnOpticsGroupName",
}
_SIZE_LABELS = ("rlnTomoSizeX", "rlnTomoSizeY", "rlnTomoSizeZ")
_COMPULSORY_GLOBAL = (
    "rlnTomoName",
    "rlnVoltage",
    "rlnSphericalAberration",
    "rlnAmplitudeContrast",
    "rlnTomoTiltSeriesPixelSize",
    "rlnTomoHand",
)


class TiltSeries:
    """Typed view of one per-tilt table (``data_<TomoName>``), one row per tilt image.

    The raw table (:attr:`table`) is kept as read, so columns this class does not know
    round-trip unchanged. Every array accessor has shape (n_tilts,) in file order and raises
    :class:`InputError` (file, table, column, row) for a missing compulsory column or a
    non-numeric value.

    Parameters
    ----------
    table
        The per-tilt table.
    name
        The table name (= ``rlnTomoName``).
    file
        The STAR file it came from (for error messages), if any.
    """

    def __init__(self, table: pd.DataFrame, name: str, file: str | PathLike | None = None) -> None:
        self.table = table.reset_index(drop=True)
        self.name = name
        self.file = None if file is None else Path(file)
        # Validate the compulsory per-tilt column up front (spec 1.2).
        self.pre_exposure
        # The numbers of a tilt that tomodash uses (CTF, dose, alignment) enter every particle of
        # the series: a NaN or Inf is refused here, where its row is known, not found later as
        # NaN output. Other columns (e.g. CTFFIND's fit figures, which may be inf) are left alone.
        for column in (*TILT_LABELS.values(), *_PROJ_LABELS):
            if column != "rlnMicrographName" and column in self.table.columns \
                    and self.table[column].dtype.kind == "f":
                numeric_column(self.table, column, file=self.file, table=self.name, finite=True)

    @classmethod
    def from_arrays(cls, name: str, **columns: ArrayLike) -> TiltSeries:
        """Build a tilt series from arrays keyed by attribute name (see ``TILT_LABELS``).

        Example: ``TiltSeries.from_arrays("TS_01", micrograph_names=[...], pre_exposure=[...],
        defocus_u=[...], ...)``. Keys that are not attribute names are taken as STAR labels.
        """
        data = {TILT_LABELS.get(key, key): list(np.asarray(value).tolist()) for key, value in columns.items()}
        return cls(pd.DataFrame(data), name)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def n_tilts(self) -> int:
        """Number of tilt images (frames)."""
        return len(self.table)

    def _num(self, label: str, default: float | None = None) -> NDArray[np.float64]:
        return numeric_column(self.table, label, file=self.file, table=self.name, default=default, finite=True)

    def has(self, label: str) -> bool:
        """Whether the table has the column ``label``."""
        return label in self.table.columns

    @property
    def micrograph_names(self) -> NDArray[np.object_]:
        """``rlnMicrographName`` per tilt (str), compulsory when accessed."""
        return string_column(self.table, "rlnMicrographName", file=self.file, table=self.name)

    @property
    def pre_exposure(self) -> NDArray[np.float64]:
        """``rlnMicrographPreExposure``: cumulative dose before each tilt (e/Å²), compulsory."""
        return self._num("rlnMicrographPreExposure")

    @property
    def defocus_u(self) -> NDArray[np.float64]:
        """``rlnDefocusU`` (Å, positive = underfocus) at the tilt-image centre."""
        return self._num("rlnDefocusU")

    @property
    def defocus_v(self) -> NDArray[np.float64]:
        """``rlnDefocusV`` (Å)."""
        return self._num("rlnDefocusV")

    @property
    def defocus_angle(self) -> NDArray[np.float64]:
        """``rlnDefocusAngle`` (degrees)."""
        return self._num("rlnDefocusAngle")

    @property
    def ctf_scale(self) -> NDArray[np.float64]:
        """``rlnCtfScalefactor``, default 1."""
        return self._num("rlnCtfScalefactor", 1.0)

    @property
    def ctf_bfactor(self) -> NDArray[np.float64]:
        """``rlnCtfBfactor`` (Å²), default 0."""
        return self._num("rlnCtfBfactor", 0.0)

    @property
    def phase_shift(self) -> NDArray[np.float64]:
        """``rlnPhaseShift`` (degrees), default 0."""
        return self._num("rlnPhaseShift", 0.0)

    @property
    def x_tilt(self) -> NDArray[np.float64]:
        """``rlnTomoXTilt`` (degrees), default 0."""
        return self._num("rlnTomoXTilt", 0.0)

    @property
    def y_tilt(self) -> NDArray[np.float64]:
        """``rlnTomoYTilt`` (degrees)."""
        return self._num("rlnTomoYTilt")

    @property
    def z_rot(self) -> NDArray[np.float64]:
        """``rlnTomoZRot`` (degrees)."""
        return self._num("rlnTomoZRot")

    @property
    def x_shift_angst(self) -> NDArray[np.float64]:
        """``rlnTomoXShiftAngst`` (Å), default 0."""
        return self._num("rlnTomoXShiftAngst", 0.0)

    @property
    def y_shift_angst(self) -> NDArray[np.float64]:
        """``rlnTomoYShiftAngst`` (Å), default 0."""
        return self._num("rlnTomoYShiftAngst", 0.0)

    @property
    def has_alignment_angles(self) -> bool:
        """Whether the RELION 5 alignment columns (``rlnTomoYTilt``, ``rlnTomoZRot``) exist."""
        return self.has("rlnTomoYTilt") and self.has("rlnTomoZRot")

    @property
    def stored_projections(self) -> NDArray[np.float64] | None:
        """RELION-4 ``rlnTomoProjX/Y/Z/W`` rows as (n_tilts, 4, 4) matrices, or None if absent.

        ``rlnTomoProjW`` defaults to ``[0,0,0,1]`` when only X, Y, Z are present.
        """
        if not all(self.has(label) for label in _PROJ_LABELS[:3]):
            return None
        out = np.zeros((self.n_tilts, 4, 4))
        out[:, 3, 3] = 1.0
        for r, label in enumerate(_PROJ_LABELS):
            if not self.has(label):
                continue
            rows = vector_column(self.table, label, file=self.file, table=self.name, length=4)
            out[:, r, :] = np.stack(rows) if rows else np.zeros((0, 4))
        return out


@dataclass(frozen=True)
class TiltCtf:
    """CTF parameters of particles in every tilt of one tilt series (spec 2.6).

    Attributes
    ----------
    defocus_u, defocus_v
        (n_particles, n_tilts) Å, including the depth-dependent term.
    defocus_offset
        (n_particles, n_tilts) Å, the depth-dependent term alone (added to both U and V).
    defocus_angle, phase_shift, scale, bfactor, dose
        (n_tilts,) degrees, degrees, -, Å², e/Å² (``dose`` = ``rlnMicrographPreExposure``).
    voltage, cs, amplitude_contrast, bfactor_per_electron_dose
        kV, mm, Q0, Å² per e/Å² (0: Grant-Grigorieff dose weighting).
    """

    defocus_u: NDArray[np.float64]
    defocus_v: NDArray[np.float64]
    defocus_offset: NDArray[np.float64]
    defocus_angle: NDArray[np.float64]
    phase_shift: NDArray[np.float64]
    scale: NDArray[np.float64]
    bfactor: NDArray[np.float64]
    dose: NDArray[np.float64]
    voltage: float
    cs: float
    amplitude_contrast: float
    bfactor_per_electron_dose: float

    def parameters(self, particle: int, tilt: int) -> CtfParameters:
        """The :class:`~processing.fourier.ctf.CtfParameters` of one particle in one tilt."""
        return CtfParameters(
            defocus_u=float(self.defocus_u[particle, tilt]),
            defocus_v=float(self.defocus_v[particle, tilt]),
            defocus_angle=float(self.defocus_angle[tilt]),
            voltage=self.voltage,
            cs=self.cs,
            amplitude_contrast=self.amplitude_contrast,
            phase_shift=float(self.phase_shift[tilt]),
            bfactor=float(self.bfactor[tilt]),
            scale=float(self.scale[tilt]),
        )


@dataclass
class Tomogram:
    """One tilt series / tomogram: its ``data_global`` row and its per-tilt table.

    Attributes
    ----------
    name
        ``rlnTomoName``.
    voltage, cs, amplitude_contrast
        kV, mm, Q0.
    pixel_size
        ``rlnTomoTiltSeriesPixelSize`` (Å per ts-px).
    hand
        ``rlnTomoHand`` (+1/-1).
    size
        ``(rlnTomoSizeX, Y, Z)`` in ts-px, or None when the table lacks them.
    defocus_slope
        ``rlnTomoDefocusSlope`` (default 1).
    bfactor_per_electron_dose
        ``rlnCtfBfactorPerElectronDose`` (default 0 = Grant-Grigorieff weighting).
    optics_group_name
        ``rlnOpticsGroupName`` or None.
    image_size
        Tilt-image ``(width, height)`` in px; when None it is read from the first
        micrograph's MRC header on demand.
    extra
        The raw ``data_global`` row (label -> value), so unknown labels round-trip.
    tilt_series_file
        Resolved per-tilt STAR file (RELION 5 layout), or None.
    """

    name: str
    voltage: float
    cs: float
    amplitude_contrast: float
    pixel_size: float
    hand: float
    size: tuple[int, int, int] | None = None
    defocus_slope: float = 1.0
    bfactor_per_electron_dose: float = 0.0
    optics_group_name: str | None = None
    image_size: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    tilt_series_file: Path | None = None
    root: Path | None = None
    _tilts: TiltSeries | None = field(default=None, repr=False)
    _loader: Callable[[], TiltSeries] | None = field(default=None, repr=False)

    # ---- per-tilt data ----------------------------------------------------------------

    @property
    def tilts(self) -> TiltSeries:
        """The per-tilt table (loaded from its STAR file on first access)."""
        if self._tilts is None:
            if self._loader is None:
                raise InputError(f"tomogram {self.name!r} has no per-tilt table")
            self._tilts = self._loader()
        return self._tilts

    @tilts.setter
    def tilts(self, value: TiltSeries) -> None:
        self._tilts = value

    @property
    def n_tilts(self) -> int:
        """Number of tilt images."""
        return self.tilts.n_tilts

    def _require_size(self) -> tuple[int, int, int]:
        if self.size is None:
            raise InputError(
                f"tomogram {self.name!r} has no size (rlnTomoSizeX/Y/Z)", table="global", column="rlnTomoSizeX"
            )
        return self.size

    def resolved_image_size(self, image_size: tuple[int, int] | None = None) -> tuple[int, int] | None:
        """Tilt-image (width, height): the argument, else :attr:`image_size`, else the first
        micrograph's MRC header (if that file exists), else None."""
        if image_size is not None:
            return (int(image_size[0]), int(image_size[1]))
        if self.image_size is not None:
            return self.image_size
        if self.tilts.has("rlnMicrographName") and self.n_tilts:
            path = resolve_path(self.tilts.micrograph_names[0], root=self.root, referrer=self.tilts.file)
            if path.exists():
                self.image_size = read_mrc_header(path).image_size
                return self.image_size
        return None

    def projection_matrices(self, image_size: tuple[int, int] | None = None) -> NDArray[np.float64]:
        """Tilt projection matrices (spec 1.3), shape (n_tilts, 4, 4).

        Built from the alignment angles and shifts when the per-tilt table has them (RELION 5),
        which needs the tilt-image size (argument, attribute, or micrograph header). Without
        angles, or without any way to know the image size, the stored RELION-4
        ``rlnTomoProjX..W`` rows are returned.

        Rows 0 and 1 map a homogeneous tomogram position (ts-px, corner origin) to tilt-image
        x, y (ts-px); row 2 gives the depth.

        Raises
        ------
        InputError
            When neither alignment angles with an image size nor stored matrices exist.
        """
        tilts = self.tilts
        stored = tilts.stored_projections
        if tilts.has_alignment_angles:
            size = self.resolved_image_size(image_size)
            if size is not None or stored is None:
                if size is None:
                    raise InputError(
                        f"tomogram {self.name!r}: the tilt-image size is unknown (micrograph "
                        "files not found); pass image_size=(width, height)",
                        file=tilts.file, table=self.name, column="rlnMicrographName",
                    )
                return tilt_projection_matrices(
                    tilts.x_tilt, tilts.y_tilt, tilts.z_rot, tilts.x_shift_angst, tilts.y_shift_angst,
                    tomogram_size=self._require_size(), image_size=size, pixel_size=self.pixel_size,
                )
        if stored is not None:
            return stored
        raise InputError(
            "no alignment: neither rlnTomoYTilt/rlnTomoZRot nor rlnTomoProjX..W",
            file=tilts.file, table=self.name, column="rlnTomoYTilt",
        )

    def projection_rotations(self) -> NDArray[np.float64]:
        """(n_tilts, 3, 3) rotation parts of the projection matrices (no image size needed:
        refinement works from extracted images and needs no tilt-series files)."""
        tilts = self.tilts
        if tilts.has_alignment_angles:
            return tilt_projection_matrices(
                tilts.x_tilt, tilts.y_tilt, tilts.z_rot, tilts.x_shift_angst, tilts.y_shift_angst,
                tomogram_size=self._require_size(), image_size=(0, 0), pixel_size=self.pixel_size,
            )[:, :3, :3]
        return self.projection_matrices()[:, :3, :3]

    def depth_offsets(self, positions: ArrayLike) -> NDArray[np.float64]:
        """Depth of particles relative to the tomogram centre in every tilt, (n, n_tilts) ts-px.

        ``dz = (P_f p).z - (P_f C).z`` with ``C = Size/2`` (spec 2.6); ``positions`` are
        (n, 3) decentred ts-px (e.g. :meth:`ParticleSet.positions`).
        """
        p = np.atleast_2d(np.asarray(positions, dtype=np.float64))
        centre = tomogram_centre(self._require_size())
        depth_rows = self.projection_rotations()[:, 2, :]  # (t, 3)
        return (p - centre) @ depth_rows.T

    def ctf(self, positions: ArrayLike) -> TiltCtf:
        """Per-particle, per-tilt CTF parameters including depth-dependent defocus (spec 2.6).

        ``ΔDefocus = hand · pixel_size · defocus_slope · dz``, added to DefocusU and DefocusV.

        Parameters
        ----------
        positions
            (n, 3) particle positions in decentred ts-px.
        """
        tilts = self.tilts
        offset = self.hand * self.pixel_size * self.defocus_slope * self.depth_offsets(positions)
        return TiltCtf(
            defocus_u=tilts.defocus_u[None, :] + offset,
            defocus_v=tilts.defocus_v[None, :] + offset,
            defocus_offset=offset,
            defocus_angle=tilts.defocus_angle,
            phase_shift=tilts.phase_shift,
            scale=tilts.ctf_scale,
            bfactor=tilts.ctf_bfactor,
            dose=tilts.pre_exposure,
            voltage=self.voltage,
            cs=self.cs,
            amplitude_contrast=self.amplitude_contrast,
            bfactor_per_electron_dose=self.bfactor_per_electron_dose,
        )

    def global_row(self) -> dict[str, Any]:
        """The ``data_global`` row: raw extras updated with the typed attributes."""
        row = dict(self.extra)
        for attribute, label in GLOBAL_LABELS.items():
            value = getattr(self, attribute)
            if value is None:
                row.pop(label, None)
                continue
            if label == "rlnTomoDefocusSlope" and value == 1.0 and label not in self.extra:
                continue
            if label == "rlnCtfBfactorPerElectronDose" and value == 0.0 and label not in self.extra:
                continue
            row[label] = value
        if self.size is not None:
            for label, value in zip(_SIZE_LABELS, self.size):
                row[label] = int(value)
        return row


def _tomogram_from_row(
    row: dict[str, Any], index: int, *, file: Path, table: str, root: Path | None
) -> Tomogram:
    def num(label: str, default: float | None = None) -> float:
        value = row.get(label, default)
        if value is None:
            raise InputError("compulsory column is missing", file=file, table=table, column=label, row=index + 1)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"expected a number, found {value!r}", file=file, table=table, column=label,
                             row=index + 1) from None
        if not math.isfinite(number):
            raise InputError(f"expected a finite number, found {value!r}", file=file, table=table,
                             column=label, row=index + 1)
        return number

    def positive(label: str) -> float:
        number = num(label)
        if number <= 0:
            raise InputError(f"must be positive, found {number:g}", file=file, table=table, column=label,
                             row=index + 1)
        return number

    size = None
    if all(label in row for label in _SIZE_LABELS):
        # A zero or negative size would place every particle at or beyond the tomogram edge.
        size = tuple(int(round(positive(label))) for label in _SIZE_LABELS)
    group = row.get("rlnOpticsGroupName")
    return Tomogram(
        name=str(row["rlnTomoName"]),
        voltage=num("rlnVoltage"),
        cs=num("rlnSphericalAberration"),
        amplitude_contrast=num("rlnAmplitudeContrast"),
        pixel_size=positive("rlnTomoTiltSeriesPixelSize"),
        hand=num("rlnTomoHand"),
        size=size,  # type: ignore[arg-type]
        defocus_slope=num("rlnTomoDefocusSlope", 1.0),
        bfactor_per_electron_dose=num("rlnCtfBfactorPerElectronDose", 0.0),
        optics_group_name=None if group is None else str(group),
        extra=dict(row),
        root=root,
    )


class TomogramSet:
    """All tilt series of a ``tomograms.star``, keyed by ``rlnTomoName`` in file order.

    Parameters
    ----------
    tomograms
        The tomograms (their per-tilt tables set or loadable).
    path
        The file it was read from, if any (for error messages).

    Examples
    --------
    >>> ts = TomogramSet.read("Tomograms/job007/tomograms.star")      # doctest: +SKIP
    >>> P = ts["TS_01"].projection_matrices()                           # doctest: +SKIP
    """

    def __init__(self, tomograms: Iterable[Tomogram], *, path: str | PathLike | None = None) -> None:
        self.tomograms: dict[str, Tomogram] = {}
        for tomo in tomograms:
            if tomo.name in self.tomograms:
                raise InputError(f"duplicate tomogram name {tomo.name!r}", file=path, table="global",
                                 column="rlnTomoName")
            self.tomograms[tomo.name] = tomo
        self.path = None if path is None else Path(path)

    # ---- mapping protocol --------------------------------------------------------------

    def __getitem__(self, name: str) -> Tomogram:
        try:
            return self.tomograms[name]
        except KeyError:
            raise InputError(f"tomogram {name!r} is not in the tomogram set", file=self.path,
                             table="global", column="rlnTomoName") from None

    def __contains__(self, name: object) -> bool:
        return name in self.tomograms

    def __iter__(self) -> Iterator[Tomogram]:
        return iter(self.tomograms.values())

    def __len__(self) -> int:
        return len(self.tomograms)

    @property
    def names(self) -> list[str]:
        """Tomogram names in file order."""
        return list(self.tomograms)

    def load_all(self) -> None:
        """Load (and validate) every per-tilt table now instead of on first use."""
        for tomo in self:
            tomo.tilts

    # ---- I/O ---------------------------------------------------------------------------

    @classmethod
    def read(
        cls,
        path: str | PathLike,
        *,
        root: str | PathLike | None = None,
        image_size: tuple[int, int] | Mapping[str, tuple[int, int]] | None = None,
    ) -> TomogramSet:
        """Read a RELION 5 (or RELION 4) ``tomograms.star``.

        Parameters
        ----------
        path
            The tomograms.star file.
        root
            Project directory that relative paths are relative to (default CWD; see
            :mod:`processing.io.paths` for the fall-backs).
        image_size
            Tilt-image (width, height) for every tomogram, or a mapping name -> (w, h). Only
            needed when the micrograph files are not available.

        Raises
        ------
        InputError
            Missing file/table/compulsory column, non-numeric values, duplicate names, and
            (on first access to a tilt series) a missing or bad per-tilt file.
        """
        path = Path(path)
        blocks = read_star(path)
        if "global" not in blocks or not isinstance(blocks["global"], pd.DataFrame):
            raise InputError("table data_global (one row per tilt series) not found", file=path, table="global")
        table = blocks["global"]
        require_columns(table, _COMPULSORY_GLOBAL, file=path, table="global")
        for label in _COMPULSORY_GLOBAL[1:]:
            numeric_column(table, label, file=path, table="global", finite=True)  # locate bad values early
        root_path = None if root is None else Path(root)
        relion5 = "rlnTomoTiltSeriesStarFile" in table.columns
        tomograms = []
        for index, row in enumerate(table.to_dict("records")):
            tomo = _tomogram_from_row(row, index, file=path, table="global", root=root_path)
            if relion5:
                stored = str(row["rlnTomoTiltSeriesStarFile"])
                tilt_path = resolve_path(stored, root=root, referrer=path)
                tomo.tilt_series_file = tilt_path
                tomo._loader = _file_loader(tilt_path, tomo.name)
            else:
                if tomo.name not in blocks or not isinstance(blocks[tomo.name], pd.DataFrame):
                    raise InputError(
                        f"per-tilt table data_{tomo.name} not found (RELION 4 layout: no "
                        "rlnTomoTiltSeriesStarFile column)",
                        file=path, table=tomo.name,
                    )
                tomo._tilts = TiltSeries(blocks[tomo.name], tomo.name, path)
            if isinstance(image_size, Mapping):
                if tomo.name in image_size:
                    tomo.image_size = tuple(int(v) for v in image_size[tomo.name])  # type: ignore[assignment]
            elif image_size is not None:
                tomo.image_size = (int(image_size[0]), int(image_size[1]))
            tomograms.append(tomo)
        return cls(tomograms, path=path)

    def global_table(self) -> pd.DataFrame:
        """The ``data_global`` table built from :meth:`Tomogram.global_row` (one row per tomogram).

        ``rlnTomoTiltSeriesStarFile`` holds the value read (if any); :meth:`write` replaces it.
        """
        return pd.DataFrame([tomo.global_row() for tomo in self])

    def write(
        self,
        path: str | PathLike,
        *,
        tilt_series_dir: str | PathLike | None = None,
        root: str | PathLike | None = None,
    ) -> None:
        """Write RELION 5 layout: ``tomograms.star`` plus one STAR file per tilt series.

        Parameters
        ----------
        path
            Output tomograms.star.
        tilt_series_dir
            Directory for the per-tilt files ``<name>.star`` (default ``<dir of path>/tilt_series``).
        root
            Project directory: ``rlnTomoTiltSeriesStarFile`` is stored relative to it (default
            CWD), as RELION expects.
        """
        write_tomogram_set(self, path, tilt_series_dir=tilt_series_dir, root=root)


def _file_loader(path: Path, name: str) -> Callable[[], TiltSeries]:
    def load() -> TiltSeries:
        if not path.exists():
            raise InputError(f"per-tilt STAR file of tomogram {name!r} not found", file=path)
        blocks = read_star(path)
        if name in blocks:
            table = blocks[name]
        else:
            loops = [b for b in blocks.values() if isinstance(b, pd.DataFrame)]
            if len(loops) != 1:
                raise InputError(f"table data_{name} not found", file=path, table=name)
            table = loops[0]
        if not isinstance(table, pd.DataFrame):
            raise InputError("expected a loop_ table of tilt images", file=path, table=name)
        return TiltSeries(table, name, path)

    return load


def read_tomogram_set(
    path: str | PathLike,
    *,
    root: str | PathLike | None = None,
    image_size: tuple[int, int] | Mapping[str, tuple[int, int]] | None = None,
) -> TomogramSet:
    """Read a tomograms.star; see :meth:`TomogramSet.read`."""
    return TomogramSet.read(path, root=root, image_size=image_size)


def write_tomogram_set(
    tomograms: TomogramSet,
    path: str | PathLike,
    *,
    tilt_series_dir: str | PathLike | None = None,
    root: str | PathLike | None = None,
) -> None:
    """Write a tomogram set in RELION 5 layout; see :meth:`TomogramSet.write`.

    Per-tilt files are written first, then tomograms.star, each atomically. Raw columns
    (including RELION-4 ``rlnTomoProj*`` rows when present) are written unchanged.
    """
    path = Path(path)
    directory = Path(tilt_series_dir) if tilt_series_dir is not None else path.parent / "tilt_series"
    directory.mkdir(parents=True, exist_ok=True)
    base = Path(root) if root is not None else Path.cwd()
    rows = []
    for tomo in tomograms:
        tilt_file = directory / f"{tomo.name}.star"
        write_star(tilt_file, {tomo.name: tomo.tilts.table})
        try:
            stored = os.path.relpath(tilt_file.resolve(), base.resolve())
        except ValueError:  # different drive (Windows)
            stored = str(tilt_file.resolve())
        row = tomo.global_row()
        ordered: dict[str, Any] = {"rlnTomoName": row.pop("rlnTomoName")}
        ordered["rlnTomoTiltSeriesStarFile"] = stored
        row.pop("rlnTomoTiltSeriesStarFile", None)
        ordered.update(row)
        rows.append(ordered)
    table = pd.DataFrame(rows)
    write_star(path, {"global": table})
