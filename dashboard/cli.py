"""The ``tomodash`` command: one entry point composing every layer's subcommands."""
from __future__ import annotations

import argparse
import sys

from processing.cli import add_processing_commands
from processing.errors import InputError
from sessions.cli import add_session_commands

from .server_cli import add_dashboard_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tomodash",
        description="Cryo-ET subtomogram averaging sessions: RELION 5 STA jobs and their dashboard.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_processing_commands(subparsers)
    add_session_commands(subparsers)
    add_dashboard_commands(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"tomodash {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
