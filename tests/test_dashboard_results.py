"""A job's headline (dashboard.results): read from RELION's own files where there are some, and
the pixel-size limit told apart from an FSC that crossed 0.143."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import starfile

from dashboard.readers import FscCurve, RefineIteration, final_iteration, read_refine_iteration, refine_iterations
from dashboard.results import extract_headline, read_extract_counts, reconstruct_headline, refine_headline
from processing.io.refine_star import ModelStarContents

DATA = Path(__file__).parent / "data"
RELION_REFINE = DATA / "refine_demo" / "Refine3D"


def _iteration(fsc: list[float], *, final: bool, resolution: float = 20.0) -> RefineIteration:
    n = len(fsc)
    box, pixel = 2 * (n - 1), 8.0
    return RefineIteration(iteration=5, resolution=resolution,
                           fsc=FscCurve(np.arange(n) / (box * pixel), np.asarray(fsc, float)),
                           accuracy_rotations=2.0, accuracy_translations=1.5, angular_step=3.75, healpix_order=3,
                           offset_step=4.0, ori_size=box, pixel_size=pixel, final=final)


def test_refine_headline_of_relions_unconverged_run():
    """RELION's demo run stopped at iteration 10 (--auto_iter_max): the headline is iteration
    10's resolution from its model file, marked as not converged."""
    listing = sorted(p.name for p in RELION_REFINE.iterdir())
    assert final_iteration(listing) is None
    history = [read_refine_iteration(RELION_REFINE, n) for n in refine_iterations(listing)]
    headline = refine_headline(history, job_dir="Refine3D/job005/", elapsed=3725.0)
    expected = ModelStarContents.read(RELION_REFINE / "run_it010_half1_model.star").current_resolution
    assert headline.value == pytest.approx(expected)
    assert headline.title == f"{expected:.2f} Å" and headline.badge.endswith("(not converged)")
    assert "after iteration 10" in headline.warning
    assert headline.facts[0] == "10 iterations after the initial model · 1 h 2 min"


def test_nyquist_limited_is_told_apart_from_a_crossing():
    high = [1.0] + [0.9] * 7 + [0.6, 0.5]                    # above 0.143 up to the last shell before Nyquist
    crossing = [1.0, 0.95, 0.9, 0.8, 0.6, 0.3, 0.1, 0.05, 0.02, 0.01]
    limited = refine_headline([_iteration(high, final=False), _iteration(high, final=True, resolution=16.0)],
                              job_dir="Refine3D/job004/", elapsed=None)
    assert limited.warning.startswith("Nyquist-limited") and "16.00 Å" in limited.warning
    assert limited.badge == "16.00 Å (Nyquist)"
    assert limited.facts[0] == "1 iteration after the initial model"
    assert "Refine3D/job004/run_class001.mrc" in " ".join(limited.facts)
    fine = refine_headline([_iteration(crossing, final=True, resolution=31.5)], job_dir="R/", elapsed=None)
    assert fine.warning == "" and fine.badge == "31.50 Å"
    # Reconstruct: the half-map FSC never below 0.143 -> limited; a crossing -> its resolution.
    curve = FscCurve(np.arange(10) / 144.0, np.asarray(high))
    assert reconstruct_headline(curve, ["merged.mrc"]).warning.startswith("Nyquist")
    curve = FscCurve(np.arange(10) / 144.0, np.asarray(crossing))
    headline = reconstruct_headline(curve, ["half1.mrc", "half2.mrc", "merged.mrc"])
    assert headline.value == pytest.approx(144.0 / 5) and not headline.warning     # shell 5: last at or above 0.143
    assert reconstruct_headline(None, []) is None
    assert reconstruct_headline(None, ["merged.mrc"]).title == "map written"


@pytest.mark.parametrize("case", ["bin3_2d", "bin2_3d"])
def test_extract_counts_of_relions_extraction(case):
    """Particles and visible tilt images of RELION's own relion_tomo_subtomo output."""
    path = DATA / "extract_relion" / case / "particles.star"
    table = starfile.read(path)["particles"]
    particles, tilts = read_extract_counts(path)
    assert particles == len(table)
    expected = sum(str(v).count("1") for v in table["rlnTomoVisibleFrames"]) \
        if "rlnTomoVisibleFrames" in table else 0
    assert tilts == expected
    headline = extract_headline((particles, tilts))
    assert headline.title == f"{particles} particles"


