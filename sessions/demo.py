"""The whole demo pipeline through a session, as a user would run it from the dashboard:

simulate (with planted duplicate picks) + import -> Extract subtomos (bin 3) -> Reconstruct
particle -> 3D auto-refine (``mpiexec -n 3``) -> re-extract at bin 2 with the refined poses ->
Reconstruct particle -> 3D auto-refine at bin 2 from that reconstruction's half1.mrc (as the
tutorial's does) -> Subset selection: remove duplicates -> 3D classification of the remaining
particles into two classes from the refined map -> Subset selection of the largest class -> Mask
creation from the refined map -> Post-processing of the refined half maps with that mask.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import starfile

from processing.postprocess import unmasked_fallback

from .importer import create_demo_session
from .pipeline import RUNNING, SUCCEEDED
from .presets import apply_preset, find_preset
from .project import Session

__all__ = ["run_demo_pipeline", "refine_summary", "postprocess_summary", "classification_summary", "largest_class",
           "hand_over", "step_inputs", "DEMO_STEPS"]

#: (job type, preset, alias, extra parameter values) of each step; inputs are filled in as the
#: jobs are created.
DEMO_STEPS = (
    ("extract", "demo-extract", "bin3"),
    ("reconstruct", "demo-reconstruct", "bin3_reference"),
    ("refine3d", "demo-refine3d", "bin3_refine"),
    ("extract", "demo-bin2-extract", "bin2"),
    ("reconstruct", "demo-bin2-reconstruct", "bin2_map"),
    ("refine3d", "demo-bin2-refine3d", "bin2_refine"),
    ("select", "demo-remove-duplicates", "no_duplicates"),
    ("class3d", "demo-class3d", "classes"),
    ("select", "demo-select-class", "largest_class"),
    ("maskcreate", "demo-maskcreate", "mask"),
    ("postprocess", "demo-postprocess", "postprocess"),
)

#: Fraction of the simulated particles picked twice (a few Å apart), for the duplicate removal.
DEMO_DUPLICATE_FRACTION = 0.1

#: Fraction of the lattice sites picked with no complex there (empty membrane), for the 3D
#: classification to separate.
DEMO_DECOY_FRACTION = 0.2

#: The mask's initial binarisation threshold, as a fraction of the low-passed map's maximum (a
#: user picks it by eye in a viewer; the demo's maps are clean enough for a fixed fraction).
DEMO_MASK_THRESHOLD_FRACTION = 0.3


#: Parameter changes for the tiny "test" dataset (6 Å tilt series, 150 Å particles).
TEST_OVERRIDES = {
    "bin3": {"binning": 2, "box_size": 32, "crop_size": 24, "max_dose": -1},
    "bin3_reference": {"binning": 2, "box_size": 32, "crop_size": 24},
    "bin3_refine": {"particle_diameter": 200, "nr_mpi": 3},
    "bin2": {"binning": 1, "box_size": 64, "crop_size": 48, "max_dose": -1},
    "bin2_map": {"binning": 1, "box_size": 64, "crop_size": 48},
    "bin2_refine": {"particle_diameter": 200, "nr_mpi": 3, "sampling": "7.5 degrees", "ini_high": 40},
    "classes": {"particle_diameter": 200, "ini_high": 40, "nr_iter": 3},
    "mask": {"lowpass_filter": 30},
}


def _wait(session: Session, name: str, log: Callable[[str], None], poll: float = 2.0) -> str:
    from . import runner

    last = ""
    while True:
        status = runner.reconcile(session, name)
        try:
            import json

            progress = json.loads((session.root / name / "progress.json").read_text())
            # one line per iteration and phase, not one per batch of particles
            text = f"iteration {progress.get('iteration')} {progress.get('phase')}"
        except (OSError, ValueError):
            text = ""
        if text and text != last:
            log(f"  {name}: {status} {text}")
            last = text
        if status != RUNNING:
            return status
        time.sleep(poll)


def run_demo_pipeline(root: str | os.PathLike, *, log: Callable[[str], None] = print,
                      preset: str = "demo") -> Session:
    """Create a demo session at ``root`` and run every step, waiting for each job."""
    from . import runner
    from .jobtypes import get_job_type

    session = create_demo_session(root, preset=preset, log=lambda m: log(f"  {m}"),
                                  duplicate_fraction=DEMO_DUPLICATE_FRACTION, decoy_fraction=DEMO_DECOY_FRACTION)
    log(f"Session {session.root}")
    import_job = session.jobs()[0].name
    inputs = {"optimisation": f"{import_job}optimisation_set.star"}
    for job_type, preset_name, alias in DEMO_STEPS:
        jt = get_job_type(job_type)
        import warnings

        with warnings.catch_warnings():
            if preset != "demo":
                warnings.simplefilter("ignore")  # the demo presets are made for the demo dataset
            params, _ = apply_preset(find_preset(preset_name, jt.name, session), session, jt.params_class())
        values = dict(TEST_OVERRIDES.get(alias, {})) if preset == "test" else {}
        values.update(step_inputs(session, job_type, inputs, values))
        params.param.update(**values)
        info = runner.run_job(session, jt, params, alias=alias)
        log(f"{info.name} ({alias}) started")
        status = _wait(session, info.name, log)
        if status != SUCCEEDED:
            reason = runner.failure_reason(info.path)
            raise RuntimeError(f"{info.name} ended {status}: {reason}")
        job_dir = session.root / info.name
        hand_over(inputs, job_type, info.name)
        if job_type == "reconstruct":
            _report_reconstruction(job_dir, log)
        elif job_type == "refine3d":
            log(f"{info.name}: {refine_summary(job_dir / 'run_model.star')}; map {job_dir / 'run_class001.mrc'}")
        elif job_type == "class3d":
            log(f"{info.name}: {classification_summary(job_dir)}")
        elif job_type == "select":
            log(f"{info.name}: {_selection_summary(job_dir)}{_decoys_left(session, job_dir)}")
        elif job_type == "maskcreate":
            log(f"{info.name}: mask {job_dir / 'mask.mrc'}")
        elif job_type == "postprocess":
            log(f"{info.name}: {postprocess_summary(job_dir / 'postprocess.star')}; "
                f"map {job_dir / 'postprocess.mrc'}")
    return session


def hand_over(inputs: dict, job_type: str, job: str) -> None:
    """Record in ``inputs`` what the finished step ``job`` (``Dir/jobNNN/``) gives the next ones."""
    if job_type in ("extract", "select"):
        inputs["optimisation"] = f"{job}optimisation_set.star"
        inputs.pop("classification", None)       # its classes were selected
    elif job_type == "class3d":
        inputs["classification"] = job
    elif job_type == "reconstruct":
        inputs["reference"] = f"{job}merged.mrc"
        inputs["half1"] = f"{job}half1.mrc"
    elif job_type == "refine3d":
        inputs["optimisation"] = f"{job}run_optimisation_set.star"
        inputs["refined_map"] = f"{job}run_class001.mrc"
        inputs["refined_half1"] = f"{job}run_half1_class001_unfil.mrc"
        inputs["refines"] = inputs.get("refines", 0) + 1
    elif job_type == "maskcreate":
        inputs["mask"] = f"{job}mask.mrc"


def step_inputs(session: Session, job_type: str, inputs: dict, values: dict) -> dict:
    """The input fields of the next step, from the outputs of the steps before it
    (:func:`hand_over`); ``values`` are the step's other values (the mask's low-pass)."""
    if job_type == "select" and inputs.get("classification"):
        # the classes after the classification: its largest class, of the last iteration
        iteration, best = largest_class(session.root / inputs["classification"])
        return {"fn_model": f"{inputs['classification']}run_it{iteration:03d}_optimiser.star",
                "select_classes": str(best)}
    if job_type in ("extract", "reconstruct", "select"):
        return {"in_optimisation": inputs["optimisation"]}
    if job_type == "class3d":
        # the particles left after the duplicate removal, classified from the bin-2 refined map
        return {"in_optimisation": inputs["optimisation"], "fn_ref": inputs["refined_map"]}
    if job_type == "refine3d":
        # the first refinement starts from the bin-3 map; the bin-2 one from the bin-2 half1.mrc
        return {"in_optimisation": inputs["optimisation"],
                "fn_ref": inputs["half1"] if inputs.get("refines") else inputs["reference"]}
    if job_type == "maskcreate":
        from processing.io.mrc import read_mrc
        from processing.maskcreate import relion_lowpass

        data = read_mrc(session.root / inputs["refined_map"])
        resolution = float(values.get("lowpass_filter") or find_preset("demo-maskcreate", "maskcreate",
                                                                         session).options["lowpass_filter"])
        smooth = relion_lowpass(data.data, resolution=resolution, pixel_size=data.pixel_size)
        return {"fn_in": inputs["refined_map"],
                "inimask_threshold": round(DEMO_MASK_THRESHOLD_FRACTION * float(smooth.max()), 6)}
    if job_type == "postprocess":
        return {"fn_in": inputs["refined_half1"], "fn_mask": inputs["mask"]}
    return {}


def _last_class_model(job_dir: Path) -> tuple[int, dict]:
    models = sorted(Path(job_dir).glob("run_it[0-9][0-9][0-9]_model.star"))
    if not models:
        raise FileNotFoundError(f"no run_itNNN_model.star in {job_dir}")
    return int(models[-1].name[6:9]), starfile.read(models[-1], always_dict=True)


def largest_class(job_dir: Path) -> tuple[int, int]:
    """(last iteration, its most populated class) of a 3D classification; of classes equally
    populated the one with the best estimated resolution."""
    iteration, blocks = _last_class_model(job_dir)
    classes = blocks["model_classes"]
    order = sorted(range(len(classes)), key=lambda k: (-float(classes["rlnClassDistribution"].iloc[k]),
                                                       float(classes["rlnEstimatedResolution"].iloc[k])))
    return iteration, order[0] + 1


def classification_summary(job_dir: Path) -> str:
    """The classes of a 3D classification's last iteration: occupancy and resolution of each."""
    iteration, blocks = _last_class_model(job_dir)
    classes = blocks["model_classes"]
    each = ", ".join(f"class {k + 1} {100 * float(d):.0f}% ({float(r):.1f} Å)" for k, (d, r) in
                     enumerate(zip(classes["rlnClassDistribution"], classes["rlnEstimatedResolution"])))
    return f"{len(classes)} classes after {iteration} iterations: {each}"


