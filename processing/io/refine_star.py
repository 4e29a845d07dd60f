"""The STAR files of a 3D auto-refine run, with RELION's names, tables and columns (spec 1.7).

* ``<root>_model.star`` (``run_itNNN_half1_model.star``, ``run_model.star``):
  :class:`ModelStarContents` -- ``data_model_general`` (list), ``data_model_classes``,
  ``data_model_class_1`` (per shell), ``data_model_groups``, ``data_model_optics_group_<g>``
  (noise spectra), ``data_model_pdf_orient_class_1``.
* ``<root>_optimiser.star``: :class:`OptimiserStarContents` -- ``data_optimiser_general``
  (list), the command line in the first comment lines.
* ``<root>_sampling.star``: :class:`SamplingStarContents` -- ``data_sampling_general`` (list)
  and ``data_sampling_directions`` (loop).
* ``<root>_data.star``: ``general`` + ``optics`` + ``particles`` through
  :class:`~processing.io.particles.ParticleSet` (:func:`write_data_star`, :func:`read_data_star`).
* ``<root>_optimisation_set.star``: :func:`refine_optimisation_set`.

Each ``*Contents`` dataclass has ``write(path)`` (atomic) and a ``read(path)`` classmethod, so
the engine fills them and a continuation reads them back. RELION's conventions: booleans
``0``/``1``; ``rlnCurrentResolution`` in Å (RELION keeps 1/Å internally and writes its
inverse); ``rlnResolution`` = shell/(pixel x box) in 1/Å and ``rlnAngstromResolution`` its
inverse, 999 at shell 0; offsets in Å; angles in degrees. Labels that RELION writes but this
engine does not use (helical, gradient-refinement, multi-body fields) are written with
RELION's neutral values so that relion_refine can read our files, and labels found on reading
that we do not model are kept in ``extra`` and written back.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass, field, fields
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from processing.errors import InputError
from processing.io.optimisation_set import OptimisationSet
from processing.io.particles import ParticleSet
from processing.io.star import list_value, numeric_column, read_star, string_column, write_star

__all__ = [
    "ModelStarContents",
    "ClassModel",
    "OptimiserStarContents",
    "SamplingStarContents",
    "iteration_root",
    "shell_resolutions",
    "write_data_star",
    "read_data_star",
    "refine_optimisation_set",
    "RELION_VERSION_COMMENT",
    "DATA_STAR_REFINE_COLUMNS",
]

#: Floats are written with 17 significant digits so that a continuation restores the state
#: bit for bit (a resolution compared with rlnBestResolutionThusFar must compare the same way).
EXACT_FLOAT_FORMAT = ".17g"

#: First comment line of an optimiser file (RELION writes "RELION optimiser; version X").
RELION_VERSION_COMMENT = "RELION optimiser; version 5.0 (tomodash)"


def iteration_root(output_root: str | PathLike, iteration: int | None) -> str:
    """``run_it005`` for iteration 5; ``run`` (the converged outputs) for ``None``."""
    root = str(output_root)
    return root if iteration is None else f"{root}_it{int(iteration):03d}"


def shell_resolutions(ori_size: int, pixel_size: float) -> tuple[NDArray, NDArray]:
    """``rlnResolution`` (1/Å) and ``rlnAngstromResolution`` (Å, 999 at shell 0) per shell
    0 .. ori_size//2."""
    shells = np.arange(ori_size // 2 + 1, dtype=np.float64)
    resolution = shells / (pixel_size * ori_size)
    with np.errstate(divide="ignore"):
        angstrom = np.where(shells > 0, 1.0 / np.where(resolution > 0, resolution, 1.0), 999.0)
    return resolution, angstrom


def _where(path: Path, table: str) -> dict[str, Any]:
    return {"file": path, "table": table}


def _block(blocks: dict, name: str, path: Path, *, loop: bool) -> Any:
    if name not in blocks:
        present = ", ".join(f"data_{b}" for b in blocks) or "none"
        raise InputError(f"table data_{name} not found (tables present: {present})", file=path, table=name)
    block = blocks[name]
    if loop and not isinstance(block, pd.DataFrame):
        if isinstance(block, dict):  # a one-row loop may have been written as a list
            return pd.DataFrame([block])
        raise InputError("expected a loop_ table", file=path, table=name)
    if not loop and isinstance(block, pd.DataFrame):
        if len(block) == 1:
            return block.iloc[0].to_dict()
        raise InputError("expected a list of label/value pairs", file=path, table=name)
    return block


def _as_float_array(values: Any, n: int, name: str) -> NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size != n:
        raise ValueError(f"{name} has {array.size} values, expected {n} (ori_size//2 + 1 shells)")
    return array


# ============================================================================================
# model.star


@dataclass
class ClassModel:
    """One class of a classification ``_model.star`` beyond the first (class 1's values are
    :class:`ModelStarContents`' own fields): its ``data_model_classes`` row,
    ``data_model_class_<k>`` spectra and ``data_model_pdf_orient_class_<k>``."""

    reference_image: str
    ssnr_map: NDArray[np.float64]
    fourier_completeness: NDArray[np.float64]
    reference_sigma2: NDArray[np.float64]
    reference_tau2: NDArray[np.float64]
    orientation_distribution: NDArray[np.float64]
    gold_standard_fsc: NDArray[np.float64] | None = None
    class_distribution: float = 0.0
    accuracy_rotations: float = 999.0
    accuracy_translations_angst: float = 999.0
    estimated_resolution: float = 999.0
    overall_fourier_completeness: float = 0.0
    orientability_contribution: NDArray[np.float64] | None = None


_CLASS_FIELDS = tuple(f for f in ClassModel.__dataclass_fields__)


@dataclass
class ModelStarContents:
    """Contents of a ``_model.star``: 3D auto-refine (one class), or 3D classification with
    classes 2..K in ``more_classes``.

    Per-shell arrays have ``ori_size // 2 + 1`` entries (shell 0 .. Nyquist).

    Attributes
    ----------
    ori_size, pixel_size
        Box (px) and pixel size (Å) of the references (``rlnOriginalImageSize``,
        ``rlnPixelSize``).
    current_resolution
        ``rlnCurrentResolution`` **in Å** (RELION writes 1/its internal 1/Å value).
    current_image_size
        ``rlnCurrentImageSize`` (px): Fourier window used in this iteration.
    reference_image
        ``rlnReferenceImage`` of class 1, e.g. ``Refine3D/job004/run_it005_half1_class001.mrc``.
    accuracy_rotations, accuracy_translations_angst
        Estimated accuracies (deg, Å) of class 1.
    estimated_resolution, overall_fourier_completeness
        ``rlnEstimatedResolution`` (Å), ``rlnOverallFourierCompleteness``.
    ssnr_map, gold_standard_fsc, fourier_completeness, reference_sigma2, reference_tau2
        ``data_model_class_1`` columns ``rlnSsnrMap``, ``rlnGoldStandardFsc``,
        ``rlnFourierCompleteness``, ``rlnReferenceSigma2``, ``rlnReferenceTau2``.
    orientability_contribution
        ``rlnSpectralOrientabilityContribution``, written only when set (RELION writes it
        once accuracies were computed).
    group_names, group_nr_particles, group_scale_correction
        ``data_model_groups`` (one group per tomogram, numbered from 1 in this order).
    sigma2_noise
        One noise spectrum per optics group (``data_model_optics_group_<g>``,
        ``rlnSigma2Noise``); shells with σ² <= 0 are not written (read back as 0).
    orientation_distribution
        ``rlnOrientationDistribution``, one value per HEALPix direction of the current sampling.
    """

    ori_size: int
    pixel_size: float
    current_resolution: float
    current_image_size: int
    reference_image: str
    gold_standard_fsc: NDArray[np.float64]
    ssnr_map: NDArray[np.float64]
    fourier_completeness: NDArray[np.float64]
    reference_sigma2: NDArray[np.float64]
    reference_tau2: NDArray[np.float64]
    sigma2_noise: list[NDArray[np.float64]]
    group_names: list[str]
    group_nr_particles: NDArray[np.int64]
    group_scale_correction: NDArray[np.float64]
    orientation_distribution: NDArray[np.float64]
    orientability_contribution: NDArray[np.float64] | None = None
    # model_general
    ref_dim: int = 3
    data_dim: int = 2
    padding_factor: float = 2.0
    is_helix: bool = False
    interpolator: int = 1
    min_radius_nn_interpolation: int = 10
    nr_classes: int = 1
    nr_bodies: int = 1
    tau2_fudge_factor: float = 1.0
    norm_correction_average: float = 1.0
    sigma_offsets_angst: float = 10.0
    orientational_prior_mode: int = 0
    sigma_prior_rot_angle: float = 0.0
    sigma_prior_tilt_angle: float = 0.0
    sigma_prior_psi_angle: float = 0.0
    log_likelihood: float = 0.0
    average_pmax: float = 0.0
    # model_classes
    class_distribution: float = 1.0
    accuracy_rotations: float = 999.0
    accuracy_translations_angst: float = 999.0
    estimated_resolution: float = 999.0
    overall_fourier_completeness: float = 0.0
    extra_general: dict[str, Any] = field(default_factory=dict)
    #: classes 2..K of a classification run
    more_classes: list[ClassModel] = field(default_factory=list)

    def classes(self) -> list[ClassModel]:
        """Every class, class 1 (these fields) first."""
        first = ClassModel(**{name: getattr(self, name) for name in _CLASS_FIELDS})
        return [first, *self.more_classes]

    @property
    def n_shells(self) -> int:
        return self.ori_size // 2 + 1

    @property
    def nr_groups(self) -> int:
        return len(self.group_names)

    @property
    def nr_optics_groups(self) -> int:
        return len(self.sigma2_noise)

    # ---- writing -----------------------------------------------------------------------

    def blocks(self) -> dict[str, Any]:
        """The STAR blocks in RELION's order."""
        n = self.n_shells
        general = {
            "rlnReferenceDimensionality": int(self.ref_dim),
            "rlnDataDimensionality": int(self.data_dim),
            "rlnOriginalImageSize": int(self.ori_size),
            "rlnCurrentResolution": float(self.current_resolution),
            "rlnCurrentImageSize": int(self.current_image_size),
            "rlnPaddingFactor": float(self.padding_factor),
            "rlnIsHelix": bool(self.is_helix),
            "rlnFourierSpaceInterpolator": int(self.interpolator),
            "rlnMinRadiusNnInterpolation": int(self.min_radius_nn_interpolation),
            "rlnPixelSize": float(self.pixel_size),
            "rlnNrClasses": int(self.nr_classes),
            "rlnNrBodies": int(self.nr_bodies),
            "rlnNrGroups": int(self.nr_groups),
            "rlnNrOpticsGroups": int(self.nr_optics_groups),
            "rlnTau2FudgeFactor": float(self.tau2_fudge_factor),
            "rlnNormCorrectionAverage": float(self.norm_correction_average),
            "rlnSigmaOffsetsAngst": float(self.sigma_offsets_angst),
            "rlnOrientationalPriorMode": int(self.orientational_prior_mode),
            "rlnSigmaPriorRotAngle": float(self.sigma_prior_rot_angle),
            "rlnSigmaPriorTiltAngle": float(self.sigma_prior_tilt_angle),
            "rlnSigmaPriorPsiAngle": float(self.sigma_prior_psi_angle),
            "rlnLogLikelihood": float(self.log_likelihood),
            "rlnAveragePmax": float(self.average_pmax),
        }
        for key, value in self.extra_general.items():
            general.setdefault(key, value)
        every = self.classes()
        classes = pd.DataFrame({
            "rlnReferenceImage": pd.Series([str(k.reference_image) for k in every], dtype=object),
            "rlnClassDistribution": [float(k.class_distribution) for k in every],
            "rlnAccuracyRotations": [float(k.accuracy_rotations) for k in every],
            "rlnAccuracyTranslationsAngst": [float(k.accuracy_translations_angst) for k in every],
            "rlnEstimatedResolution": [float(k.estimated_resolution) for k in every],
            "rlnOverallFourierCompleteness": [float(k.overall_fourier_completeness) for k in every],
        })
        resolution, angstrom = shell_resolutions(self.ori_size, self.pixel_size)
        class_spectra = {}
        for number, k in enumerate(every, start=1):
            spectra = {
                "rlnSpectralIndex": np.arange(n, dtype=np.int64),
                "rlnResolution": resolution,
                "rlnAngstromResolution": angstrom,
                "rlnSsnrMap": _as_float_array(k.ssnr_map, n, "ssnr_map"),
                "rlnGoldStandardFsc": _as_float_array(
                    np.zeros(n) if k.gold_standard_fsc is None else k.gold_standard_fsc, n, "gold_standard_fsc"),
                "rlnFourierCompleteness": _as_float_array(k.fourier_completeness, n, "fourier_completeness"),
                "rlnReferenceSigma2": _as_float_array(k.reference_sigma2, n, "reference_sigma2"),
                "rlnReferenceTau2": _as_float_array(k.reference_tau2, n, "reference_tau2"),
            }
            if k.orientability_contribution is not None:
                spectra["rlnSpectralOrientabilityContribution"] = _as_float_array(
                    k.orientability_contribution, n, "orientability_contribution")
            class_spectra[f"model_class_{number}"] = pd.DataFrame(spectra)
        groups = pd.DataFrame({
            "rlnGroupNumber": np.arange(1, self.nr_groups + 1, dtype=np.int64),
            "rlnGroupName": pd.Series([str(g) for g in self.group_names], dtype=object),
            "rlnGroupNrParticles": np.asarray(self.group_nr_particles, dtype=np.int64).ravel(),
            "rlnGroupScaleCorrection": np.asarray(self.group_scale_correction, dtype=np.float64).ravel(),
        })
        out: dict[str, Any] = {"model_general": general, "model_classes": classes, **class_spectra,
                               "model_groups": groups}
        for g, noise in enumerate(self.sigma2_noise, start=1):
            noise = _as_float_array(noise, n, f"sigma2_noise[{g - 1}]")
            keep = noise > 0
            out[f"model_optics_group_{g}"] = pd.DataFrame({
                "rlnSpectralIndex": np.nonzero(keep)[0].astype(np.int64),
                "rlnResolution": resolution[keep],
                "rlnSigma2Noise": noise[keep],
            })
        for number, k in enumerate(every, start=1):
            out[f"model_pdf_orient_class_{number}"] = pd.DataFrame({
                "rlnOrientationDistribution": np.asarray(k.orientation_distribution, dtype=np.float64).ravel(),
            })
        return out

    def write(self, path: str | PathLike) -> None:
        """Write atomically."""
        write_star(path, self.blocks(), float_format=EXACT_FLOAT_FORMAT)

    # ---- reading -----------------------------------------------------------------------

    @classmethod
    def read(cls, path: str | PathLike) -> ModelStarContents:
        """Read a ``_model.star`` (RELION's or ours).

        Raises
        ------
        InputError
            Missing file, table or compulsory label, or a malformed value (located).
        """
        path = Path(path)
        blocks = read_star(path, parse_as_string=["rlnReferenceImage", "rlnGroupName"])
        general = _block(blocks, "model_general", path, loop=False)
        w = _where(path, "model_general")

        def g(label, kind=float, default=None):
            return list_value(general, label, kind, default=default, **w)

        ori_size = g("rlnOriginalImageSize", int)
        pixel_size = g("rlnPixelSize")
        n = ori_size // 2 + 1
        nr_optics = g("rlnNrOpticsGroups", int, default=1)

        classes = _block(blocks, "model_classes", path, loop=True)
        wc = _where(path, "model_classes")
        if len(classes) < 1:
            raise InputError("no class in the table", **wc)

        def c(label, default=None, row=0):
            return float(numeric_column(classes, label, default=default, **wc)[row])

        spectra = _block(blocks, "model_class_1", path, loop=True)
        ws = _where(path, "model_class_1")

        def shell_column(table, label, where, default=None, fill=0.0):
            index = numeric_column(table, "rlnSpectralIndex", integer=True, **where)
            out = np.full(n, fill, dtype=np.float64)
            values = numeric_column(table, label, default=default, **where)
            bad = (index < 0) | (index >= n)
            if bad.any():
                row = int(np.argmax(bad)) + 1
                raise InputError(f"shell {index[row - 1]} outside 0..{n - 1}", column="rlnSpectralIndex",
                                 row=row, **where)
            out[index] = values
            return out

        orientability = None
        if "rlnSpectralOrientabilityContribution" in spectra.columns:
            orientability = shell_column(spectra, "rlnSpectralOrientabilityContribution", ws)

        groups = _block(blocks, "model_groups", path, loop=True)
        wg = _where(path, "model_groups")
        order = np.argsort(numeric_column(groups, "rlnGroupNumber", integer=True, **wg), kind="stable")
        names = string_column(groups, "rlnGroupName", **wg)[order]
        nr_particles = numeric_column(groups, "rlnGroupNrParticles", integer=True, **wg)[order]
        scale = numeric_column(groups, "rlnGroupScaleCorrection", default=1.0, **wg)[order]

        sigma2_noise = []
        for k in range(1, nr_optics + 1):
            name = f"model_optics_group_{k}"
            table = blocks.get(name)
            if table is None:
                raise InputError(f"table data_{name} not found (rlnNrOpticsGroups = {nr_optics})",
                                 file=path, table=name)
            if isinstance(table, dict):
                table = pd.DataFrame([table]) if table else pd.DataFrame(
                    columns=["rlnSpectralIndex", "rlnSigma2Noise"])
            if len(table) == 0:
                sigma2_noise.append(np.zeros(n))
            else:
                sigma2_noise.append(shell_column(table, "rlnSigma2Noise", _where(path, name)))

        pdf = _block(blocks, "model_pdf_orient_class_1", path, loop=True)
        orientation_distribution = numeric_column(
            pdf, "rlnOrientationDistribution", **_where(path, "model_pdf_orient_class_1"))
        images = string_column(classes, "rlnReferenceImage", **wc)
        more_classes = []
        for row in range(1, len(classes)):
            name = f"model_class_{row + 1}"
            table = _block(blocks, name, path, loop=True)
            where = _where(path, name)
            pdf_name = f"model_pdf_orient_class_{row + 1}"
            pdf_k = blocks.get(pdf_name)
            more_classes.append(ClassModel(
                reference_image=str(images[row]),
                ssnr_map=shell_column(table, "rlnSsnrMap", where),
                fourier_completeness=shell_column(table, "rlnFourierCompleteness", where, default=0.0),
                reference_sigma2=shell_column(table, "rlnReferenceSigma2", where),
                reference_tau2=shell_column(table, "rlnReferenceTau2", where),
                gold_standard_fsc=shell_column(table, "rlnGoldStandardFsc", where, default=0.0),
                orientation_distribution=(numeric_column(pdf_k, "rlnOrientationDistribution",
                                                         **_where(path, pdf_name))
                                          if pdf_k is not None and len(pdf_k) else np.zeros(0)),
                class_distribution=c("rlnClassDistribution", 1.0, row),
                accuracy_rotations=c("rlnAccuracyRotations", 999.0, row),
                accuracy_translations_angst=c("rlnAccuracyTranslationsAngst", 999.0, row),
                estimated_resolution=c("rlnEstimatedResolution", 0.0, row),
                overall_fourier_completeness=c("rlnOverallFourierCompleteness", 0.0, row),
            ))

        known = {
            "rlnReferenceDimensionality", "rlnDataDimensionality", "rlnOriginalImageSize",
            "rlnCurrentResolution", "rlnCurrentImageSize", "rlnPaddingFactor", "rlnIsHelix",
            "rlnFourierSpaceInterpolator", "rlnMinRadiusNnInterpolation", "rlnPixelSize",
            "rlnNrClasses", "rlnNrBodies", "rlnNrGroups", "rlnNrOpticsGroups", "rlnTau2FudgeFactor",
            "rlnNormCorrectionAverage", "rlnSigmaOffsetsAngst", "rlnOrientationalPriorMode",
            "rlnSigmaPriorRotAngle", "rlnSigmaPriorTiltAngle", "rlnSigmaPriorPsiAngle",
            "rlnLogLikelihood", "rlnAveragePmax",
        }
        return cls(
            ori_size=ori_size,
            pixel_size=pixel_size,
            current_resolution=g("rlnCurrentResolution"),
            current_image_size=g("rlnCurrentImageSize", int),
            reference_image=str(images[0]),
            gold_standard_fsc=shell_column(spectra, "rlnGoldStandardFsc", ws),
            ssnr_map=shell_column(spectra, "rlnSsnrMap", ws),
            fourier_completeness=shell_column(spectra, "rlnFourierCompleteness", ws, default=0.0),
            reference_sigma2=shell_column(spectra, "rlnReferenceSigma2", ws),
            reference_tau2=shell_column(spectra, "rlnReferenceTau2", ws),
            sigma2_noise=sigma2_noise,
            group_names=[str(x) for x in names],
            group_nr_particles=nr_particles,
            group_scale_correction=scale,
            orientation_distribution=orientation_distribution,
            orientability_contribution=orientability,
            ref_dim=g("rlnReferenceDimensionality", int),
            data_dim=g("rlnDataDimensionality", int, default=2),
            padding_factor=g("rlnPaddingFactor"),
            is_helix=g("rlnIsHelix", bool, default=False),
            interpolator=g("rlnFourierSpaceInterpolator", int),
            min_radius_nn_interpolation=g("rlnMinRadiusNnInterpolation", int),
            nr_classes=g("rlnNrClasses", int),
            nr_bodies=g("rlnNrBodies", int, default=1),
            tau2_fudge_factor=g("rlnTau2FudgeFactor"),
            norm_correction_average=g("rlnNormCorrectionAverage"),
            sigma_offsets_angst=g("rlnSigmaOffsetsAngst"),
            orientational_prior_mode=g("rlnOrientationalPriorMode", int),
            sigma_prior_rot_angle=g("rlnSigmaPriorRotAngle"),
            sigma_prior_tilt_angle=g("rlnSigmaPriorTiltAngle"),
            sigma_prior_psi_angle=g("rlnSigmaPriorPsiAngle"),
            log_likelihood=g("rlnLogLikelihood"),
            average_pmax=g("rlnAveragePmax"),
            class_distribution=c("rlnClassDistribution", 1.0),
            accuracy_rotations=c("rlnAccuracyRotations"),
            accuracy_translations_angst=c("rlnAccuracyTranslationsAngst"),
            estimated_resolution=c("rlnEstimatedResolution", 0.0),
            overall_fourier_completeness=c("rlnOverallFourierCompleteness", 0.0),
            extra_general={k: v for k, v in general.items() if k not in known},
            more_classes=more_classes,
        )


# ============================================================================================
# optimiser.star

# (label, attribute or None, kind, RELION's value for labels this engine does not model),
# in RELION's write order (MlOptimiser::write). Attributes map to OptimiserStarContents.
_OPTIMISER_LABELS: tuple[tuple[str, str | None, type, Any], ...] = (
    ("rlnOutputRootName", "output_root", str, None),
    ("rlnModelStarFile", "model_star_file", str, None),
    ("rlnModelStarFile2", "model_star_file2", str, None),
    ("rlnExperimentalDataStarFile", "data_star_file", str, None),
    ("rlnTomoTomogramsFile", "tomograms_file", str, None),
    ("rlnTomoTrajectoriesFile", "trajectories_file", str, None),
    ("rlnOrientSamplingStarFile", "sampling_star_file", str, None),
    ("rlnCurrentIteration", "current_iteration", int, None),
    ("rlnNumberOfIterations", "number_of_iterations", int, None),
    ("rlnDoSplitRandomHalves", "do_split_random_halves", bool, None),
    ("rlnJoinHalvesUntilThisResolution", "join_halves_until_resolution", float, None),
    ("rlnAdaptiveOversampleOrder", "adaptive_oversample_order", int, None),
    ("rlnAdaptiveOversampleFraction", "adaptive_oversample_fraction", float, None),
    ("rlnRandomSeed", "random_seed", int, None),
    ("rlnParticleDiameter", "particle_diameter", float, None),
    ("rlnWidthMaskEdge", "width_mask_edge", int, None),
    ("rlnDoZeroMask", "do_zero_mask", bool, None),
    ("rlnDoSolventFlattening", "do_solvent_flattening", bool, None),
    ("rlnDoSolventFscCorrection", "do_solvent_fsc_correction", bool, None),
    ("rlnSolventMaskName", "solvent_mask_name", str, None),
    ("rlnSolventMask2Name", "solvent_mask2_name", str, None),
    ("rlnBodyStarFile", None, str, "None"),
    ("rlnTauSpectrumName", "tau_spectrum_name", str, None),
    ("rlnMaximumCoarseImageSize", "maximum_coarse_image_size", int, None),
    ("rlnHighresLimitExpectation", "highres_limit_expectation", float, None),
    ("rlnLowresLimitExpectation", "lowres_limit_expectation", float, None),
    ("rlnIncrementImageSize", "increment_image_size", int, None),
    ("rlnDoMapEstimation", "do_map_estimation", bool, None),
    ("rlnDoFastSubsetOptimisation", "do_fast_subsets", bool, None),
    ("rlnDoExternalReconstruct", None, bool, False),
    ("rlnDoGradientRefine", None, bool, False),
    ("rlnDoStochasticGradientDescent", None, bool, False),
    ("rlnGradEmIters", None, int, 0),
    ("rlnGradHasConverged", None, bool, False),
    ("rlnGradCurrentStepsize", None, float, 0.0),
    ("rlnGradSubsetOrder", None, int, 0),
    ("rlnGradSuspendFinerSamplingIter", None, int, 0),
    ("rlnGradSuspendLocalSamplingIter", None, int, 0),
    ("rlnSgdInitialIterationsFraction", None, float, 0.3),
    ("rlnSgdFinalIterationsFraction", None, float, 0.2),
    ("rlnSgdMinimumResolution", None, float, 20.0),
    ("rlnSgdInitialResolution", None, float, -1.0),
    ("rlnSgdFinalResolution", None, float, -1.0),
    ("rlnSgdInitialSubsetSize", None, int, -1),
    ("rlnSgdFinalSubsetSize", None, int, -1),
    ("rlnSgdMuFactor", None, float, 0.9),
    ("rlnSgdSkipAnneal", None, bool, False),
    ("rlnSgdClassInactivityThreshold", None, float, 0.0),
    ("rlnSgdSubsetSize", None, int, -1),
    ("rlnSgdWriteEverySubset", None, int, 1),
    ("rlnSgdStepsize", None, float, -1.0),
    ("rlnSgdStepsizeScheme", None, str, ""),
    ("rlnTau2FudgeScheme", None, str, ""),
    ("rlnTau2FudgeArg", "tau2_fudge_arg", float, None),
    ("rlnMaximumSignificantPoses", "maximum_significant_poses", int, None),
    ("rlnDoAutoRefine", "do_auto_refine", bool, None),
    ("rlnDoAutoSampling", "do_auto_sampling", bool, None),
    ("rlnAutoLocalSearchesHealpixOrder", "auto_local_healpix_order", int, None),
    ("rlnNumberOfIterWithoutResolutionGain", "nr_iter_without_resolution_gain", int, None),
    ("rlnBestResolutionThusFar", "best_resolution_thus_far", float, None),
    ("rlnNumberOfIterWithoutChangingAssignments", "nr_iter_without_changing_assignments", int, None),
    ("rlnDoSkipAlign", "do_skip_align", bool, None),
    ("rlnDoSkipRotate", None, bool, False),
    ("rlnOverallAccuracyRotations", "overall_accuracy_rotations", float, None),
    ("rlnOverallAccuracyTranslationsAngst", "overall_accuracy_translations_angst", float, None),
    ("rlnChangesOptimalOrientations", "changes_optimal_orientations", float, None),
    ("rlnChangesOptimalOffsets", "changes_optimal_offsets", float, None),
    ("rlnChangesOptimalClasses", "changes_optimal_classes", float, None),
    ("rlnSmallestChangesOrientations", "smallest_changes_orientations", float, None),
    ("rlnSmallestChangesOffsets", "smallest_changes_offsets", float, None),
    ("rlnSmallestChangesClasses", "smallest_changes_classes", int, None),
    ("rlnLocalSymmetryFile", None, str, "None"),
    ("rlnDoHelicalRefine", None, bool, False),
    ("rlnIgnoreHelicalSymmetry", None, bool, False),
    ("rlnFourierMask", None, str, "None"),
    ("rlnHelicalTwistInitial", None, float, 0.0),
    ("rlnHelicalRiseInitial", None, float, 0.0),
    ("rlnHelicalCentralProportion", None, float, 0.3),
    ("rlnNrHelicalNStart", None, int, 1),
    ("rlnHelicalMaskTubeInnerDiameter", None, float, -1.0),
    ("rlnHelicalMaskTubeOuterDiameter", None, float, -1.0),
    ("rlnHelicalSymmetryLocalRefinement", None, bool, False),
    ("rlnHelicalSigmaDistance", None, float, -1.0),
    ("rlnHelicalKeepTiltPriorFixed", None, bool, False),
    ("rlnHasConverged", "has_converged", bool, None),
    ("rlnHasHighFscAtResolLimit", "has_high_fsc_at_resol_limit", bool, None),
    ("rlnHasLargeSizeIncreaseIterationsAgo", "has_large_size_increase_iterations_ago", int, None),
    ("rlnDoCorrectNorm", "do_correct_norm", bool, None),
    ("rlnDoCorrectScale", "do_correct_scale", bool, None),
    ("rlnDoCorrectCtf", "do_correct_ctf", bool, None),
    ("rlnDoCenterClasses", None, bool, False),
    ("rlnDoIgnoreCtfUntilFirstPeak", "do_ignore_ctf_until_first_peak", bool, None),
    ("rlnCtfDataArePhaseFlipped", None, bool, False),
    ("rlnDoOnlyFlipCtfPhases", None, bool, False),
    ("rlnRefsAreCtfCorrected", "refs_are_ctf_corrected", bool, None),
    ("rlnFixSigmaNoiseEstimates", "fix_sigma_noise_estimates", bool, None),
    ("rlnFixSigmaOffsetEstimates", "fix_sigma_offset_estimates", bool, None),
    ("rlnMaxNumberOfPooledParticles", "max_number_of_pooled_particles", int, None),
    ("rlnOffsetRangeX", "offset_range_x", float, None),
    ("rlnOffsetRangeY", "offset_range_y", float, None),
    ("rlnOffsetRangeZ", "offset_range_z", float, None),
    ("rlnDoBlush", None, bool, False),
)

_OPTIMISER_STRING_LABELS = [label for label, _, kind, _ in _OPTIMISER_LABELS if kind is str]
#: Labels a continuation cannot do without.
_OPTIMISER_COMPULSORY = {
    "rlnOutputRootName", "rlnModelStarFile", "rlnExperimentalDataStarFile", "rlnOrientSamplingStarFile",
    "rlnCurrentIteration",
}


@dataclass
class OptimiserStarContents:
    """Contents of a ``_optimiser.star``: the run's state between iterations.

    Attributes (RELION label in brackets; see spec 1.7, 5.7, 5.9)
    ----------
    output_root
        ``--o`` rootname (``rlnOutputRootName``).
    model_star_file, model_star_file2
        Half-1 and half-2 model STAR files of this iteration (``rlnModelStarFile(2)``);
        ``model_star_file2`` is empty after the halves were joined (final iteration).
    data_star_file, sampling_star_file
        This iteration's ``_data.star`` and ``_sampling.star``.
    tomograms_file, trajectories_file
        ``rlnTomoTomogramsFile``, ``rlnTomoTrajectoriesFile`` of the input.
    current_iteration, number_of_iterations
        Iteration just completed (0 = initial state); ``--auto_iter_max``.
    best_resolution_thus_far
        ``rlnBestResolutionThusFar`` in **1/Å** (RELION's internal unit, written as is).
    overall_accuracy_rotations, overall_accuracy_translations_angst
        Accuracies (deg, Å) that drive auto-sampling.
    changes_optimal_orientations, changes_optimal_offsets, changes_optimal_classes
        Hidden-variable changes of the last iteration (deg, Å, particles); the
        ``smallest_changes_*`` are their running minima.
    nr_iter_without_resolution_gain, nr_iter_without_changing_assignments
        The convergence counters.
    command_line
        The relion_refine arguments, written in the first comment lines.
    extra
        Labels read that are not modelled here, written back unchanged.
    """

    output_root: str
    model_star_file: str
    data_star_file: str
    sampling_star_file: str
    current_iteration: int
    model_star_file2: str = ""
    tomograms_file: str = ""
    trajectories_file: str = ""
    number_of_iterations: int = 999
    do_split_random_halves: bool = True
    join_halves_until_resolution: float = 40.0
    adaptive_oversample_order: int = 1
    adaptive_oversample_fraction: float = 0.999
    random_seed: int = 0
    particle_diameter: float = -1.0
    width_mask_edge: int = 5
    do_zero_mask: bool = False
    do_solvent_flattening: bool = False
    do_solvent_fsc_correction: bool = False
    solvent_mask_name: str = "None"
    solvent_mask2_name: str = "None"
    tau_spectrum_name: str = "None"
    maximum_coarse_image_size: int = -1
    highres_limit_expectation: float = -1.0
    lowres_limit_expectation: float = -1.0
    increment_image_size: int = 10
    do_map_estimation: bool = True
    tau2_fudge_arg: float = -1.0
    maximum_significant_poses: int = -1
    do_auto_refine: bool = True
    do_fast_subsets: bool = False
    do_skip_align: bool = False
    do_auto_sampling: bool = True
    auto_local_healpix_order: int = 4
    nr_iter_without_resolution_gain: int = 0
    best_resolution_thus_far: float = 0.0
    nr_iter_without_changing_assignments: int = 0
    overall_accuracy_rotations: float = 999.0
    overall_accuracy_translations_angst: float = 999.0
    changes_optimal_orientations: float = 999.0
    changes_optimal_offsets: float = 999.0
    changes_optimal_classes: float = 999.0
    smallest_changes_orientations: float = 999.0
    smallest_changes_offsets: float = 999.0
    smallest_changes_classes: int = 9999999
    has_converged: bool = False
    has_high_fsc_at_resol_limit: bool = False
    has_large_size_increase_iterations_ago: int = 0
    do_correct_norm: bool = False
    do_correct_scale: bool = False
    do_correct_ctf: bool = True
    do_ignore_ctf_until_first_peak: bool = False
    refs_are_ctf_corrected: bool = True
    fix_sigma_noise_estimates: bool = False
    fix_sigma_offset_estimates: bool = False
    max_number_of_pooled_particles: int = 1
    offset_range_x: float = -1.0
    offset_range_y: float = -1.0
    offset_range_z: float = -1.0
    command_line: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def block(self) -> dict[str, Any]:
        """The ``optimiser_general`` list block in RELION's label order."""
        out: dict[str, Any] = {}
        for label, attr, kind, fixed in _OPTIMISER_LABELS:
            if label == "rlnModelStarFile2" and not self.do_split_random_halves:
                continue    # RELION writes the second model only for split halves
            value = getattr(self, attr) if attr is not None else self.extra.get(label, fixed)
            out[label] = kind(value) if kind is not str else ("" if value is None else str(value))
        for label, value in self.extra.items():
            out.setdefault(label, value)
        return out

    def write(self, path: str | PathLike) -> None:
        """Write atomically; the first comment lines hold RELION's version line and the
        command line."""
        comments = [RELION_VERSION_COMMENT, shlex.join(self.command_line)]
        write_star(path, {"optimiser_general": self.block()}, comments=comments,
                   float_format=EXACT_FLOAT_FORMAT)

    @classmethod
    def read(cls, path: str | PathLike) -> OptimiserStarContents:
        """Read a ``_optimiser.star`` (ours or RELION's), with the command line of its header.

        Raises
        ------
        InputError
            Missing file or table, a missing compulsory label, or a malformed value.
        """
        path = Path(path)
        blocks = read_star(path, parse_as_string=_OPTIMISER_STRING_LABELS)
        block = _block(blocks, "optimiser_general", path, loop=False)
        w = _where(path, "optimiser_general")
        defaults = {f.name: f.default for f in fields(cls)}
        values: dict[str, Any] = {}
        modelled: set[str] = set()
        for label, attr, kind, _fixed in _OPTIMISER_LABELS:
            if attr is None:
                continue
            modelled.add(label)
            if label in _OPTIMISER_COMPULSORY:
                values[attr] = list_value(block, label, kind, **w)
            elif label in block:
                values[attr] = list_value(block, label, kind, default=defaults[attr], **w)
        fixed = {label: (kind, value) for label, attr, kind, value in _OPTIMISER_LABELS if attr is None}
        extra: dict[str, Any] = {}
        for label, value in block.items():
            if label in modelled:
                continue
            if label in fixed:
                kind, neutral = fixed[label]
                if list_value(block, label, kind, **w) == neutral:
                    continue  # RELION's neutral value: not worth carrying
            extra[label] = value
        return cls(**values, command_line=_read_command_line(path), extra=extra)


def _read_command_line(path: Path) -> tuple[str, ...]:
    """The relion_refine arguments from the comment lines before the first ``data_`` block."""
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            text = line.strip()
            if text.startswith("data_"):
                break
            if not text.startswith("#"):
                continue
            body = text[1:].strip()
            if body.startswith("--") or "relion_refine" in body.split(" ", 1)[0]:
                try:
                    args = shlex.split(body)
                except ValueError:
                    args = body.split()
                if args and not args[0].startswith("--"):
                    args = args[1:]  # a program name
                return tuple(args)
    return ()


# ============================================================================================
# sampling.star


@dataclass
class SamplingStarContents:
    """Contents of a ``_sampling.star`` (RELION's HealpixSampling::write).

    Attributes
    ----------
    healpix_order, psi_step
        Current coarse HEALPix order and psi step (deg).
    offset_range, offset_step
        Current translational search range and coarse step, **in Å**.
    symmetry
        ``rlnSymmetryGroup`` (e.g. ``C6``).
    perturb_instance, perturb_factor
        ``rlnSamplingPerturbInstance`` (current random perturbation, fraction of a step)
        and ``--perturb``.
    *_original
        The values at the start of the run.
    directions_rot, directions_tilt
        ``data_sampling_directions``: the non-redundant coarse directions (deg), without
        the random perturbation.
    """

    healpix_order: int
    psi_step: float
    offset_range: float
    offset_step: float
    symmetry: str
    directions_rot: NDArray[np.float64]
    directions_tilt: NDArray[np.float64]
    perturb_instance: float = 0.0
    perturb_factor: float = 0.5
    healpix_order_original: int | None = None
    psi_step_original: float | None = None
    offset_range_original: float | None = None
    offset_step_original: float | None = None
    is_3d: bool = True
    is_3d_translational: bool = True
    tilt_angle_limit: float = -91.0
    helical_offset_step: float = -1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.healpix_order_original is None:
            self.healpix_order_original = self.healpix_order
        if self.psi_step_original is None:
            self.psi_step_original = self.psi_step
        if self.offset_range_original is None:
            self.offset_range_original = self.offset_range
        if self.offset_step_original is None:
            self.offset_step_original = self.offset_step

    def blocks(self) -> dict[str, Any]:
        general = {
            "rlnIs3DSampling": bool(self.is_3d),
            "rlnIs3DTranslationalSampling": bool(self.is_3d_translational),
            "rlnHealpixOrder": int(self.healpix_order),
            "rlnSymmetryGroup": str(self.symmetry),
            "rlnTiltAngleLimit": float(self.tilt_angle_limit),
            "rlnPsiStep": float(self.psi_step),
            "rlnOffsetRange": float(self.offset_range),
            "rlnOffsetStep": float(self.offset_step),
            "rlnHelicalOffsetStep": float(self.helical_offset_step),
            "rlnSamplingPerturbInstance": float(self.perturb_instance),
            "rlnSamplingPerturbFactor": float(self.perturb_factor),
            "rlnHealpixOrderOriginal": int(self.healpix_order_original),
            "rlnPsiStepOriginal": float(self.psi_step_original),
            "rlnOffsetRangeOriginal": float(self.offset_range_original),
            "rlnOffsetStepOriginal": float(self.offset_step_original),
        }
        for key, value in self.extra.items():
            general.setdefault(key, value)
        rot = np.asarray(self.directions_rot, dtype=np.float64).ravel()
        tilt = np.asarray(self.directions_tilt, dtype=np.float64).ravel()
        if rot.shape != tilt.shape:
            raise ValueError(f"{rot.size} rot angles but {tilt.size} tilt angles")
        return {
            "sampling_general": general,
            "sampling_directions": pd.DataFrame({"rlnAngleRot": rot, "rlnAngleTilt": tilt}),
        }

    def write(self, path: str | PathLike) -> None:
        """Write atomically."""
        write_star(path, self.blocks(), float_format=EXACT_FLOAT_FORMAT)

    @classmethod
    def read(cls, path: str | PathLike) -> SamplingStarContents:
        """Read a ``_sampling.star`` (ours or RELION's; e.g. the conformance fixtures)."""
        path = Path(path)
        blocks = read_star(path, parse_as_string=["rlnSymmetryGroup"])
        general = _block(blocks, "sampling_general", path, loop=False)
        w = _where(path, "sampling_general")

        def g(label, kind=float, default=None):
            return list_value(general, label, kind, default=default, **w)

        directions = _block(blocks, "sampling_directions", path, loop=True)
        wd = _where(path, "sampling_directions")
        known = {
            "rlnIs3DSampling", "rlnIs3DTranslationalSampling", "rlnHealpixOrder", "rlnSymmetryGroup",
            "rlnTiltAngleLimit", "rlnPsiStep", "rlnOffsetRange", "rlnOffsetStep", "rlnHelicalOffsetStep",
            "rlnSamplingPerturbInstance", "rlnSamplingPerturbFactor", "rlnHealpixOrderOriginal",
            "rlnPsiStepOriginal", "rlnOffsetRangeOriginal", "rlnOffsetStepOriginal",
        }
        order = g("rlnHealpixOrder", int)
        psi_step = g("rlnPsiStep")
        offset_range = g("rlnOffsetRange")
        offset_step = g("rlnOffsetStep")
        return cls(
            healpix_order=order,
            psi_step=psi_step,
            offset_range=offset_range,
            offset_step=offset_step,
            symmetry=g("rlnSymmetryGroup", str),
            directions_rot=numeric_column(directions, "rlnAngleRot", **wd),
            directions_tilt=numeric_column(directions, "rlnAngleTilt", **wd),
            perturb_instance=g("rlnSamplingPerturbInstance", default=0.0),
            perturb_factor=g("rlnSamplingPerturbFactor", default=0.5),
            healpix_order_original=g("rlnHealpixOrderOriginal", int, default=order),
            psi_step_original=g("rlnPsiStepOriginal", default=psi_step),
            offset_range_original=g("rlnOffsetRangeOriginal", default=offset_range),
            offset_step_original=g("rlnOffsetStepOriginal", default=offset_step),
            is_3d=g("rlnIs3DSampling", bool, default=True),
            is_3d_translational=g("rlnIs3DTranslationalSampling", bool, default=True),
            tilt_angle_limit=g("rlnTiltAngleLimit", default=-91.0),
            helical_offset_step=g("rlnHelicalOffsetStep", default=-1.0),
            extra={k: v for k, v in general.items() if k not in known},
        )


# ============================================================================================
# data.star and optimisation set


#: Per-particle columns relion_refine writes into ``_data.star`` (spec 1.7).
DATA_STAR_REFINE_COLUMNS: tuple[str, ...] = (
    "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst", "rlnOriginYAngst",
    "rlnOriginZAngst", "rlnClassNumber", "rlnLogLikeliContribution",
    "rlnMaxValueProbDistribution", "rlnNrOfSignificantSamples", "rlnNormCorrection",
    "rlnGroupNumber", "rlnRandomSubset",
)


def write_data_star(path: str | PathLike, particles: ParticleSet) -> None:
    """Write ``_data.star`` (``general``, ``optics``, ``particles``) atomically.

    ``particles.particles`` should hold the refined columns of :data:`DATA_STAR_REFINE_COLUMNS`
    (updated by the engine) besides the input columns it came with.
    """
    particles.write(path)


def read_data_star(path: str | PathLike) -> ParticleSet:
    """Read a ``_data.star`` as a :class:`ParticleSet` (InputError if not one)."""
    return ParticleSet.read(path)


def refine_optimisation_set(
    base: OptimisationSet,
    data_star: str,
    *,
    half1_map: str | None = None,
    half2_map: str | None = None,
    mask: str | None = None,
) -> OptimisationSet:
    """The optimisation set relion_refine writes beside ``_data.star``.

    The input set with ``rlnTomoParticlesFile`` = ``data_star``; at convergence the
    unfiltered half maps (``run_half1/2_class001_unfil.mrc``) as ``rlnTomoReferenceMap1/2File``
    and the solvent mask as ``rlnTomoReferenceMaskFile``; any FSC entry of the input is
    dropped (it belongs to the old maps). Write it with ``.write(path)`` (atomic).

    RELION writes ``None`` for an absent mask; here the entry is left out instead, so no
    reader tries to open a file called None.
    """
    from dataclasses import replace

    changes: dict[str, Any] = {"particles": str(data_star), "reference_fsc": None, "path": None}
    if half1_map is not None:
        changes["reference_map1"] = str(half1_map)
    if half2_map is not None:
        changes["reference_map2"] = str(half2_map)
    if mask is not None and mask != "None":
        changes["reference_mask"] = str(mask)
    return replace(base, **changes)
