"""The ``tutorial`` simulator preset and ``benchmarks/scale_bench.py`` (its small form).

About 30 s: one run of the benchmark's six steps (each a ``tomodash`` process) on 12
particles of one small tomogram, with refinements of up to 3 iterations (the bin-2 chain from
the bin-6 refinement's poses), whose dataset the preset's checks then read.
"""
from __future__ import annotations

import importlib.util
import io
import json
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from processing.errors import InputError
from processing.io import ParticleSet, read_star
from processing.simulate import PRESETS, TUTORIAL, sphere_capacity, with_particle_count
from processing.simulate.dataset import build_phantom

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("scale_bench", ROOT / "benchmarks" / "scale_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale_bench"] = module
    spec.loader.exec_module(module)
    return module


bench = _bench()

# ---- the preset's parameters ------------------------------------------------------------


def test_tutorial_preset_is_shaped_like_the_tutorial():
    p = PRESETS["tutorial"]
    assert p is TUTORIAL
    assert p.n_tomograms == 5 and p.symmetry == "C6" and p.pdb is None
    angles = np.arange(p.tilt_min, p.tilt_max + p.tilt_step / 2, p.tilt_step)
    assert len(angles) == 41 and angles[0] == -60.0 and angles[-1] == 60.0
    assert p.dose_per_tilt == 3.0
    # stored at the tutorial's bin 2 (1.35 Å x 2), its field of view: 3710x3838 px at 1.35 Å
    # (rounded up to even at 2.7 Å), tomograms 4000x4000x3000 at 1.35 Å
    assert p.pixel_size == 2.7
    assert p.image_size == (1856, 1920)
    assert p.tomogram_size == (2000, 2000, 1500)
    assert abs(p.image_size[0] * p.pixel_size - 3710 * 1.35) <= p.pixel_size + 1e-6  # one stored pixel
    assert abs(p.image_size[1] * p.pixel_size - 3838 * 1.35) <= p.pixel_size + 1e-6
    # the tutorial's extraction geometries: bin 6 (8.1 Å) and bin 2 (2.7 Å) are bin 3 and 1 here
    assert 3 * p.pixel_size == pytest.approx(6 * 1.35) and 1 * p.pixel_size == pytest.approx(2 * 1.35)
    # HIV-like: a ~100 Å hexamer on ~1.2 µm spheres, thousands of particles per tomogram
    assert build_phantom(p).symmetry == "C6"
    assert 1100.0 <= 2 * p.sphere_radius_angst <= 1400.0
    assert sphere_capacity(p) >= p.max_particles_per_sphere  # every sphere reaches the cap
    # a capsid-like net whose neighbours give the in-plane angle (a lone hexamer is round at
    # the bin-6 refinement's 60 Å start; test_simulate_geometry checks the net)
    assert p.sphere_lattice == "geodesic"
    per_tomogram = p.spheres_per_tomogram * p.max_particles_per_sphere
    assert per_tomogram == 2000 and p.n_tomograms * per_tomogram == 10000


@pytest.mark.parametrize("n", [10, 1000, 3000, 10000, 30000])
def test_particle_counts_the_benchmark_asks_for_are_exact(n):
    p = with_particle_count(TUTORIAL, n)
    assert p.n_tomograms * p.spheres_per_tomogram * p.max_particles_per_sphere == n
    assert p.spheres_per_tomogram <= TUTORIAL.spheres_per_tomogram        # the field holds 8
    assert p.max_particles_per_sphere <= sphere_capacity(TUTORIAL)
    # 30,000 needs tomograms beyond the tutorial's five, at the same density
    assert p.n_tomograms == (15 if n == 30000 else 5)


def test_particle_count_that_does_not_divide_overshoots_by_less_than_one_per_sphere():
    p = with_particle_count(TUTORIAL, 30596)
    total = p.n_tomograms * p.spheres_per_tomogram * p.max_particles_per_sphere
    assert 30596 <= total < 30596 + p.n_tomograms * p.spheres_per_tomogram


def test_particle_count_must_be_positive():
    with pytest.raises(InputError, match="n_particles.*≥ 1|≥ 1.*n_particles"):
        with_particle_count(TUTORIAL, 0)