def _decoys_left(session: Session, job_dir: Path) -> str:
    """How many of the simulation's planted decoys (empty-membrane picks) a selection kept."""
    from processing.simulate import planted_decoys

    decoys = planted_decoys(session.root / "Dataset")
    if not decoys or not (job_dir / "particles.star").exists():
        return ""
    names = starfile.read(job_dir / "particles.star", always_dict=True)["particles"]["rlnTomoParticleName"]
    return f"; planted decoys kept: {int(names.isin(decoys).sum())} of {len(decoys)}"


def _selection_summary(job_dir: Path) -> str:
    import json

    counts = json.loads((job_dir / "selection.json").read_text())
    return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items() if isinstance(v, (int, float)))


def postprocess_summary(postprocess_star: Path) -> str:
    """The post-processed (masked, phase-randomisation corrected) resolution and the B-factor,
    and whether the pixel size limits it (the corrected FSC still above 0.143 at Nyquist)."""
    blocks = starfile.read(postprocess_star)
    resolution = float(blocks["general"]["rlnFinalResolution"])
    bfactor = float(blocks["general"]["rlnBfactorUsedForSharpening"])
    fsc = blocks["fsc"]
    curve = ("unmasked FSC 0.143: the mask cut the corrected curve short" if unmasked_fallback(fsc)
             else "corrected FSC 0.143")
    text = f"post-processed resolution {resolution:.2f} Å ({curve}), B-factor {bfactor:.1f} Å²"
    nyquist = float(fsc["rlnAngstromResolution"].min())
    if abs(resolution - nyquist) < 1e-3:
        text += f"; limited by the pixel size (Nyquist {nyquist:.2f} Å): re-extract at a smaller binning for more"
    return text


