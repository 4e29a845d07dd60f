"""The RELION 5 3D-classification fixture (tests/data/class3d_relion, see its ORIGIN.md) is whole:
its STAR files parse, every iteration's model has K classes whose distribution sums to 1, and
every particle of every data.star after iteration 0 is in one of them (RELION writes class 0,
"none yet", into run_it000_data.star)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import starfile

DATA = Path(__file__).parent / "data" / "class3d_relion"
ITERATIONS = sorted(int(m.group(1)) for p in DATA.glob("run_it*_model.star")
                    if (m := re.match(r"run_it(\d{3})_model\.star$", p.name)))
K = 2


def test_every_iteration_is_kept():
    assert ITERATIONS == list(range(len(ITERATIONS))) and len(ITERATIONS) >= 2
    for it in ITERATIONS:
        for kind in ("model", "optimiser", "sampling", "data"):
            assert (DATA / f"run_it{it:03d}_{kind}.star").is_file()
    listed = {line.split("\t")[0] for line in (DATA / "files.txt").read_text().splitlines()}
    assert {f"run_it{it:03d}_{kind}.star" for it in ITERATIONS for kind in ("model", "data")} <= listed


@pytest.mark.parametrize("it", ITERATIONS)
def test_model_has_k_classes_summing_to_one(it):
    model = starfile.read(DATA / f"run_it{it:03d}_model.star", always_dict=True)
    classes = model["model_classes"]
    assert len(classes) == K
    assert abs(classes["rlnClassDistribution"].sum() - 1.0) < 1e-4
    assert {f"model_class_{k}" for k in range(1, K + 1)} <= set(model)
    starfile.read(DATA / f"run_it{it:03d}_optimiser.star", always_dict=True)
    starfile.read(DATA / f"run_it{it:03d}_sampling.star", always_dict=True)


@pytest.mark.parametrize("it", ITERATIONS)
def test_every_particle_has_a_class(it):
    particles = starfile.read(DATA / f"run_it{it:03d}_data.star", always_dict=True)["particles"]
    classes = particles["rlnClassNumber"].to_numpy()
    assert len(particles) > 0
    if it == 0:
        assert np.all(classes == 0)
    else:
        assert np.all((classes >= 1) & (classes <= K))
    decoys = set((DATA / "decoys.txt").read_text().split())
    assert decoys and decoys <= set(particles["rlnTomoParticleName"])