def test_existing_presets_are_unchanged():
    """The demo's and the tests' datasets (other tests' ground truth) keep their parameters."""
    demo, test = PRESETS["demo"], PRESETS["test"]
    assert (demo.n_tomograms, demo.phantom_diameter_angst, demo.image_size, demo.pixel_size,
            demo.max_particles_per_sphere) == (4, 210.0, (768, 768), 2.7, 0)
    assert (test.n_tomograms, test.image_size, test.pixel_size, test.tilt_step) == (1, (256, 256), 6.0, 9.0)


# ---- peak RSS of one process --------------------------------------------------------------


def test_run_step_reports_each_process_own_peak(tmp_path):
    """A process that touches 300 MB reports at least that; one started after it reports its
    own, smaller peak (not the largest of all children, as RUSAGE_CHILDREN would)."""
    big = [sys.executable, "-c", "import numpy as np; a = np.ones(300 * 2**20 // 8); print(a.sum())"]
    small = [sys.executable, "-c", "print(1)"]
    seconds, rss_big = bench.run_step(big, tmp_path / "big.log")
    _, rss_small = bench.run_step(small, tmp_path / "small.log")
    assert seconds > 0
    assert rss_big >= 300.0
    assert rss_small < rss_big - 200.0
    with pytest.raises(SystemExit, match="exit 3"):
        bench.run_step([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "fail.log")


def test_report_ratios_and_projection():
    rows = [bench.StepResult(step, n, seconds, rss)
            for n, factor in ((100, 1.0), (300, 3.3))
            for step, seconds, rss in zip(bench.STEPS, (1, 2, 4, 1, 2, 8), (100, 100, 100, 200, 200, 200))
            for seconds, rss in [(seconds * factor, rss * (1.5 if n == 300 else 1.0))]]
    text = bench.format_report(rows, cores=2)
    # x3 particles, x3.3 time: 1.10 of linear; RSS x1.5
    assert text.count("time x3.30 (1.10 of linear), RSS x1.50") == len(bench.STEPS)
    # bin 6 refine: 4 s x 3.3 / 300 particles x 30,596 particles x 12 iterations
    hours = 4 * 3.3 / 300 * 30596 * bench.ASSUMED_ITERATIONS["refine_bin6"] / 3600
    assert f"refinement ~{hours:.1f} h" in text


REFINE_LOG = """3D auto-refine: 1000 particles (2D stacks), box 96 at 8.100 Å/px, C6, mask 500 Å, 1 process(es) x 2 thread(s)
Iteration 1: resolution 59.82 Å, image size 46 (coarse 30), sampling 7.50° (HEALPix 2), offsets 40.5/16.2 Å
  -> resolution 59.82 Å, acc. rot 999.00°, trans 999.00 Å, changes 17.68° / 16.46 Å, <Pmax> 1.000, E 17.1 s, M 0.7 s
Iteration 2: resolution 40.50 Å, image size 50 (coarse 30), sampling 3.75° (HEALPix 3, local), offsets 16.2/8.1 Å
  -> resolution 38.00 Å, acc. rot 4.00°, trans 6.00 Å, changes 5.00° / 3.00 Å, <Pmax> 0.400, E 120.5 s, M 0.9 s
Iteration 3 (final): resolution 38.00 Å, image size 96 (coarse 96), sampling 3.75° (HEALPix 3, local), offsets 16.2/8.1 Å
  -> resolution 36.00 Å, acc. rot 4.00°, trans 6.00 Å, changes 1.00° / 1.00 Å, <Pmax> 0.500, E 200.0 s, M 2.0 s
Auto-refine converged: final resolution 36.00 Å
"""


def test_refine_log_iterations_and_convergence():
    timings, converged = bench.refine_iterations(REFINE_LOG)
    assert converged
    assert [t.iteration for t in timings] == [1, 2, 3]
    assert [t.expectation_s for t in timings] == [17.1, 120.5, 200.0]
    assert [t.maximisation_s for t in timings] == [0.7, 0.9, 2.0]
    assert timings[1].search == "image size 50 (coarse 30), sampling 3.75° (HEALPix 3, local)"
    unfinished = REFINE_LOG.split("Iteration 3")[0] + "Stopped at --auto_iter_max without convergence\n"
    timings, converged = bench.refine_iterations(unfinished)
    assert not converged and len(timings) == 2
    # an iteration without its closing line (a killed run) is not counted
    assert len(bench.refine_iterations(REFINE_LOG.rsplit("  -> ", 1)[0])[0]) == 2


def test_whole_refinement_projection_scales_the_e_step_only():
    timings, converged = bench.refine_iterations(REFINE_LOG)
    whole = bench.StepResult("refine_bin6", 1000, 400.0, 700.0, timings, converged)
    e = 17.1 + 120.5 + 200.0
    # E-step x 30.596, the rest (400 s - E) once
    assert bench.projected_refinement_seconds(whole, 30596) == pytest.approx(e * 30.596 + 400.0 - e)
    text = bench.format_report([whole], cores=2)
    hours = (e * 30.596 + 400.0 - e) / 3600
    assert f"bin6: refinement ~{hours:.1f} h from its 3 measured iterations (converged)" in text
    assert "all iterations: E-step 337.6 s = 19.7 x iteration 1's" in text
    # iteration 2: 120.5 s = 120.50 ms per particle, 7.05 x iteration 1
    assert re.search(r"\n\s+2\s+120\.5\s+120\.50\s+7\.05\s+0\.9\s+image size 50", text)
    # no bin-2 figures: no bin-2 line
    assert "bin2:" not in text


# ---- the small form end to end ------------------------------------------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("scale_bench")
    out = io.StringIO()
    with redirect_stdout(out):
        bench.main(["--small", "--particles", "12", "--workdir", str(work), "--refine-iterations", "3"])
    return work, out.getvalue()


@pytest.mark.parametrize("tag, ini_high", [("bin6", "60"), ("bin2", "20")])
def test_refinements_run_the_tutorial_presets(tag, ini_high):
    """The benchmark's refinements are the ones the tutorial's presets launch, with its own
    mask, 2 threads, and a first cross-correlation iteration (see ``refine_argv``)."""
    argv = bench.refine_argv(Path("Extract/optimisation_set.star"), Path("Reconstruct/merged.mrc"),
                             Path("Refine"), tag=tag, diameter=321.0, iterations=7)

    def value(flag: str) -> str:
        return argv[argv.index(flag) + 1]

    assert "--firstiter_cc" in argv
    assert (value("--ini_high"), value("--sym"), value("--sigma_tilt"), value("--pool")) == (ini_high, "C6", "10", "30")
    assert (value("--healpix_order"), value("--auto_local_healpix_order")) == ("2", "4")
    assert (value("--particle_diameter"), value("--j"), value("--auto_iter_max")) == ("321", "2", "7")
    assert (value("--ios"), value("--ref"), value("--o")) == ("Extract/optimisation_set.star",
                                                              "Reconstruct/merged.mrc", "Refine/run")


def test_small_form_reports_every_step_with_positive_figures(small_run):
    _work, text = small_run
    table = {}
    for line in text.splitlines():
        m = re.match(r"(\w+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", line.strip())
        if m:
            table[m.group(1)] = tuple(float(g) for g in m.groups()[1:])
    assert sorted(table) == sorted(bench.STEPS)
    for step, (particles, seconds, per_particle, rss) in table.items():
        assert particles == 12, step
        assert seconds > 0 and per_particle > 0, step
        # printed to 0.01 s and 0.00001 s/particle: their rounding errors
        assert per_particle == pytest.approx(seconds / particles, abs=0.005 / particles + 5e-6), step
        assert 50 < rss < 8000, step  # MB: a Python process with numpy, well below the machine
    assert "projection for the tutorial (30,596 particles)" in text
    assert "--particles 1000 3000 10000" in text  # the full run's command
    for tag in ("bin6", "bin2"):
        assert re.search(rf"refine_{tag}, 12 particles, [23] iterations", text), tag
        assert re.search(rf"{tag}: refinement ~[\d.]+ h from its [23] measured iterations", text), tag


def test_small_form_bin2_chain_starts_from_the_bin6_refinement(small_run):
    work, _text = small_run
    run = work / "run_small_12"
    refined = ParticleSet.read(bench.refined_particles(run / "Refine_bin6"))
    extracted = ParticleSet.read(run / "Extract_bin2" / "particles.star")
    initial = ParticleSet.read(run / "particles_halves.star")
    for column in ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"):
        np.testing.assert_allclose(np.asarray(extracted.particles[column], float),
                                   np.asarray(refined.particles[column], float), atol=1e-4)
    # the refinement moved them: the bin-2 chain did not take the initial poses
    moved = np.abs(np.asarray(refined.particles["rlnAngleRot"], float)
                   - np.asarray(initial.particles["rlnAngleRot"], float))
    assert moved.max() > 0.1


def test_steps_left_out_need_their_outputs(small_run, tmp_path):
    work, _text = small_run
    with pytest.raises(SystemExit, match="step extract_bin6 is not in --steps.*run it first"):
        bench.run_chain(work / "tutorial_small_12", tmp_path, 12, bench.SMALL, steps=("refine_bin6",))
    assert not (tmp_path / "Refine_bin6").exists()
    # the steps after the last one asked for need nothing
    first = tmp_path / "first_only"
    first.mkdir()
    results = bench.run_chain(work / "tutorial_small_12", first, 12, bench.SMALL, steps=("extract_bin6",))
    assert [r.step for r in results] == ["extract_bin6"]
    assert (first / "Extract_bin6" / "optimisation_set.star").exists()


def test_small_form_dataset_has_the_tutorial_acquisition(small_run):
    work, _text = small_run
    data = work / "tutorial_small_12"
    summary = json.loads((data / "simulation.json").read_text())
    assert summary["n_particles"] == 12 and summary["phantom"]["symmetry"] == "C6"
    tomograms = read_star(data / "tomograms.star")["global"]
    assert float(tomograms["rlnTomoTiltSeriesPixelSize"][0]) == 2.7
    tilts = read_star(data / tomograms["rlnTomoTiltSeriesStarFile"][0])
    table = next(iter(tilts.values()))
    angles = np.sort(np.asarray(table["rlnTomoNominalStageTiltAngle"], dtype=float))
    np.testing.assert_allclose(angles, np.arange(-60.0, 60.1, 3.0), atol=1e-6)
    dose = np.sort(np.asarray(table["rlnMicrographPreExposure"], dtype=float))
    np.testing.assert_allclose(dose, 3.0 * np.arange(41), atol=1e-6)  # 3 e/Å² per tilt
    # both extractions wrote one 2D stack per particle at the tutorial's pixel sizes
    for tag, pixel in (("bin6", 8.1), ("bin2", 2.7)):
        particles = ParticleSet.read(work / "run_small_12" / f"Extract_{tag}" / "particles.star")
        assert len(particles) == 12
        assert float(particles.optics["rlnImagePixelSize"][0]) == pytest.approx(pixel)


# ---- "Pre-read all particles into RAM?": the estimate and the refusal -----------------------


@pytest.mark.parametrize("zero_mask", [True, False])
def test_preread_estimate_is_what_the_cache_holds(small_run, zero_mask):
    """The estimate equals the bytes of the arrays the pre-read cache keeps (exactly)."""
    from processing.io import TomogramSet
    from processing.refine.particles import ParticleStore

    work, _text = small_run
    particles = ParticleSet.read(work / "run_small_12" / "Extract_bin6" / "particles.star")
    tomograms = TomogramSet.read(work / "tutorial_small_12" / "tomograms.star")
    store = ParticleStore(particles, tomograms, box=32, pixel_size=8.1, mask_radius=100.0, zero_mask=zero_mask,
                          preread=True)
    chosen = [0, 3, 7]
    for i in chosen:
        store.load(i)
    held = sum(item.images.nbytes + item.masked.nbytes + item.ctf2.nbytes for item in store._cache.values())
    held += sum(raw.nbytes for raw in store._raw.values())
    assert len(store._cache) == len(chosen) and held > 0
    assert store.preread_bytes(chosen) == held
    assert store.preread_bytes(range(len(store))) > held


def test_preread_refused_when_it_does_not_fit():
    from processing.refine.particles import available_memory_bytes, check_preread_fits

    check_preread_fits(10**9, 100, available=10**9)          # fits exactly: no error
    with pytest.raises(InputError, match=r"Pre-read all particles into RAM\? needs about 2\.5 GB .* 100 "
                                         r"particles.*only 1\.0 GB is available") as err:
        check_preread_fits(int(2.5e9), 100, available=10**9)
    assert "--preread_images" in str(err.value)
    assert (available_memory_bytes() or 1) > 0
