"""Particle sets: RELION 5 tomography ``particles.star`` (spec 1.4, 2.2, 2.3).

Blocks, in write order: ``data_general`` (list: ``rlnTomoSubTomosAre2DStacks``),
``data_optics`` (one row per optics group), ``data_particles`` (one row per particle), then
any other block of the input file, unchanged.

Units: centred coordinates and origins in Å, angles in degrees, positions in ts-px.
All arrays are returned in particle (row) order.
"""
from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from ..errors import InputError
from ..geometry.projection import centred_angstrom_from_position, particle_positions
from .star import (
    Block,
    bool_column,
    list_value,
    numeric_column,
    read_star,
    require_columns,
    string_column,
    vector_column,
    write_star,
)
from .tomograms import TomogramSet

__all__ = ["ParticleSet", "read_particle_set", "write_particle_set", "create_optics_table", "OPTICS_TOLERANCE"]

#: Optics values of particles and tomograms must agree within this (absolute) tolerance.
OPTICS_TOLERANCE = 1e-3

CENTRED_LABELS = ("rlnCenteredCoordinateXAngst", "rlnCenteredCoordinateYAngst", "rlnCenteredCoordinateZAngst")
RELION4_LABELS = ("rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ")
ORIGIN_LABELS = ("rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst")
ANGLE_LABELS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
SUBTOMO_LABELS = ("rlnTomoSubtomogramRot", "rlnTomoSubtomogramTilt", "rlnTomoSubtomogramPsi")

# optics label -> Tomogram attribute, checked against the tomogram set.
_OPTICS_CHECKS = {
    "rlnVoltage": "voltage",
    "rlnSphericalAberration": "cs",
    "rlnAmplitudeContrast": "amplitude_contrast",
    "rlnTomoTiltSeriesPixelSize": "pixel_size",
}


def create_optics_table(tomograms: TomogramSet) -> tuple[pd.DataFrame, dict[str, int]]:
    """An optics table derived from a tomogram set (spec 1.4), for files that lack one.

    Groups are the distinct ``rlnOpticsGroupName`` of the tomograms (in order of first
    appearance) when every tomogram has one, else one group per tomogram (named after it).

    Returns
    -------
    table
        Columns ``rlnOpticsGroup`` (1-based), ``rlnOpticsGroupName``, ``rlnVoltage``,
        ``rlnSphericalAberration``, ``rlnAmplitudeContrast``, ``rlnTomoTiltSeriesPixelSize``.
    group_of
        Tomogram name -> optics group number.

    Raises
    ------
    InputError
        When tomograms sharing an optics group name disagree on an optics value.
    """
    named = len(tomograms) > 0 and all(t.optics_group_name for t in tomograms)
    rows: dict[str, dict[str, Any]] = {}
    group_of: dict[str, int] = {}
    for index, tomo in enumerate(tomograms):
        name = tomo.optics_group_name if named else tomo.name
        if name not in rows:
            rows[name] = {
                "rlnOpticsGroup": len(rows) + 1,
                "rlnOpticsGroupName": name,
                **{label: float(getattr(tomo, attr)) for label, attr in _OPTICS_CHECKS.items()},
            }
        else:
            for label, attr in _OPTICS_CHECKS.items():
                if abs(rows[name][label] - getattr(tomo, attr)) > OPTICS_TOLERANCE:
                    raise InputError(
                        f"tomogram {tomo.name!r} is in optics group {name!r} but its value "
                        f"{getattr(tomo, attr)} differs from {rows[name][label]} of that group",
                        file=tomograms.path, table="global", column=label, row=index + 1,
                    )
        group_of[tomo.name] = rows[name]["rlnOpticsGroup"]
    return pd.DataFrame(list(rows.values())), group_of


