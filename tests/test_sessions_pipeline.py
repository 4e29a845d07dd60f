"""default_pipeline.star and job.star: RELION 5's format, round trips (project spec 2-5, 7)."""
from __future__ import annotations

import re

import pytest

from processing.errors import InputError
from processing.io.jobstar import JobStar
from processing.jobs.extract_params import ExtractParameters
from processing.jobs.reconstruct_params import ReconstructParameters
from sessions.aliases import clean_alias
from sessions.nodes import node_entry_paths
from sessions.pipeline import Node, Pipeline, Process, job_dir_name, parse_job_number

# The example of spec 13.4 (a hand-written 2-job project RELION and ccpem both read), as
# RELION 5 itself writes it (padding as relion_pipeliner --check_job_completion rewrote it).
RELION_TEXT = """
# version 50001

data_pipeline_general

_rlnPipeLineJobCounter                       3
 

# version 50001

data_pipeline_processes

loop_ 
_rlnPipeLineProcessName #1 
_rlnPipeLineProcessAlias #2 
_rlnPipeLineProcessTypeLabel #3 
_rlnPipeLineProcessStatusLabel #4 
Extract/job001/       None relion.pseudosubtomo  Succeeded 
Reconstruct/job002/ Reconstruct/myrec/ relion.reconstructparticletomo  Scheduled 
 

# version 50001

data_pipeline_nodes

loop_ 
_rlnPipeLineNodeName #1 
_rlnPipeLineNodeTypeLabel #2 
_rlnPipeLineNodeTypeLabelDepth #3 
Tomograms/job000/tomograms.star TomogramGroupMetadata.star.relion            1 
Picks/job000/particles.star ParticleGroupMetadata.star.relion            1 
Extract/job001/optimisation_set.star TomoOptimisationSet.star.relion.tomo.extract            1 
Extract/job001/particles.star ParticleGroupMetadata.star.relion.tomo.extract            1 
Reconstruct/job002/merged.mrc DensityMap.mrc.relion.tomo.map.reconstruct            1 
Reconstruct/job002/half1.mrc DensityMap.mrc.relion.tomo.halfmap.reconstruct           99 
Reconstruct/job002/optimisation_set.star TomoOptimisationSet.star.relion.tomo.reconstruct            1 
 

# version 50001

data_pipeline_input_edges

loop_ 
_rlnPipeLineEdgeFromNode #1 
_rlnPipeLineEdgeProcess #2 
Tomograms/job000/tomograms.star Extract/job001/ 
Picks/job000/particles.star Extract/job001/ 
Extract/job001/optimisation_set.star Reconstruct/job002/ 
 

# version 50001

data_pipeline_output_edges

loop_ 
_rlnPipeLineEdgeProcess #1 
_rlnPipeLineEdgeToNode #2 
Extract/job001/ Extract/job001/optimisation_set.star 
Extract/job001/ Extract/job001/particles.star 
Reconstruct/job002/ Reconstruct/job002/merged.mrc 
Reconstruct/job002/ Reconstruct/job002/half1.mrc 
Reconstruct/job002/ Reconstruct/job002/optimisation_set.star 
 
"""


def test_pipeline_reads_relion_file_and_writes_it_back_identically(tmp_path):
    path = tmp_path / "default_pipeline.star"
    path.write_text(RELION_TEXT)
    pipe = Pipeline.read(path)
    assert pipe.job_counter == 3
    assert [p.name for p in pipe.processes] == ["Extract/job001/", "Reconstruct/job002/"]
    assert pipe.processes[1].alias == "Reconstruct/myrec/" and pipe.processes[0].alias is None
    assert [p.status for p in pipe.processes] == ["Succeeded", "Scheduled"]
    assert pipe.node("Reconstruct/job002/half1.mrc").depth == 99
    assert pipe.inputs_of("Reconstruct/job002/") == ["Extract/job001/optimisation_set.star"]
    assert pipe.producer_of("Extract/job001/particles.star") == "Extract/job001/"
    assert pipe.to_string() == RELION_TEXT.lstrip(" ")
    out = tmp_path / "again.star"
    pipe.write(out)
    assert Pipeline.read(out) == pipe


def test_new_pipeline_has_only_general_table():
    text = Pipeline().to_string()
    assert "data_pipeline_general" in text and "_rlnPipeLineJobCounter" in text
    assert "data_pipeline_processes" not in text and "data_pipeline_nodes" not in text
    assert re.search(r"_rlnPipeLineJobCounter\s+1\n", text)