def test_particle_pictures_of_relions_iteration():
    """The particles card's data from RELION's own iteration-1 data file: every particle counted
    once in the viewing-direction map and in each histogram, values as starfile reads them."""
    from dashboard.plots import angular_data, histogram_data, tomogram_data
    from dashboard.readers import read_particle_stats

    path = RELION_REFINE / "run_it001_data.star"
    table = starfile.read(path)["particles"]
    stats = read_particle_stats(path)
    np.testing.assert_array_equal(stats.pmax, table["rlnMaxValueProbDistribution"].to_numpy(float))
    np.testing.assert_array_equal(stats.n_significant, table["rlnNrOfSignificantSamples"].to_numpy(float))
    n = len(table)
    angles = angular_data(stats.rot, stats.tilt)["image"][0]
    assert angles.shape == (36, 72) and angles.sum() == n
    # a direction lands in the cell of its rot and cos(tilt)
    row = int((np.cos(np.radians(stats.tilt[0])) + 1) / 2 * 36 - 1e-9)
    column = int(((stats.rot[0] + 180) % 360) / 5)
    assert angles[row, column] >= 1
    pmax = histogram_data(stats.pmax, bins=25, value_range=(0.0, 1.0))
    assert sum(pmax["count"]) == n and pmax["left"][0] == 0.0 and pmax["right"][-1] == 1.0
    nsig = histogram_data(stats.n_significant)
    assert sum(nsig["count"]) == n
    if stats.n_significant.max() - stats.n_significant.min() < 30:        # one bar per integer value
        assert all(r - l == 1.0 for l, r in zip(nsig["left"], nsig["right"]))
    mine = stats.tomogram == stats.tomogram[0]
    points, edges = tomogram_data(stats.x[mine], stats.y[mine], stats.z[mine], stats.pmax[mine])
    assert len(points["x"]) == int(mine.sum()) and min(points["size"]) >= 5 and max(points["size"]) <= 13
    # drawn far to near, so the nearer particles cover the farther ones
    assert points["depth"] == sorted(points["depth"])
    assert len(edges["x0"]) == 12
    # the positions are RELION's, shifted by one vector (the middle of their bounding box)
    original = {round(v, 9): (a, b, c) for v, a, b, c in zip(stats.pmax[mine], stats.x[mine], stats.y[mine], stats.z[mine])}
    if len(original) == int(mine.sum()):            # values unique: match each point to its particle
        offsets = np.array([np.subtract(original[round(v, 9)], (a, b, c))
                            for v, a, b, c in zip(points["value"], points["x"], points["y"], points["z"])])
        np.testing.assert_allclose(offsets, np.broadcast_to(offsets[0], offsets.shape), atol=1e-6)


def test_particles_3d_view_is_a_rotation():
    """The 3D view's projection: from straight above (elevation 90, azimuth 0) it is the top view;
    any turn keeps the distances between the particles (screen distance and depth together), and
    the bounding box's 12 edges keep their lengths."""
    from dashboard.plots import project_points, tomogram_data

    rng = np.random.default_rng(3)
    xyz = rng.uniform(-500, 500, (40, 3)) * [1, 1, 0.3]
    px, py, depth = project_points(*xyz.T, azimuth=0, elevation=90)
    np.testing.assert_allclose(np.array([px, py, depth]).T, xyz, atol=1e-9)
    for azimuth, elevation in ((30, 35), (-120, -60), (90, 0)):
        turned = np.array(project_points(*xyz.T, azimuth=azimuth, elevation=elevation)).T
        np.testing.assert_allclose(np.linalg.norm(turned[1:] - turned[0], axis=1),
                                   np.linalg.norm(xyz[1:] - xyz[0], axis=1), rtol=1e-12)
    # seen from the side (elevation 0, azimuth 0), z is up on the screen and -y points to the viewer
    px, py, depth = project_points([0.0], [-1.0], [2.0], azimuth=0, elevation=0)
    np.testing.assert_allclose([px[0], py[0], depth[0]], [0.0, 2.0, 1.0], atol=1e-12)
    points, edges = tomogram_data(*xyz.T, np.arange(40.0), azimuth=50, elevation=20)
    sides = np.ptp(xyz, axis=0)
    lengths = sorted(np.linalg.norm(np.array([edges["x1"], edges["y1"], edges["z1"]]).T
                                    - np.array([edges["x0"], edges["y0"], edges["z0"]]).T, axis=1))
    np.testing.assert_allclose(lengths, sorted(np.repeat(sides, 4)), rtol=1e-12)
    # NaN positions (a data file without centred coordinates) are left out
    with_nan = xyz.copy()
    with_nan[3, 2] = np.nan
    assert len(tomogram_data(*with_nan.T, np.arange(40.0))[0]["x"]) == 39


def test_refine_forecast_is_a_lower_bound_on_relions_run():
    """Replayed on RELION's converged run (tests/data/refine_test_relion: iterations 0-12, the
    final 13th as run_model.star), the forecast after every iteration never promises convergence
    later than it came, and after the last one it names the final iteration exactly."""
    from dashboard.results import refine_forecast

    run = DATA / "refine_test_relion"
    history = [read_refine_iteration(run, n) for n in range(13)]
    final = 13
    predicted = {}
    for k in range(1, 13):
        forecast = refine_forecast(history[: k + 1], [60.0, 62.0, 61.0])
        predicted[k] = k + forecast.iterations
        assert predicted[k] <= final, predicted
        assert forecast.seconds == pytest.approx(61.0 * forecast.iterations)
    assert predicted[12] == final
    assert refine_forecast(history[:1], []) is None            # no accuracy before iteration 1
    assert refine_forecast(history + [_iteration([1.0, 0.5], final=True)], []) is None


def test_orthoslice_scale_bar_and_contrast():
    """A section of a 32-px map at 6 Å (192 Å wide) gets a 20 Å bar (a round quarter of the
    width) drawn 20/6 px long; more contrast saturates more voxels."""
    from dashboard.plots import contrast, scale_bar_length, slice_data

    assert [scale_bar_length(w) for w in (192.0, 1000.0, 9.0, 3000.0)] == [20.0, 200.0, 2.0, 500.0]
    section = np.arange(32 * 32, dtype=np.float32).reshape(32, 32)
    data = slice_data(section, 6.0)
    assert data["bar_label"] == ["20 Å"]
    assert data["bar_x1"][0] - data["bar_x0"][0] == pytest.approx(20.0 / 6.0)
    assert np.isnan(slice_data(section)["bar_x0"][0])                     # no pixel size: no bar
    lo1, hi1 = contrast(section, 1.0)
    lo5, hi5 = contrast(section, 5.0)
    assert lo5 > lo1 and hi5 < hi1
