"""The demo pipeline's steps (``tomodash demo``, ``make demo``): Import -> Extract (bin 3) ->
Reconstruct -> 3D auto-refine -> Extract (bin 2) -> Reconstruct -> 3D auto-refine from the bin-2
half1.mrc -> remove duplicates -> 3D classification (2 classes) -> the largest class -> mask ->
post-processing.

What is checked here is how each step hands over to the next (the tutorial's choices), without
running the jobs: each job is run, from these same inputs, by its own tests, and the last three
from a converged refinement in the browser walk (tests/ui). A whole ``tomodash demo --preset
test`` run takes about a minute; it was run by hand for this test's closing note, and the demo
dataset's figures are in README.
"""
from __future__ import annotations

import numpy as np
import pytest

from processing.io.mrc import write_mrc
from processing.jobs.relion_params import parse_other_args
from processing.maskcreate import relion_lowpass
from sessions import Session
from sessions.demo import (DEMO_DUPLICATE_FRACTION, DEMO_MASK_THRESHOLD_FRACTION, DEMO_STEPS, TEST_OVERRIDES,
                           hand_over, step_inputs)
from sessions.jobtypes import get_job_type
from sessions.presets import find_preset

from class3d_fake import write_fake_class3d


def test_each_step_takes_the_outputs_the_tutorial_takes(tmp_path):
    session = Session.create(tmp_path / "demo")
    inputs = {"optimisation": "Import/job001/optimisation_set.star"}
    chosen = {}
    refined_map = fake = classes = None
    for number, (job_type, preset_name, alias) in enumerate(DEMO_STEPS, start=2):
        # every step's preset exists and fits its job type, with the test dataset's overrides
        params = find_preset(preset_name, job_type, session).params()
        assert isinstance(params, get_job_type(job_type).params_class)
        params.param.update(**TEST_OVERRIDES.get(alias, {}))
        parse_other_args(type(params), params.other_args)
        if job_type == "maskcreate":       # the mask step reads the refined map for its threshold
            refined_map = np.zeros((32, 32, 32), np.float32)
            refined_map[12:20, 12:20, 12:20] = 2.0
            (session.root / inputs["refined_map"]).parent.mkdir(parents=True)
            write_mrc(session.root / inputs["refined_map"], refined_map, 6.0)
        if job_type == "class3d":
            classes = params
        if alias == "largest_class":      # the class selection reads the classification's last model
            fake = write_fake_class3d(session.root, inputs["classification"], n_classes=2,
                                      n_iterations=classes.nr_iter)
        chosen[alias] = step_inputs(session, job_type, inputs, TEST_OVERRIDES.get(alias, {}) | {"lowpass_filter": 20})
        name = f"{get_job_type(job_type).params_class.process_dir}/job{number:03d}/"
        hand_over(inputs, job_type, name)

    assert chosen["bin3"] == {"in_optimisation": "Import/job001/optimisation_set.star"}
    assert chosen["bin3_refine"] == {"in_optimisation": "Extract/job002/optimisation_set.star",
                                     "fn_ref": "Reconstruct/job003/merged.mrc"}
    assert chosen["bin2"] == {"in_optimisation": "Refine3D/job004/run_optimisation_set.star"}
    # the bin-2 refinement starts from the bin-2 reconstruction's half1.mrc, as the tutorial's
    # does ("Reference map: Reconstruct/job025/half1.mrc"), on the bin-2 particles
    assert chosen["bin2_refine"] == {"in_optimisation": "Extract/job005/optimisation_set.star",
                                     "fn_ref": "Reconstruct/job006/half1.mrc"}
    assert chosen["no_duplicates"] == {"in_optimisation": "Refine3D/job007/run_optimisation_set.star"}
    # the particles without duplicates are classified from the bin-2 refined map, into 2 classes
    assert chosen["classes"] == {"in_optimisation": "Select/job008/optimisation_set.star",
                                 "fn_ref": "Refine3D/job007/run_class001.mrc"}
    assert (classes.nr_classes, classes.ref_correct_greyscale) == (2, True)
    # and the largest class of its last iteration kept
    last = fake.iterations[-1]
    assert chosen["largest_class"] == {"fn_model": f"Class3D/job009/run_it{last:03d}_optimiser.star",
                                       "select_classes": str(int(np.argmax(fake.distribution[last])) + 1)}
    threshold = DEMO_MASK_THRESHOLD_FRACTION * relion_lowpass(refined_map, resolution=20, pixel_size=6.0).max()
    assert chosen["mask"]["fn_in"] == "Refine3D/job007/run_class001.mrc"
    assert chosen["mask"]["inimask_threshold"] == pytest.approx(threshold, abs=1e-6)
    assert chosen["postprocess"] == {"fn_in": "Refine3D/job007/run_half1_class001_unfil.mrc",
                                     "fn_mask": "MaskCreate/job011/mask.mrc"}
    assert 0 < DEMO_DUPLICATE_FRACTION < 1