def test_every_table_has_version_comment_and_status_label_is_last():
    pipe = Pipeline(job_counter=2, processes=[Process("Import/job001/", "relion.importtomo", "Running")],
                    nodes=[Node("Import/job001/tomograms.star", "TomogramGroupMetadata.star.relion.tomo.import")],
                    output_edges=[("Import/job001/", "Import/job001/tomograms.star")])
    text = pipe.to_string()
    blocks = text.count("data_pipeline_")
    assert text.count("# version 50001") == blocks == 4
    for block in re.split(r"\n(?=\n# version)", text):
        assert "# version 50001\n\ndata_" in block
    columns = re.findall(r"_(rlnPipeLineProcess\w+) #\d", text)
    assert columns[-1] == "rlnPipeLineProcessStatusLabel"
    assert "Import/job001/       None relion.importtomo    Running \n" in text


def test_legacy_integer_status_and_missing_depth(tmp_path):
    path = tmp_path / "p.star"
    path.write_text("data_pipeline_general\n_rlnPipeLineJobCounter 2\n\ndata_pipeline_processes\nloop_\n"
                    "_rlnPipeLineProcessName\n_rlnPipeLineProcessAlias\n_rlnPipeLineProcessType\n"
                    "_rlnPipeLineProcessStatus\nRefine3D/job001/ None 10 2\n\ndata_pipeline_nodes\nloop_\n"
                    "_rlnPipeLineNodeName\n_rlnPipeLineNodeTypeLabel\nRefine3D/job001/run_data.star "
                    "ParticleGroupMetadata.star.relion.refine3d\n")
    pipe = Pipeline.read(path)
    assert pipe.processes[0].status == "Succeeded"
    assert pipe.nodes[0].depth == 1


def test_unknown_status_is_an_error(tmp_path):
    path = tmp_path / "p.star"
    path.write_text(RELION_TEXT.replace("Scheduled", "Sleeping"))
    with pytest.raises(InputError, match="Sleeping"):
        Pipeline.read(path)


def test_job_names():
    assert job_dir_name("Extract", 2) == "Extract/job002/"
    assert job_dir_name("Refine3D", 1234) == "Refine3D/job1234/"
    assert parse_job_number("Refine3D/job1234/") == ("Refine3D", 1234)
    assert parse_job_number("Refine3D/job12/") is None
    assert parse_job_number("Refine3D/bin6/") is None


def test_alias_rules():
    assert clean_alias("bin 6 refine") == "bin_6_refine"
    for bad in ("x", "job7", "a/b", "a*b", "a$b", 'a"b', "a{b"):
        with pytest.raises(InputError):
            clean_alias(bad)


def test_nodes_entries_use_alias_and_depth():
    proc = Process("Reconstruct/job003/", "relion.reconstructparticletomo", "Succeeded", "Reconstruct/bin2/")
    half = Node("Reconstruct/job003/half1.mrc", "DensityMap.mrc.relion.tomo.halfmap.reconstruct", 99)
    assert node_entry_paths(half, proc) == [
        "DensityMap/Reconstruct/bin2/half1.mrc",
        "DensityMap.mrc.relion.tomo.halfmap.reconstruct/Reconstruct/bin2/half1.mrc",
    ]
    merged = Node("Reconstruct/job003/merged.mrc", "DensityMap.mrc.relion.tomo.map.reconstruct", 1)
    assert node_entry_paths(merged, None) == ["DensityMap/Reconstruct/job003/merged.mrc"]


@pytest.mark.parametrize("cls", [ExtractParameters, ReconstructParameters])
def test_job_star_round_trip_sorted_and_relion_spelling(tmp_path, cls):
    params = cls(in_optimisation="Import/job001/optimisation_set.star", binning=3, box_size=64, crop_size=48,
                 nr_mpi=2, nr_threads=4)
    job = JobStar(cls.job_type_label, False, cls.is_tomo, params.to_job_options())
    path = tmp_path / "job.star"
    job.write(path)
    text = path.read_text()
    assert text.startswith("\n# version 50001\n\ndata_job\n")
    assert f"_rlnJobTypeLabel   {cls.job_type_label}" in text.replace("  ", "  ")
    keys = re.findall(r"^\s*(\S+)\s+\S+\s*$", text.split("data_joboptions_values")[1], re.M)
    keys = [k for k in keys if not k.startswith(("_", "loop_", "#"))]
    assert keys == sorted(keys, key=str.encode)
    assert re.search(r"\bdo_queue\s+No\b", text) and re.search(r"\bbinning\s+3\s", text)
    back = JobStar.read(path)
    assert back.type_label == cls.job_type_label and back.is_tomo == cls.is_tomo
    again = cls.from_job_options(back.options)
    assert again.to_job_options() == params.to_job_options()
