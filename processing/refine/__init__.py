"""3D auto-refine (RELION 5 ``relion_refine --auto_refine`` on subtomograms).

The public face: :class:`RefineOptions` (the run's settings), :func:`parse_refine_args`
(relion_refine's command line into those settings) and :func:`run_refine` (the refinement,
under MPI when started with ``mpiexec``). Inside, in the order a run uses them:
``inputs`` (what a run reads once), ``initial`` (iteration 0), ``particles`` (images and
CTFs), ``estep`` (expectation), ``maximisation`` and ``mstep`` (the leader's work after it,
and one half set's M-step), ``schedule`` (auto-sampling and convergence), ``state`` (what an
iteration hands to the next), ``outputs`` (iteration files and continuation),
``distributed`` (the ranks' sums and progress), ``driver`` (the iteration loop);
``relion_code`` (which of relion_refine's codes, CPU, ``--gpu`` or ``--cpu``, a run's numbers follow).
"""
from __future__ import annotations

from .flags import parse_refine_args
from .options import RefineOptions

__all__ = ["RefineOptions", "parse_refine_args", "run_refine"]


def __getattr__(name: str):
    # The engine (numba kernels, MPI) is imported only when a refinement runs, so that parsing a
    # command line or building a form stays light.
    if name == "run_refine":
        from .driver import run_refine

        return run_refine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
