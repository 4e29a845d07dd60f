"""The whole demo pipeline (``tomodash demo``, ``make demo``) on the simulator's tiny ``test``
dataset: Import -> Extract (bin 3) -> Reconstruct -> 3D auto-refine -> Extract (bin 2) ->
Reconstruct -> 3D auto-refine from the bin-2 half1.mrc -> remove duplicates -> mask ->
post-processing, each job through the session's runner, as the dashboard launches them.

What it checks is how the steps hand over to each other (the tutorial's choices) and that each
step's result is what it printed; the numerics of each job are checked against RELION in its
own test module (test_refine_relion, test_select, test_maskcreate, test_postprocess).
"""
from __future__ import annotations

import starfile

from processing.simulate import planted_duplicates
from sessions import Session
from sessions.demo import DEMO_STEPS, postprocess_summary, refine_summary, run_demo_pipeline


def test_the_demo_pipeline_runs_to_post_processing(tmp_path):
    lines: list[str] = []
    run_demo_pipeline(tmp_path / "demo", preset="test", log=lines.append)
    session = Session(tmp_path / "demo")
    jobs = session.jobs()
    assert [j.status for j in jobs] == ["Succeeded"] * (1 + len(DEMO_STEPS))
    names = {alias: job.name for (_, _, alias), job in zip(DEMO_STEPS, jobs[1:])}
    assert [j.type_label for j in jobs[1:]] == [
        "relion.pseudosubtomo", "relion.reconstructparticletomo", "relion.refine3d.tomo", "relion.pseudosubtomo",
        "relion.reconstructparticletomo", "relion.refine3d.tomo", "relion.select.removeduplicates",
        "relion.maskcreate", "relion.postprocess"]

    # the bin-2 refinement starts from the bin-2 reconstruction's half1.mrc, as the tutorial's
    # does, on the bin-2 particles; the first one from the bin-3 merged map
    bin2 = session.read_params(names["bin2_refine"])
    assert bin2.fn_ref == f"{names['bin2_map']}half1.mrc"
    assert bin2.in_optimisation == f"{names['bin2']}optimisation_set.star"
    assert session.read_params(names["bin3_refine"]).fn_ref == f"{names['bin3_reference']}merged.mrc"

    # duplicate removal on the refined particles: of each planted pair exactly one pick stays,
    # and every particle picked once stays
    selection = session.read_params(names["no_duplicates"])
    assert selection.in_optimisation == f"{names['bin2_refine']}run_optimisation_set.star"
    planted = planted_duplicates(session.root / "Dataset")
    assert planted
    before = starfile.read(session.root / names["bin2_refine"] / "run_data.star")["particles"]
    kept = starfile.read(session.root / names["no_duplicates"] / "particles.star")["particles"]
    particle_of = {n: planted.get(n, n) for n in before["rlnTomoParticleName"]}
    survivors = [particle_of[n] for n in kept["rlnTomoParticleName"]]
    assert sorted(survivors) == sorted(set(particle_of.values()))
    assert len(before) - len(kept) == len(planted)

    # the mask is made from the refined map; post-processing takes the refined half maps and it
    mask = session.read_params(names["mask"])
    assert mask.fn_in == f"{names['bin2_refine']}run_class001.mrc"
    post = session.read_params(names["postprocess"])
    assert post.fn_in == f"{names['bin2_refine']}run_half1_class001_unfil.mrc"
    assert post.fn_mask == f"{names['mask']}mask.mrc"
    general = starfile.read(session.root / names["postprocess"] / "postprocess.star")["general"]
    assert general["rlnMaskName"] == post.fn_mask

    # what it printed is what the files say
    text = "\n".join(lines)
    assert refine_summary(session.root / names["bin2_refine"] / "run_model.star") in text
    summary = postprocess_summary(session.root / names["postprocess"] / "postprocess.star")
    assert f"{general['rlnFinalResolution']:.2f} Å" in summary and summary in lines[-1]