def refine_summary(model_star: Path) -> str:
    """The converged resolution, or that the pixel size limits it (the FSC never fell below
    0.143 before Nyquist: a finer binning would give more)."""
    blocks = starfile.read(model_star)
    general = blocks["model_general"]
    resolution = float(general["rlnCurrentResolution"])
    fsc = blocks["model_class_1"]["rlnGoldStandardFsc"].to_numpy(float)
    last = int(general["rlnOriginalImageSize"]) // 2 - 1
    if fsc.size > last >= 1 and (fsc[1:last + 1] >= 0.143).all():
        nyquist = 2 * float(general["rlnPixelSize"])
        return (f"3D auto-refine converged at {resolution:.2f} Å, limited by the pixel size (Nyquist "
                f"{nyquist:.2f} Å, FSC {fsc[last]:.2f} there): re-extract at a smaller binning for more")
    return f"3D auto-refine converged at {resolution:.2f} Å (gold-standard FSC 0.143)"


def _report_reconstruction(job_dir: Path, log: Callable[[str], None]) -> None:
    maps = ", ".join(str(job_dir / m) for m in ("half1.mrc", "half2.mrc", "merged.mrc") if (job_dir / m).exists())
    fsc_file = job_dir / "fsc.star"
    if fsc_file.exists():
        table = starfile.read(fsc_file)
        table = table["fsc"] if isinstance(table, dict) else table
        below = table[table["rlnFourierShellCorrelationUnmaskedMaps"] < 0.143]
        shell = int(below["rlnSpectralIndex"].iloc[0]) - 1 if len(below) else int(table["rlnSpectralIndex"].iloc[-1])
        res = float(table["rlnAngstromResolution"].iloc[max(shell, 1)])
        log(f"{job_dir.name}: half-map resolution {res:.2f} Å (FSC 0.143); maps {maps}")
    else:
        log(f"{job_dir.name}: maps {maps}")
