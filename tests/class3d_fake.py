"""A small, format-correct output directory of a tomo 3D classification (relion_refine without
``--auto_refine``), written with starfile and mrcfile as RELION 5 writes it: per iteration N
(0 = the initial references) ``run_itNNN_classKKK.mrc``, ``run_itNNN_data.star`` (general,
optics and particles tables, ``rlnClassNumber`` per particle), ``run_itNNN_model.star``
(``data_model_general``, ``data_model_classes``, ``data_model_class_K`` per class,
``data_model_groups``), ``run_itNNN_optimiser.star``, ``run_itNNN_sampling.star`` and
``run_itNNN_optimisation_set.star``; no half maps, no FSC.

The class assignments, occupancies and resolutions are made up (deterministic) for the
dashboard's readers and views; the maps are three distinct shapes (sphere, cube, rod).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import starfile


@dataclass(frozen=True)
class FakeClass3D:
    """What :func:`write_fake_class3d` wrote: the job's directory (as the project names it), and
    per iteration the class of each particle and the occupancy and resolution of each class."""

    job: str                                  # "Class3D/job003/"
    path: Path
    n_classes: int
    iterations: tuple[int, ...]               # 0 .. n_iterations
    particle_names: tuple[str, ...]
    classes: dict[int, np.ndarray]            # iteration -> (n,) class numbers 1..K
    distribution: dict[int, np.ndarray]       # iteration -> (K,) rlnClassDistribution
    resolution: dict[int, np.ndarray]         # iteration -> (K,) rlnEstimatedResolution (Å)
    box: int
    pixel_size: float


def _shapes(box: int) -> list[np.ndarray]:
    z, y, x = np.mgrid[:box, :box, :box] - box / 2 + 0.5
    r = np.sqrt(x * x + y * y + z * z)
    sphere = (r < box / 4).astype(np.float32)
    cube = ((abs(x) < box / 5) & (abs(y) < box / 5) & (abs(z) < box / 5)).astype(np.float32)
    rod = ((np.sqrt(x * x + y * y) < box / 8) & (abs(z) < box / 3)).astype(np.float32)
    return [sphere, cube, rod]


def write_fake_class3d(project: Path, job: str = "Class3D/job003/", *, n_classes: int = 3, n_iterations: int = 3,
                       box: int = 24, pixel_size: float = 10.0, n_particles: int = 30,
                       tomograms: str = "Import/job001/tomograms.star") -> FakeClass3D:
    """Write the output files of a finished classification into ``project / job``.

    Returns
    -------
    FakeClass3D
        What was written (the truth the tests compare with).
    """
    job_dir = Path(project) / job
    job_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    names = tuple(f"TS_{1 + i % 2:02d}/{i + 1}" for i in range(n_particles))
    shapes = _shapes(box)
    iterations = tuple(range(n_iterations + 1))
    classes, distribution, resolution = {}, {}, {}
    root = f"{job}run"
    for it in iterations:
        # classes drift apart: the first class grows, the last shrinks
        weights = np.linspace(1.0 + 0.3 * it, 1.0 - 0.2 * it, n_classes).clip(0.2)
        assigned = rng.choice(np.arange(1, n_classes + 1), size=n_particles, p=weights / weights.sum())
        assigned[:n_classes] = np.arange(1, n_classes + 1)          # no class empty
        classes[it] = assigned
        counts = np.bincount(assigned, minlength=n_classes + 1)[1:]
        distribution[it] = counts / n_particles
        resolution[it] = np.round(60.0 - 8.0 * it - 3.0 * np.arange(n_classes) * (it > 0), 2)
        stem = f"run_it{it:03d}"
        for k in range(1, n_classes + 1):
            with mrcfile.new(job_dir / f"{stem}_class{k:03d}.mrc", overwrite=True) as mrc:
                mrc.set_data((shapes[(k - 1) % len(shapes)] * (1.0 + 0.1 * it)).astype(np.float32))
                mrc.voxel_size = pixel_size
        _write_data(job_dir / f"{stem}_data.star", names, assigned, rng, pixel_size, box)
        _write_model(job_dir / f"{stem}_model.star", root, it, n_classes, distribution[it], resolution[it],
                     pixel_size, box)
        _write_optimiser(job_dir / f"{stem}_optimiser.star", root, it, n_iterations, tomograms)
        starfile.write({"sampling_general": {"rlnIs3DSampling": 1, "rlnIs3DTranslationalSampling": 1,
                                             "rlnHealpixOrder": 2, "rlnSymmetryGroup": "C1",
                                             "rlnTiltAngleLimit": -91.0, "rlnPsiStep": 15.0,
                                             "rlnOffsetRange": 5.0, "rlnOffsetStep": 2.0,
                                             "rlnHelicalOffsetStep": -1.0, "rlnSamplingPerturbInstance": 0.3,
                                             "rlnSamplingPerturbFactor": 0.5}},
                       job_dir / f"{stem}_sampling.star", overwrite=True)
        starfile.write({"optimisation_set": {"rlnTomoParticlesFile": f"{root}_it{it:03d}_data.star",
                                             "rlnTomoTomogramsFile": tomograms}},
                       job_dir / f"{stem}_optimisation_set.star", overwrite=True)
    return FakeClass3D(job=job, path=job_dir, n_classes=n_classes, iterations=iterations, particle_names=names,
                       classes=classes, distribution=distribution, resolution=resolution, box=box,
                       pixel_size=pixel_size)


def _write_data(path: Path, names, assigned, rng, pixel_size: float, box: int) -> None:
    n = len(names)
    particles = pd.DataFrame({
        "rlnTomoName": [name.split("/")[0] for name in names],
        "rlnTomoParticleName": list(names),
        "rlnCenteredCoordinateXAngst": rng.uniform(-900, 900, n).round(3),
        "rlnCenteredCoordinateYAngst": rng.uniform(-900, 900, n).round(3),
        "rlnCenteredCoordinateZAngst": rng.uniform(-200, 200, n).round(3),
        "rlnAngleRot": rng.uniform(-180, 180, n).round(3),
        "rlnAngleTilt": rng.uniform(0, 180, n).round(3),
        "rlnAnglePsi": rng.uniform(-180, 180, n).round(3),
        "rlnOriginXAngst": rng.normal(0, 2, n).round(3),
        "rlnOriginYAngst": rng.normal(0, 2, n).round(3),
        "rlnOriginZAngst": rng.normal(0, 2, n).round(3),
        "rlnOpticsGroup": np.ones(n, int),
        "rlnImageName": [f"Extract/job002/Subtomograms/{name}_stack2d.mrcs" for name in names],
        "rlnGroupNumber": np.ones(n, int),
        "rlnClassNumber": np.asarray(assigned, int),
        "rlnNormCorrection": np.ones(n),
        "rlnLogLikeliContribution": rng.normal(1e5, 10, n).round(3),
        "rlnMaxValueProbDistribution": rng.uniform(0.2, 1.0, n).round(6),
        "rlnNrOfSignificantSamples": rng.integers(1, 20, n),
    })
    optics = pd.DataFrame({
        "rlnOpticsGroup": [1], "rlnOpticsGroupName": ["opticsGroup1"], "rlnSphericalAberration": [2.7],
        "rlnVoltage": [300.0], "rlnTomoTiltSeriesPixelSize": [pixel_size / 2], "rlnCtfDataAreCtfPremultiplied": [1],
        "rlnImageDimensionality": [2], "rlnTomoSubtomogramBinning": [2.0], "rlnImagePixelSize": [pixel_size],
        "rlnImageSize": [box], "rlnAmplitudeContrast": [0.1],
    })
    starfile.write({"general": {"rlnTomoSubTomosAre2DStacks": 1}, "optics": optics, "particles": particles},
                   path, overwrite=True)


def _write_model(path: Path, root: str, it: int, k: int, distribution, resolution, pixel_size: float,
                 box: int) -> None:
    shells = box // 2 + 1
    index = np.arange(shells)
    frequency = index / (box * pixel_size)
    angstrom = np.where(index > 0, 1.0 / np.maximum(frequency, 1e-12), 999.0)
    blocks = {"model_general": {
        "rlnReferenceDimensionality": 3, "rlnDataDimensionality": 2, "rlnOriginalImageSize": box,
        "rlnCurrentResolution": float(resolution.min()), "rlnCurrentImageSize": box, "rlnPaddingFactor": 2.0,
        "rlnIsHelix": 0, "rlnFourierSpaceInterpolator": 1, "rlnMinRadiusNnInterpolation": 10,
        "rlnPixelSize": pixel_size, "rlnNrClasses": k, "rlnNrBodies": 1, "rlnNrGroups": 1, "rlnNrOpticsGroups": 1,
        "rlnTau2FudgeFactor": 1.0, "rlnNormCorrectionAverage": 1.0, "rlnSigmaOffsetsAngst": 10.0,
        "rlnOrientationalPriorMode": 0, "rlnSigmaPriorRotAngle": 0.0, "rlnSigmaPriorTiltAngle": 0.0,
        "rlnSigmaPriorPsiAngle": 0.0, "rlnLogLikelihood": 4.8e5 + 100 * it, "rlnAveragePmax": 0.5 + 0.1 * it,
    }}
    blocks["model_classes"] = pd.DataFrame({
        "rlnReferenceImage": [f"{root}_it{it:03d}_class{c:03d}.mrc" for c in range(1, k + 1)],
        "rlnClassDistribution": np.round(distribution, 6),
        # RELION writes 0 before the accuracies are estimated
        "rlnAccuracyRotations": [0.0 if it == 0 else round(20.0 - 3 * it + c, 3) for c in range(k)],
        "rlnAccuracyTranslationsAngst": [0.0 if it == 0 else round(12.0 - 2 * it + c, 3) for c in range(k)],
        "rlnEstimatedResolution": np.round(resolution, 6),
        "rlnOverallFourierCompleteness": [round(0.9 - 0.05 * c, 6) for c in range(k)],
    })
    for c in range(1, k + 1):
        ssnr = np.where(angstrom > resolution[c - 1], 10.0 / (1 + index), 0.0)
        blocks[f"model_class_{c}"] = pd.DataFrame({
            "rlnSpectralIndex": index, "rlnResolution": frequency.round(6), "rlnAngstromResolution": angstrom.round(6),
            "rlnSsnrMap": ssnr.round(6), "rlnGoldStandardFsc": np.zeros(shells),
            "rlnFourierCompleteness": np.where(ssnr > 0, 1.0, 0.0),
            "rlnReferenceSigma2": np.full(shells, 1e-5), "rlnReferenceTau2": (ssnr * 1e-5).round(9),
            "rlnSpectralOrientabilityContribution": np.zeros(shells),
        })
    blocks["model_groups"] = pd.DataFrame({"rlnGroupNumber": [1], "rlnGroupName": ["group_1"],
                                           "rlnGroupNrParticles": [30], "rlnGroupScaleCorrection": [1.0]})
    starfile.write(blocks, path, overwrite=True)


def _write_optimiser(path: Path, root: str, it: int, n_iterations: int, tomograms: str) -> None:
    stem = f"{root}_it{it:03d}"
    starfile.write({"optimiser_general": {
        "rlnOutputRootName": root, "rlnModelStarFile": f"{stem}_model.star",
        "rlnExperimentalDataStarFile": f"{stem}_data.star", "rlnTomoTomogramsFile": tomograms,
        "rlnTomoTrajectoriesFile": "", "rlnOrientSamplingStarFile": f"{stem}_sampling.star",
        "rlnCurrentIteration": it, "rlnNumberOfIterations": n_iterations, "rlnDoSplitRandomHalves": 0,
        "rlnJoinHalvesUntilThisResolution": -1.0, "rlnAdaptiveOversampleOrder": 1,
        "rlnAdaptiveOversampleFraction": 0.999, "rlnRandomSeed": 1, "rlnParticleDiameter": 200.0,
        "rlnWidthMaskEdge": 5, "rlnDoZeroMask": 1, "rlnDoSolventFlattening": 1, "rlnDoSolventFscCorrection": 0,
        "rlnSolventMaskName": "None", "rlnHighresLimitExpectation": -1.0, "rlnDoMapEstimation": 1,
        "rlnDoFastSubsetOptimisation": 0, "rlnDoAutoRefine": 0, "rlnDoAutoSampling": 0,
    }}, path, overwrite=True)
