"""How the ranks of an MPI refinement share an iteration's work: the weighted sums added over
the ranks (one MPI reduction or, without ``--dont_combine_weights_via_disc``, through files on
disc), and the workers' progress, which the leader gathers into ``progress.json`` while it
waits (and polls the abort request)."""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from processing.abort import check_abort
from processing.io.atomic import atomic_write
from processing.parallel import Communicator

from .estep import HalfAccumulator

__all__ = ["sum_over_ranks", "combine_through_disc", "wait_for_workers", "write_rank_progress"]


def sum_over_ranks(comm: Communicator, accs: list[HalfAccumulator]) -> None:
    """Both halves' sums added over all ranks in one MPI reduction (packed as float64)."""
    arrays = [[np.ascontiguousarray(a) for a in acc.arrays()] for acc in accs]
    flat = [a.view(np.float64).ravel() for group in arrays for a in group]
    total = comm.allreduce_sum(np.concatenate(flat))
    start = 0
    for acc, group in zip(accs, arrays):
        summed = []
        for a in group:
            n = a.size * a.itemsize // 8
            summed.append(total[start:start + n].view(a.dtype).reshape(a.shape))
            start += n
        acc.set_arrays(summed)


def combine_through_disc(comm: Communicator, job_dir: Path, accs: list[HalfAccumulator]) -> None:
    """"Combine iterations through disc": every rank writes its sums to a temporary file in the
    job directory and the leader adds them up (instead of an MPI reduction)."""
    path = job_dir / f".combine_rank{comm.rank:03d}.npz"
    arrays = {f"h{h}_{k}": a for h, acc in enumerate(accs) for k, a in enumerate(acc.arrays())}
    with atomic_write(path, "wb", encoding=None) as fh:
        np.savez(fh, **arrays)
    comm.barrier()
    if comm.is_leader:
        totals = None
        for r in range(comm.size):
            part = job_dir / f".combine_rank{r:03d}.npz"
            with np.load(part) as data:
                loaded = [[data[f"h{h}_{k}"] for k in range(len(accs[h].arrays()))] for h in range(len(accs))]
            totals = loaded if totals is None else [[a + b for a, b in zip(x, y)] for x, y in zip(totals, loaded)]
            part.unlink()
        for acc, arrays_h in zip(accs, totals):
            acc.set_arrays(arrays_h)
    comm.barrier()


def write_rank_progress(comm: Communicator, job_dir: Path, iteration: int, done: int, total: int) -> None:
    """A worker's particle count so far, for the leader to gather."""
    with atomic_write(job_dir / f".progress_rank{comm.rank}.json") as fh:
        json.dump({"iteration": iteration, "done": done, "total": total}, fh)


def wait_for_workers(comm: Communicator, job_dir: Path, on_progress: Callable[[int], None]) -> None:
    """Until every rank arrives (a non-blocking barrier): the leader reports the workers'
    particles done so far to ``on_progress`` twice a second and honours an abort request."""
    request = comm.mpi.Ibarrier()
    last_report = 0.0
    while not request.Test():
        if comm.is_leader and time.time() - last_report >= 0.5:
            last_report = time.time()
            done = 0
            for r in range(1, comm.size):
                try:
                    done += json.loads((job_dir / f".progress_rank{r}.json").read_text())["done"]
                except (OSError, ValueError, KeyError):
                    pass
            on_progress(done)
            check_abort(job_dir)
        time.sleep(Communicator.POLL)
