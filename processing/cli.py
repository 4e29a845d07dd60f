"""Command-line subcommands of the processing layer (``tomodash simulate``, ...).

Each command module exposes ``add_parser(subparsers)`` that registers its subcommand and sets
``func`` on the parser; the top-level ``tomodash`` entry point (dashboard.cli) collects them.
"""
from __future__ import annotations

import argparse
import importlib

# Modules that each register one subcommand through ``add_parser(subparsers)``.
COMMAND_MODULES: tuple[str, ...] = ("processing.simulate.cli", "processing.jobs.extract", "processing.jobs.reconstruct",
                                   "processing.jobs.refine3d", "processing.jobs.select", "processing.jobs.maskcreate",
                                   "processing.jobs.postprocess")


def add_processing_commands(subparsers: argparse._SubParsersAction) -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
