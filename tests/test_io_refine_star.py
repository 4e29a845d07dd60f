"""Refine outputs: _model, _optimiser, _sampling, _data and _optimisation_set STAR files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import starfile

from processing.errors import InputError
from processing.io.optimisation_set import OptimisationSet
from processing.io.particles import ParticleSet
from processing.io.refine_star import (
    ModelStarContents,
    OptimiserStarContents,
    SamplingStarContents,
    iteration_root,
    read_data_star,
    refine_optimisation_set,
    shell_resolutions,
    write_data_star,
)

#: RELION 5 fixtures copied from ../shared/conformance (origin: tests/data/*/ORIGIN.md).
DATA = Path(__file__).resolve().parent / "data"


def make_model(ori_size=32, n_optics=1, orientability=True) -> ModelStarContents:
    n = ori_size // 2 + 1
    rng = np.random.default_rng(0)
    noise = [rng.uniform(1, 2, n) for _ in range(n_optics)]
    noise[0][0] = 0.0        # unused shells are not written
    noise[0][-1] = 0.0
    return ModelStarContents(
        ori_size=ori_size, pixel_size=4.0, current_resolution=21.3, current_image_size=16,
        reference_image="Refine3D/job004/run_it003_half1_class001.mrc",
        gold_standard_fsc=np.linspace(1, 0, n), ssnr_map=rng.uniform(0, 5, n),
        fourier_completeness=rng.uniform(0, 1, n), reference_sigma2=rng.uniform(0, 1, n),
        reference_tau2=rng.uniform(0, 1, n), sigma2_noise=noise,
        group_names=["TS_01", "TS_02", "03"], group_nr_particles=np.array([10, 12, 7]),
        group_scale_correction=np.array([1.0, 0.97, 1.02]),
        orientation_distribution=np.full(28, 1 / 28),
        orientability_contribution=rng.uniform(0, 1, n) if orientability else None,
        sigma_offsets_angst=3.5, orientational_prior_mode=1, sigma_prior_tilt_angle=10.0,
        log_likelihood=-1.5e6, average_pmax=0.42, accuracy_rotations=4.2,
        accuracy_translations_angst=2.1, estimated_resolution=19.0, overall_fourier_completeness=0.9,
    )


def assert_model_equal(a: ModelStarContents, b: ModelStarContents) -> None:
    for name, value in vars(a).items():
        other = getattr(b, name)
        if name == "sigma2_noise":
            assert len(value) == len(other)
            for x, y in zip(value, other):
                np.testing.assert_allclose(x, y, rtol=1e-11)
        elif value is None or other is None:
            assert value is None and other is None, name
        elif isinstance(value, (np.ndarray, list)) and name != "group_names":
            np.testing.assert_allclose(np.asarray(value, float), np.asarray(other, float), rtol=1e-11, err_msg=name)
        else:
            assert value == other, name


def test_model_round_trip_and_relion_tables(tmp_path):
    model = make_model(n_optics=2)
    path = tmp_path / "run_it003_half1_model.star"
    model.write(path)
    back = ModelStarContents.read(path)
    assert_model_equal(model, back)
    assert back.group_names == ["TS_01", "TS_02", "03"]

    blocks = starfile.read(path, always_dict=True)
    assert list(blocks) == ["model_general", "model_classes", "model_class_1", "model_groups",
                            "model_optics_group_1", "model_optics_group_2", "model_pdf_orient_class_1"]
    general = blocks["model_general"]
    assert list(general) == [
        "rlnReferenceDimensionality", "rlnDataDimensionality", "rlnOriginalImageSize", "rlnCurrentResolution",
        "rlnCurrentImageSize", "rlnPaddingFactor", "rlnIsHelix", "rlnFourierSpaceInterpolator",
        "rlnMinRadiusNnInterpolation", "rlnPixelSize", "rlnNrClasses", "rlnNrBodies", "rlnNrGroups",
        "rlnNrOpticsGroups", "rlnTau2FudgeFactor", "rlnNormCorrectionAverage", "rlnSigmaOffsetsAngst",
        "rlnOrientationalPriorMode", "rlnSigmaPriorRotAngle", "rlnSigmaPriorTiltAngle",
        "rlnSigmaPriorPsiAngle", "rlnLogLikelihood", "rlnAveragePmax",
    ]
    assert general["rlnCurrentResolution"] == pytest.approx(21.3)       # Å, not 1/Å
    assert general["rlnIsHelix"] == 0 and general["rlnNrGroups"] == 3 and general["rlnNrOpticsGroups"] == 2
    assert list(blocks["model_classes"].columns) == [
        "rlnReferenceImage", "rlnClassDistribution", "rlnAccuracyRotations", "rlnAccuracyTranslationsAngst",
        "rlnEstimatedResolution", "rlnOverallFourierCompleteness",
    ]
    spectra = blocks["model_class_1"]
    assert list(spectra.columns) == [
        "rlnSpectralIndex", "rlnResolution", "rlnAngstromResolution", "rlnSsnrMap", "rlnGoldStandardFsc",
        "rlnFourierCompleteness", "rlnReferenceSigma2", "rlnReferenceTau2", "rlnSpectralOrientabilityContribution",
    ]
    assert len(spectra) == 17 and spectra["rlnAngstromResolution"][0] == 999
    np.testing.assert_allclose(spectra["rlnResolution"], np.arange(17) / (4.0 * 32))
    np.testing.assert_allclose(spectra["rlnAngstromResolution"][1:], 128.0 / np.arange(1, 17))
    assert list(blocks["model_groups"].columns) == [
        "rlnGroupNumber", "rlnGroupName", "rlnGroupNrParticles", "rlnGroupScaleCorrection"]
    noise = blocks["model_optics_group_1"]
    assert list(noise.columns) == ["rlnSpectralIndex", "rlnResolution", "rlnSigma2Noise"]
    assert list(noise["rlnSpectralIndex"]) == list(range(1, 16))      # shells with sigma2 > 0 only
    assert len(blocks["model_optics_group_2"]) == 17
    assert list(blocks["model_pdf_orient_class_1"].columns) == ["rlnOrientationDistribution"]
    assert len(blocks["model_pdf_orient_class_1"]) == 28


def test_model_without_orientability_and_errors(tmp_path):
    model = make_model(orientability=False)
    path = tmp_path / "m_model.star"
    model.write(path)
    assert "rlnSpectralOrientabilityContribution" not in starfile.read(path, always_dict=True)["model_class_1"]
    assert ModelStarContents.read(path).orientability_contribution is None
    with pytest.raises(ValueError):
        make_model().__class__(**{**vars(make_model()), "gold_standard_fsc": np.zeros(3)}).write(tmp_path / "x.star")
    text = path.read_text().replace("data_model_groups", "data_model_groupz")
    (tmp_path / "bad.star").write_text(text)
    with pytest.raises(InputError) as err:
        ModelStarContents.read(tmp_path / "bad.star")
    assert err.value.table == "model_groups"


def test_shell_resolutions():
    res, ang = shell_resolutions(10, 2.0)
    np.testing.assert_allclose(res, [0, 0.05, 0.1, 0.15, 0.2, 0.25])
    assert ang[0] == 999 and ang[-1] == pytest.approx(4.0)


def make_optimiser(**changes) -> OptimiserStarContents:
    values = dict(
        output_root="Refine3D/job004/run", model_star_file="Refine3D/job004/run_it003_half1_model.star",
        model_star_file2="Refine3D/job004/run_it003_half2_model.star",
        data_star_file="Refine3D/job004/run_it003_data.star", tomograms_file="Tomograms/tomograms.star",
        sampling_star_file="Refine3D/job004/run_it003_sampling.star", current_iteration=3,
        random_seed=1234, particle_diameter=230.0, do_zero_mask=True, do_solvent_flattening=True,
        nr_iter_without_resolution_gain=1, best_resolution_thus_far=1 / 21.3,
        nr_iter_without_changing_assignments=0, overall_accuracy_rotations=4.2,
        overall_accuracy_translations_angst=2.1, changes_optimal_orientations=6.5,
        changes_optimal_offsets=1.2, changes_optimal_classes=0.0, smallest_changes_orientations=6.5,
        smallest_changes_offsets=1.2, smallest_changes_classes=0, do_correct_norm=True, do_correct_scale=True,
        max_number_of_pooled_particles=3,
        command_line=("--o", "Refine3D/job004/run", "--auto_refine", "--ref", "my map.mrc", "--gpu", ""),
    )
    values.update(changes)
    return OptimiserStarContents(**values)


SPEC_OPTIMISER_LABELS = [
    "rlnOutputRootName", "rlnModelStarFile", "rlnModelStarFile2", "rlnExperimentalDataStarFile",
    "rlnTomoTomogramsFile", "rlnTomoTrajectoriesFile", "rlnOrientSamplingStarFile", "rlnCurrentIteration",
    "rlnNumberOfIterations", "rlnDoSplitRandomHalves", "rlnJoinHalvesUntilThisResolution",
    "rlnAdaptiveOversampleOrder", "rlnAdaptiveOversampleFraction", "rlnRandomSeed", "rlnParticleDiameter",
    "rlnWidthMaskEdge", "rlnDoZeroMask", "rlnDoSolventFlattening", "rlnDoSolventFscCorrection",
    "rlnSolventMaskName", "rlnSolventMask2Name", "rlnTauSpectrumName", "rlnMaximumCoarseImageSize",
    "rlnHighresLimitExpectation", "rlnLowresLimitExpectation", "rlnIncrementImageSize", "rlnDoMapEstimation",
    "rlnDoAutoRefine", "rlnDoAutoSampling", "rlnAutoLocalSearchesHealpixOrder",
    "rlnNumberOfIterWithoutResolutionGain", "rlnBestResolutionThusFar",
    "rlnNumberOfIterWithoutChangingAssignments", "rlnOverallAccuracyRotations",
    "rlnOverallAccuracyTranslationsAngst", "rlnChangesOptimalOrientations", "rlnChangesOptimalOffsets",
    "rlnChangesOptimalClasses", "rlnSmallestChangesOrientations", "rlnSmallestChangesOffsets",
    "rlnSmallestChangesClasses", "rlnHasConverged", "rlnHasHighFscAtResolLimit", "rlnDoCorrectNorm",
    "rlnDoCorrectScale", "rlnDoCorrectCtf", "rlnDoIgnoreCtfUntilFirstPeak", "rlnRefsAreCtfCorrected",
    "rlnFixSigmaNoiseEstimates", "rlnFixSigmaOffsetEstimates", "rlnMaxNumberOfPooledParticles",
    "rlnOffsetRangeX", "rlnOffsetRangeY", "rlnOffsetRangeZ", "rlnDoBlush",
]


def test_optimiser_round_trip_labels_and_command_line(tmp_path):
    opt = make_optimiser()
    path = tmp_path / "run_it003_optimiser.star"
    opt.write(path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# RELION optimiser; version")
    assert lines[1] == "# --o Refine3D/job004/run --auto_refine --ref 'my map.mrc' --gpu ''"
    back = OptimiserStarContents.read(path)
    assert back == opt
    assert back.command_line == opt.command_line

    blocks = starfile.read(path, always_dict=True)
    assert list(blocks) == ["optimiser_general"]
    general = blocks["optimiser_general"]
    labels = list(general)
    assert [label for label in labels if label in SPEC_OPTIMISER_LABELS] == SPEC_OPTIMISER_LABELS
    assert general["rlnDoSplitRandomHalves"] == 1 and general["rlnHasConverged"] == 0
    assert general["rlnCurrentIteration"] == 3 and general["rlnModelStarFile"].endswith("half1_model.star")


def test_optimiser_joined_halves_and_extras(tmp_path):
    opt = make_optimiser(model_star_file="R/run_model.star", model_star_file2="", has_converged=True,
                         extra={"rlnDoSkipRotate": 1, "rlnSomethingNew": "abc"})
    opt.write(tmp_path / "o.star")
    back = OptimiserStarContents.read(tmp_path / "o.star")
    assert back.model_star_file2 == "" and back.has_converged
    assert back.extra == {"rlnDoSkipRotate": 1, "rlnSomethingNew": "abc"}


def test_optimiser_reads_relion_style_file_and_locates_errors(tmp_path):
    text = (
        "# RELION optimiser; version 5.0.1\n"
        "# --o Refine3D/job004/run --auto_refine --split_random_halves --ios s.star\n\n"
        "data_optimiser_general\n\n"
        "_rlnOutputRootName Refine3D/job004/run\n"
        "_rlnModelStarFile Refine3D/job004/run_it001_half1_model.star\n"
        "_rlnModelStarFile2 Refine3D/job004/run_it001_half2_model.star\n"
        "_rlnExperimentalDataStarFile Refine3D/job004/run_it001_data.star\n"
        "_rlnOrientSamplingStarFile Refine3D/job004/run_it001_sampling.star\n"
        "_rlnCurrentIteration 1\n"
        "_rlnBestResolutionThusFar 0.0416666\n"
        "_rlnHasConverged 0\n"
    )
    (tmp_path / "relion.star").write_text(text)
    opt = OptimiserStarContents.read(tmp_path / "relion.star")
    assert opt.current_iteration == 1 and opt.best_resolution_thus_far == pytest.approx(0.0416666)
    assert opt.command_line[:2] == ("--o", "Refine3D/job004/run")
    assert opt.number_of_iterations == 999  # absent label: default
    (tmp_path / "bad.star").write_text(text.replace("_rlnCurrentIteration 1\n", ""))
    with pytest.raises(InputError) as err:
        OptimiserStarContents.read(tmp_path / "bad.star")
    assert err.value.column == "rlnCurrentIteration" and err.value.table == "optimiser_general"
    (tmp_path / "bad2.star").write_text(text.replace("_rlnHasConverged 0", "_rlnHasConverged maybe"))
    with pytest.raises(InputError) as err:
        OptimiserStarContents.read(tmp_path / "bad2.star")
    assert err.value.column == "rlnHasConverged"


def test_sampling_reads_relion_fixture_and_round_trips(tmp_path):
    fixture = DATA / "sampling" / "C6_order2_sampling.star"
    s = SamplingStarContents.read(fixture)
    assert (s.healpix_order, s.symmetry, s.psi_step, s.offset_range, s.offset_step) == (2, "C6", 15.0, 20.0, 8.0)
    assert len(s.directions_rot) == 28 and not s.is_3d_translational and s.is_3d
    assert s.tilt_angle_limit == -91 and s.perturb_factor == 0.5
    s.write(tmp_path / "run_it001_sampling.star")
    back = SamplingStarContents.read(tmp_path / "run_it001_sampling.star")
    for name, value in vars(s).items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, getattr(back, name))
        else:
            assert getattr(back, name) == value, name
    ours = starfile.read(tmp_path / "run_it001_sampling.star", always_dict=True)
    theirs = starfile.read(fixture, always_dict=True)
    assert list(ours) == list(theirs) == ["sampling_general", "sampling_directions"]
    assert list(ours["sampling_general"]) == list(theirs["sampling_general"])
    assert list(ours["sampling_directions"].columns) == ["rlnAngleRot", "rlnAngleTilt"]


def test_sampling_originals_default_to_current():
    s = SamplingStarContents(healpix_order=3, psi_step=7.5, offset_range=12.0, offset_step=3.0, symmetry="C1",
                             directions_rot=np.zeros(2), directions_tilt=np.ones(2))
    assert (s.healpix_order_original, s.psi_step_original, s.offset_range_original, s.offset_step_original) == (
        3, 7.5, 12.0, 3.0)
    assert s.is_3d_translational


def test_data_star_and_optimisation_set(tmp_path):
    particles = pd.DataFrame({
        "rlnTomoName": ["TS_01", "TS_01"], "rlnCenteredCoordinateXAngst": [1.0, 2.0],
        "rlnCenteredCoordinateYAngst": [0.0, 0.0], "rlnCenteredCoordinateZAngst": [5.0, 6.0],
        "rlnAngleRot": [10.0, 20.0], "rlnAngleTilt": [90.0, 80.0], "rlnAnglePsi": [0.0, 5.0],
        "rlnOriginXAngst": [0.5, 0.0], "rlnOriginYAngst": [0.0, 0.0], "rlnOriginZAngst": [0.0, -0.5],
        "rlnClassNumber": [1, 1], "rlnRandomSubset": [1, 2], "rlnGroupNumber": [1, 1],
        "rlnMaxValueProbDistribution": [0.3, 0.4], "rlnNrOfSignificantSamples": [3, 5],
        "rlnLogLikeliContribution": [1e4, 2e4], "rlnNormCorrection": [1.0, 1.0],
    })
    optics = pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": ["optics1"], "rlnImagePixelSize": [4.0]})
    ps = ParticleSet(particles, optics, {"rlnTomoSubTomosAre2DStacks": 1})
    write_data_star(tmp_path / "run_it001_data.star", ps)
    blocks = starfile.read(tmp_path / "run_it001_data.star", always_dict=True)
    assert list(blocks)[:3] == ["general", "optics", "particles"]
    back = read_data_star(tmp_path / "run_it001_data.star")
    np.testing.assert_allclose(back.angles(), ps.angles())
    assert list(back.random_subset()) == [1, 2]

    base = OptimisationSet(particles="Extract/job002/particles.star", tomograms="Tomograms/tomograms.star",
                           reference_fsc="PostProcess/job010/postprocess.star")
    it = refine_optimisation_set(base, "Refine3D/job004/run_it001_data.star")
    assert it.particles == "Refine3D/job004/run_it001_data.star" and it.tomograms == base.tomograms
    assert it.reference_fsc is None and it.reference_map1 is None
    final = refine_optimisation_set(base, "R/run_data.star", half1_map="R/run_half1_class001_unfil.mrc",
                                    half2_map="R/run_half2_class001_unfil.mrc", mask="None")
    final.write(tmp_path / "run_optimisation_set.star")
    table = starfile.read(tmp_path / "run_optimisation_set.star", always_dict=True)["optimisation_set"]
    assert table["rlnTomoParticlesFile"] == "R/run_data.star"
    assert table["rlnTomoReferenceMap1File"] == "R/run_half1_class001_unfil.mrc"
    assert "rlnTomoReferenceMaskFile" not in table and "rlnTomoReferenceFscFile" not in table
    assert OptimisationSet.read(tmp_path / "run_optimisation_set.star").reference_map2.endswith("half2_class001_unfil.mrc")


def test_iteration_root():
    assert iteration_root("Refine3D/job004/run", 5) == "Refine3D/job004/run_it005"
    assert iteration_root("Refine3D/job004/run", 0) == "Refine3D/job004/run_it000"
    assert iteration_root("Refine3D/job004/run", None) == "Refine3D/job004/run"
