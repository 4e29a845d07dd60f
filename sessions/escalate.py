"""Detached abort escalation: ``python -m sessions.escalate --session S --job J``.

Started by :func:`sessions.runner.abort` with ``wait=False`` so that a server returns at once
while this helper waits for the job to honour ``RELION_JOB_ABORT_NOW`` and, if it does not,
sends SIGTERM and then SIGKILL to its process group (or scancel on a queue).
"""
from __future__ import annotations

import argparse
import sys

from .project import Session
from .runner import escalate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sessions.escalate")
    parser.add_argument("--session", required=True)
    parser.add_argument("--job", required=True)
    parser.add_argument("--grace", type=float, default=30.0)
    parser.add_argument("--term-grace", type=float, default=10.0)
    args = parser.parse_args(argv)
    escalate(Session(args.session), args.job, grace=args.grace, term_grace=args.term_grace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
