"""Optimisation sets (processing.io.optimisation_set)."""
from __future__ import annotations

import pytest

from processing.errors import InputError
from processing.io import OptimisationSet, read_star


def test_round_trip_and_layout(tmp_path):
    path = tmp_path / "optimisation_set.star"
    s = OptimisationSet(particles="Extract/job002/particles.star", tomograms="Tomograms/job001/tomograms.star",
                        trajectories="")
    s.write(path)
    block = read_star(path)["optimisation_set"]
    assert block == {"rlnTomoParticlesFile": "Extract/job002/particles.star",
                     "rlnTomoTomogramsFile": "Tomograms/job001/tomograms.star",
                     "rlnTomoTrajectoriesFile": ""}
    again = OptimisationSet.read(path)
    assert again.particles == s.particles and again.tomograms == s.tomograms
    assert again.trajectories == "" and again.manifolds is None and again.reference_map1 is None


def test_postprocess_entries_and_extra_labels(tmp_path):
    path = tmp_path / "pp.star"
    s = OptimisationSet(particles="p.star", tomograms="t.star", reference_map1="h1.mrc", reference_map2="h2.mrc",
                        reference_mask="mask.mrc", reference_fsc="PostProcess/job009/postprocess.star",
                        extra={"rlnSomethingNew": "x"})
    s.write(path)
    again = OptimisationSet.read(path)
    assert again.reference_fsc == "PostProcess/job009/postprocess.star"
    assert again.reference_mask == "mask.mrc" and again.extra == {"rlnSomethingNew": "x"}


def test_overrides():
    s = OptimisationSet(particles="a.star", tomograms="t.star", trajectories="m.star")
    o = s.with_overrides(p="b.star", t=None, mot="", ref1="r1.mrc")
    assert (o.particles, o.tomograms, o.trajectories, o.reference_map1) == ("b.star", "t.star", "m.star", "r1.mrc")
    # relion_refine --ios spellings
    o = s.with_overrides(i="c.star", tomograms="u.star", trajectories="n.star")
    assert (o.particles, o.tomograms, o.trajectories) == ("c.star", "u.star", "n.star")
    assert s.particles == "a.star"  # the original is unchanged
    with pytest.raises(TypeError):
        s.with_overrides(bogus="x")


def test_require_and_bad_files(tmp_path):
    s = OptimisationSet(particles="a.star", trajectories="")
    assert s.require("particles") == "a.star"
    with pytest.raises(InputError, match="rlnTomoTomogramsFile"):
        s.require("tomograms")
    with pytest.raises(InputError, match="rlnTomoTrajectoriesFile"):
        s.require("trajectories")
    with pytest.raises(InputError, match="missing.star.*not found"):
        OptimisationSet.read(tmp_path / "missing.star")
    (tmp_path / "other.star").write_text("data_x\n\n_rlnFoo 1\n")
    with pytest.raises(InputError, match="other.star.*no optimisation-set labels"):
        OptimisationSet.read(tmp_path / "other.star")