class ParticleSet:
    """The particles of a tomography data set, with their optics groups.

    Parameters
    ----------
    particles
        The ``data_particles`` table (RELION labels as column names). Needs ``rlnTomoName``
        and either ``rlnCenteredCoordinateX/Y/ZAngst`` or RELION-4 ``rlnCoordinateX/Y/Z``.
        ``rlnTomoParticleName`` (``<TomoName>/<k>``, k 1-based per tomogram) is added when
        absent.
    optics
        The ``data_optics`` table, or None (see :meth:`ensure_optics`).
    general
        The ``data_general`` list block, or None.
    extra_blocks
        Further blocks written back unchanged after the particles.
    path
        The file it was read from (for error messages).
    """

    def __init__(
        self,
        particles: pd.DataFrame,
        optics: pd.DataFrame | None = None,
        general: dict[str, Any] | None = None,
        *,
        extra_blocks: Mapping[str, Block] | None = None,
        path: str | PathLike | None = None,
    ) -> None:
        self.path = None if path is None else Path(path)
        self.particles = particles.reset_index(drop=True).copy()
        self.optics = None if optics is None else optics.reset_index(drop=True).copy()
        self.general = None if general is None else dict(general)
        self.extra_blocks: dict[str, Block] = dict(extra_blocks or {})
        self._check_structure()
        if "rlnTomoParticleName" not in self.particles.columns:
            self.particles["rlnTomoParticleName"] = self._default_particle_names()

    # ---- construction / I/O ------------------------------------------------------------

    def _where(self, table: str = "particles") -> dict[str, Any]:
        return {"file": self.path, "table": table}

    def _check_structure(self) -> None:
        require_columns(self.particles, ["rlnTomoName"], **self._where())
        columns = self.particles.columns
        if not all(c in columns for c in CENTRED_LABELS) and not all(c in columns for c in RELION4_LABELS):
            missing = next(c for c in CENTRED_LABELS if c not in columns)
            raise InputError(
                "compulsory column is missing (no rlnCenteredCoordinateX/Y/ZAngst, nor RELION-4 "
                "rlnCoordinateX/Y/Z)", column=missing, **self._where(),
            )
        if self.optics is not None:
            require_columns(self.optics, ["rlnOpticsGroup"], **self._where("optics"))
            groups = numeric_column(self.optics, "rlnOpticsGroup", integer=True, **self._where("optics"))
            if len(set(groups.tolist())) != len(groups):
                raise InputError("duplicate optics group numbers", column="rlnOpticsGroup", **self._where("optics"))

    def _default_particle_names(self) -> list[str]:
        counts: dict[str, int] = {}
        names = []
        for tomo in self.tomo_names().tolist():
            counts[tomo] = counts.get(tomo, 0) + 1
            names.append(f"{tomo}/{counts[tomo]}")
        return names

    @classmethod
    def read(cls, path: str | PathLike, tomograms: TomogramSet | None = None) -> ParticleSet:
        """Read a particles.star; with ``tomograms``, also complete and validate it.

        With a tomogram set: RELION-4 coordinates are converted to centred Å, an optics
        table is created if absent, and :meth:`validate` runs.

        Raises
        ------
        InputError
            Missing file, missing ``data_particles`` table or compulsory column, bad values,
            or (with ``tomograms``) particles inconsistent with the tomogram set.
        """
        path = Path(path)
        blocks = read_star(path)
        if "particles" not in blocks:
            present = ", ".join(f"data_{b}" for b in blocks) or "none"
            raise InputError(f"table data_particles not found (tables present: {present})", file=path,
                             table="particles")
        particles = blocks.pop("particles")
        if not isinstance(particles, pd.DataFrame):
            raise InputError("expected a loop_ table of particles", file=path, table="particles")
        optics = blocks.pop("optics", None)
        if optics is not None and not isinstance(optics, pd.DataFrame):
            raise InputError("expected a loop_ table of optics groups", file=path, table="optics")
        general = blocks.pop("general", None)
        if general is not None and not isinstance(general, dict):
            general = None if len(general) == 0 else general.iloc[0].to_dict()
        out = cls(particles, optics, general, extra_blocks=blocks, path=path)
        if tomograms is not None:
            out.convert_relion4_coordinates(tomograms)
            out.ensure_optics(tomograms)
            out.validate(tomograms)
        return out

    def write(self, path: str | PathLike) -> None:
        """Write ``general``, ``optics``, ``particles`` (then extra blocks) atomically.

        RELION-4 ``rlnCoordinateX/Y/Z`` are dropped when centred coordinates exist.
        """
        blocks: dict[str, Block] = {}
        if self.general:
            blocks["general"] = self.general
        if self.optics is not None:
            blocks["optics"] = self.optics
        particles = self.particles
        if all(c in particles.columns for c in CENTRED_LABELS):
            particles = particles.drop(columns=[c for c in RELION4_LABELS if c in particles.columns])
        blocks["particles"] = particles
        for name, block in self.extra_blocks.items():
            blocks.setdefault(name, block)
        write_star(path, blocks)

    # ---- completion and validation -----------------------------------------------------

    def convert_relion4_coordinates(self, tomograms: TomogramSet) -> None:
        """Add centred Å coordinates computed from RELION-4 ``rlnCoordinateX/Y/Z`` (ts-px).

        ``centred = (coordinate - Size/2) * pixel_size`` (spec 2.3). No-op when centred
        coordinates already exist.
        """
        if all(c in self.particles.columns for c in CENTRED_LABELS):
            return
        self._check_tomo_names(tomograms)
        coords = np.stack([numeric_column(self.particles, c, **self._where()) for c in RELION4_LABELS], axis=1)
        centred = np.zeros_like(coords)
        names = self.tomo_names()
        for name in np.unique(names):
            tomo = tomograms[name]
            rows = names == name
            if tomo.size is None:
                raise InputError(f"tomogram {name!r} has no rlnTomoSizeX/Y/Z: cannot centre RELION-4 coordinates",
                                 file=tomograms.path, table="global", column="rlnTomoSizeX")
            centred[rows] = centred_angstrom_from_position(
                coords[rows], tomogram_size=tomo.size, pixel_size=tomo.pixel_size
            )
        for i, label in enumerate(CENTRED_LABELS):
            self.particles[label] = centred[:, i]

    def ensure_optics(self, tomograms: TomogramSet) -> None:
        """Create the optics table from the tomogram set when absent (spec 1.4).

        Each particle's ``rlnOpticsGroup`` is then set to its tomogram's group.
        """
        if self.optics is not None:
            return
        self._check_tomo_names(tomograms)
        self.optics, group_of = create_optics_table(tomograms)
        self.particles["rlnOpticsGroup"] = np.array([group_of[n] for n in self.tomo_names()], dtype=np.int64)

    def _check_tomo_names(self, tomograms: TomogramSet) -> None:
        for i, name in enumerate(self.tomo_names().tolist()):
            if name not in tomograms:
                where = f" ({tomograms.path})" if tomograms.path else ""
                raise InputError(f"tomogram {name!r} is not in the tomogram set{where}",
                                 column="rlnTomoName", row=i + 1, **self._where())

    def validate(self, tomograms: TomogramSet) -> None:
        """Check the particles against a tomogram set.

        Every ``rlnTomoName`` must exist; coordinates, offsets and angles must be finite
        numbers; every ``rlnOpticsGroup`` must be in the optics
        table; the optics group's ``rlnVoltage``, ``rlnSphericalAberration``,
        ``rlnAmplitudeContrast`` and ``rlnTomoTiltSeriesPixelSize`` must agree with the
        particle's tomogram within :data:`OPTICS_TOLERANCE`.

        Raises
        ------
        InputError
            Naming file, table, column and (1-based) row of the first disagreement.
        """
        self._check_tomo_names(tomograms)
        # Poses must be numbers: a NaN or Inf coordinate, offset or angle would turn into NaN
        # positions and projections far from where the error is (each accessor names the row).
        if all(c in self.particles.columns for c in CENTRED_LABELS):
            self.centred_coordinates()
        self.origins()
        self.angles()
        self.subtomogram_angles()
        if self.optics is None:
            raise InputError("table data_optics not found (read with a tomogram set to create one)",
                             **self._where("optics"))
        where_optics = self._where("optics")
        numbers = numeric_column(self.optics, "rlnOpticsGroup", integer=True, **where_optics).tolist()
        row_of_group = {g: i for i, g in enumerate(numbers)}
        groups = self.optics_groups()
        for i, g in enumerate(groups.tolist()):
            if g not in row_of_group:
                raise InputError(f"optics group {g} is not in table data_optics", column="rlnOpticsGroup",
                                 row=i + 1, **self._where())
        names = self.tomo_names()
        checked: set[tuple[int, str]] = set()
        for g, name in zip(groups.tolist(), names.tolist()):
            if (g, name) in checked:
                continue
            checked.add((g, name))
            tomo = tomograms[name]
            row = row_of_group[g]
            for label, attr in _OPTICS_CHECKS.items():
                values = numeric_column(self.optics, label, **where_optics)
                expected = float(getattr(tomo, attr))
                if abs(values[row] - expected) > OPTICS_TOLERANCE:
                    raise InputError(
                        f"optics group {g} has {label} = {values[row]:g} but tomogram {name!r} has "
                        f"{expected:g} in the tomogram set (tolerance {OPTICS_TOLERANCE:g})",
                        column=label, row=row + 1, **where_optics,
                    )

    # ---- accessors ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.particles)

    def _num3(self, labels: tuple[str, str, str], default: float | None) -> NDArray[np.float64]:
        return np.stack(
            [numeric_column(self.particles, c, default=default, finite=True, **self._where()) for c in labels],
            axis=1
        ).reshape(len(self.particles), 3)

    def _optional(self, label: str) -> NDArray[np.float64] | None:
        if label not in self.particles.columns:
            return None
        return numeric_column(self.particles, label, finite=True, **self._where())

    def tomo_names(self) -> NDArray[np.object_]:
        """``rlnTomoName`` per particle, (n,) str."""
        return string_column(self.particles, "rlnTomoName", **self._where())

    def particle_names(self) -> NDArray[np.object_]:
        """``rlnTomoParticleName`` per particle, (n,) str."""
        return string_column(self.particles, "rlnTomoParticleName", **self._where())

    def centred_coordinates(self) -> NDArray[np.float64]:
        """``rlnCenteredCoordinateX/Y/ZAngst``, (n, 3) Å from the tomogram centre.

        Raises
        ------
        InputError
            When only RELION-4 coordinates exist (read with a tomogram set, or call
            :meth:`convert_relion4_coordinates` first).
        """
        if not all(c in self.particles.columns for c in CENTRED_LABELS):
            raise InputError(
                "only RELION-4 rlnCoordinateX/Y/Z present: they need the tomogram set to be centred "
                "(pass tomograms when reading)", column=CENTRED_LABELS[0], **self._where(),
            )
        return self._num3(CENTRED_LABELS, None)

    def origins(self) -> NDArray[np.float64]:
        """``rlnOriginX/Y/ZAngst`` (subtomogram frame), (n, 3) Å, default 0."""
        return self._num3(ORIGIN_LABELS, 0.0)

    def angles(self) -> NDArray[np.float64]:
        """``rlnAngleRot/Tilt/Psi``, (n, 3) degrees, default 0."""
        return self._num3(ANGLE_LABELS, 0.0)

    def subtomogram_angles(self) -> NDArray[np.float64] | None:
        """``rlnTomoSubtomogramRot/Tilt/Psi``, (n, 3) degrees, or None when absent (identity).

        Missing individual columns among the three are taken as 0.
        """
        if not any(c in self.particles.columns for c in SUBTOMO_LABELS):
            return None
        return self._num3(SUBTOMO_LABELS, 0.0)

    def rot_prior(self) -> NDArray[np.float64] | None:
        """``rlnAngleRotPrior`` (n,) degrees, or None."""
        return self._optional("rlnAngleRotPrior")

    def tilt_prior(self) -> NDArray[np.float64] | None:
        """``rlnAngleTiltPrior`` (n,) degrees, or None."""
        return self._optional("rlnAngleTiltPrior")

    def psi_prior(self) -> NDArray[np.float64] | None:
        """``rlnAnglePsiPrior`` (n,) degrees, or None."""
        return self._optional("rlnAnglePsiPrior")

    def random_subset(self) -> NDArray[np.int64] | None:
        """``rlnRandomSubset`` (n,) in {0, 1, 2} (0 = unassigned), or None when absent."""
        if "rlnRandomSubset" not in self.particles.columns:
            return None
        return numeric_column(self.particles, "rlnRandomSubset", integer=True, **self._where())

    def assign_random_subsets(self, rng: np.random.Generator | int | None = None) -> None:
        """Set ``rlnRandomSubset`` to 1 or 2 at random for particles without one (absent or 0)."""
        rng = np.random.default_rng(rng)
        current = self.random_subset()
        if current is None:
            current = np.zeros(len(self), dtype=np.int64)
        unassigned = current == 0
        current = current.copy()
        current[unassigned] = rng.integers(1, 3, size=int(unassigned.sum()))
        self.particles["rlnRandomSubset"] = current

    def optics_groups(self) -> NDArray[np.int64]:
        """``rlnOpticsGroup`` (n,) 1-based, default 1."""
        return numeric_column(self.particles, "rlnOpticsGroup", default=1, integer=True, **self._where())

    def optics_column(self, label: str, *, default: float | None = None) -> NDArray[np.float64]:
        """A numeric optics-table column looked up for each particle's group, (n,)."""
        if self.optics is None:
            raise InputError("table data_optics not found", **self._where("optics"))
        where = self._where("optics")
        numbers = numeric_column(self.optics, "rlnOpticsGroup", integer=True, **where)
        values = numeric_column(self.optics, label, default=default, **where)
        lookup = dict(zip(numbers.tolist(), values.tolist()))
        out = np.empty(len(self))
        for i, g in enumerate(self.optics_groups().tolist()):
            if g not in lookup:
                raise InputError(f"optics group {g} is not in table data_optics", column="rlnOpticsGroup",
                                 row=i + 1, **self._where())
            out[i] = lookup[g]
        return out

    def visible_frames(self) -> list[NDArray[np.int64]] | None:
        """``rlnTomoVisibleFrames``: per particle an int vector (0/1 per tilt), or None."""
        if "rlnTomoVisibleFrames" not in self.particles.columns:
            return None
        return vector_column(self.particles, "rlnTomoVisibleFrames", dtype=np.int64, **self._where())

    def image_names(self) -> NDArray[np.object_] | None:
        """``rlnImageName`` per particle (str), or None before extraction."""
        if "rlnImageName" not in self.particles.columns:
            return None
        return string_column(self.particles, "rlnImageName", **self._where())

    @property
    def are_2d_stacks(self) -> bool | None:
        """``rlnTomoSubTomosAre2DStacks`` of ``data_general``, or None when absent."""
        if not self.general or "rlnTomoSubTomosAre2DStacks" not in self.general:
            return None
        return list_value(self.general, "rlnTomoSubTomosAre2DStacks", bool, **self._where("general"))

    def positions(self, tomograms: TomogramSet, *, apply_origins: bool = True) -> NDArray[np.float64]:
        """Decentred particle positions in ts-px, (n, 3) (spec 2.3).

        ``p = centred / px + Size/2 - A_sub @ origin / px`` with each particle's tomogram
        size and pixel size (origins ignored when ``apply_origins`` is False).
        """
        centred = self.centred_coordinates()
        origins = self.origins() if apply_origins else None
        sub = self.subtomogram_angles()
        names = self.tomo_names()
        out = np.zeros((len(self), 3))
        for name in np.unique(names):
            tomo = tomograms[name]
            if tomo.size is None:
                raise InputError(f"tomogram {name!r} has no rlnTomoSizeX/Y/Z", file=tomograms.path,
                                 table="global", column="rlnTomoSizeX")
            rows = names == name
            out[rows] = particle_positions(
                centred[rows],
                tomogram_size=tomo.size,
                pixel_size=tomo.pixel_size,
                origin_angst=None if origins is None else origins[rows],
                subtomogram_angles=None if sub is None else sub[rows],
            )
        return out

    def is_true(self, label: str, *, default: bool | None = None) -> NDArray[np.bool_]:
        """A RELION 0/1 column of the particles table as booleans, (n,)."""
        return bool_column(self.particles, label, default=default, **self._where())


def read_particle_set(path: str | PathLike, tomograms: TomogramSet | None = None) -> ParticleSet:
    """Read a particles.star; see :meth:`ParticleSet.read`."""
    return ParticleSet.read(path, tomograms)


def write_particle_set(particles: ParticleSet, path: str | PathLike) -> None:
    """Write a particle set; see :meth:`ParticleSet.write`."""
    particles.write(path)
