"""Reading and writing RELION 5 files: STAR, MRC, tomogram and particle sets, optimisation
sets, job.star and the model, optimiser and sampling files of a refinement.

Every reader raises :class:`processing.errors.InputError` for bad input, naming the file,
table, column and row; every writer writes atomically (temporary file + rename).
"""
from __future__ import annotations

from .atomic import atomic_path, atomic_write
from .jobstar import JobStar, format_option, option_is_true, read_job_star, write_job_star
from .mrc import (
    MrcData,
    MrcHeader,
    check_finite,
    check_mrc_file,
    map_image,
    parse_image_reference,
    read_image,
    read_mrc,
    read_mrc_header,
    read_stack_slice,
    write_mrc,
)
from .optimisation_set import OptimisationSet, read_optimisation_set, write_optimisation_set
from .particles import ParticleSet, create_optics_table, read_particle_set, write_particle_set
from .paths import resolve_path
from .refine_star import ModelStarContents, OptimiserStarContents, SamplingStarContents
from .star import (
    bool_column,
    list_value,
    numeric_column,
    read_star,
    read_star_block,
    require_columns,
    star_to_string,
    string_column,
    vector_column,
    write_star,
)
from .tomograms import TiltCtf, TiltSeries, Tomogram, TomogramSet, read_tomogram_set, write_tomogram_set

__all__ = [
    "atomic_path",
    "atomic_write",
    "read_star",
    "read_star_block",
    "write_star",
    "star_to_string",
    "require_columns",
    "numeric_column",
    "string_column",
    "vector_column",
    "bool_column",
    "list_value",
    "MrcData",
    "MrcHeader",
    "read_mrc",
    "read_mrc_header",
    "check_mrc_file",
    "check_finite",
    "map_image",
    "write_mrc",
    "read_stack_slice",
    "read_image",
    "parse_image_reference",
    "resolve_path",
    "ModelStarContents",
    "OptimiserStarContents",
    "SamplingStarContents",
    "TiltSeries",
    "Tomogram",
    "TomogramSet",
    "TiltCtf",
    "read_tomogram_set",
    "write_tomogram_set",
    "ParticleSet",
    "read_particle_set",
    "write_particle_set",
    "create_optics_table",
    "OptimisationSet",
    "read_optimisation_set",
    "write_optimisation_set",
    "JobStar",
    "read_job_star",
    "write_job_star",
    "format_option",
    "option_is_true",
]
