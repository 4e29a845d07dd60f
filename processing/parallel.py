"""MPI and thread helpers: the same code runs alone or under ``mpiexec -n N``.

mpi4py is imported only when the process was started by an MPI launcher, so a plain
``python -m ...`` run never initialises MPI.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["Communicator", "get_communicator", "particle_threads", "thread_map"]

T = TypeVar("T")
R = TypeVar("R")

_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


class Communicator:
    """A minimal communicator: an mpi4py ``Comm`` or a single-process stand-in.

    Every collective first waits in a barrier that sleeps between polls: MPICH's blocking
    collectives spin, and a rank spinning while it waits for the leader (M-step, files) or for
    another worker takes a core from the rank that still works whenever there are more
    processes than cores (``mpiexec -n 3`` on two cores).
    """

    #: seconds between polls of a waiting rank.
    POLL = 0.005

    def __init__(self, comm: Any | None = None) -> None:
        self._comm = comm

    @property
    def rank(self) -> int:
        return 0 if self._comm is None else self._comm.Get_rank()

    @property
    def size(self) -> int:
        return 1 if self._comm is None else self._comm.Get_size()

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @property
    def mpi(self) -> Any | None:
        """The underlying mpi4py communicator (None when running alone)."""
        return self._comm

    def _wait_for_all(self) -> None:
        request = self._comm.Ibarrier()
        while not request.Test():
            time.sleep(self.POLL)

    def gather(self, value: T, root: int = 0) -> list[T] | None:
        if self._comm is None:
            return [value]
        self._wait_for_all()
        return self._comm.gather(value, root=root)

    def bcast(self, value: T, root: int = 0) -> T:
        if self._comm is None:
            return value
        self._wait_for_all()
        return self._comm.bcast(value, root=root)

    def allreduce_sum(self, array: Any) -> Any:
        """Element-wise sum of a numpy array over all ranks (returns a new array)."""
        if self._comm is None:
            return array
        import numpy as np
        from mpi4py import MPI

        out = np.empty_like(array)
        self._wait_for_all()
        self._comm.Allreduce(np.ascontiguousarray(array), out, op=MPI.SUM)
        return out

    def ranks_on_my_host(self) -> int:
        """Working ranks (all but the leader; the only rank when alone) on this rank's host,
        as RELION counts them to share a host's GPUs. Collective: every rank calls it."""
        if self._comm is None:
            return 1
        from mpi4py import MPI

        names = self._comm.allgather(MPI.Get_processor_name())
        return max(1, sum(1 for r, name in enumerate(names) if r > 0 and name == names[self.rank]))

    def barrier(self) -> None:
        if self._comm is not None:
            self._wait_for_all()

    def abort(self, code: int = 1) -> None:
        if self._comm is not None and self.size > 1:
            self._comm.Abort(code)

    def split(self, color: int, key: int = 0) -> "Communicator":
        if self._comm is None:
            return self
        return Communicator(self._comm.Split(color, key))


def get_communicator() -> Communicator:
    """MPI.COMM_WORLD when launched by mpiexec, else a single-process communicator."""
    if not any(v in os.environ for v in _LAUNCHER_VARIABLES):
        return Communicator(None)
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    return Communicator(comm if comm.Get_size() > 1 else None)


def thread_map(func: Callable[[T], R], items: Sequence[T] | Iterable[T], *, threads: int) -> list[R]:
    """``[func(x) for x in items]`` on ``threads`` threads (in order; serial when threads <= 1)."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        return [func(x) for x in items]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(func, items))


@contextmanager
def particle_threads(threads: int) -> Iterator[Callable[[Callable[[T], R], Sequence[T]], list[R]]]:
    """A ``map`` that runs one item per thread on ``threads`` threads, each with one BLAS and
    one numba thread, so that per-item work (small matrix products, numba kernels, numpy)
    uses every core without oversubscription: OpenBLAS's own threads spin after each call
    and would steal the cores numba's threads need.

    numba's parallel kernels may be entered from several threads only with a thread-safe
    threading layer (OpenMP or TBB); with the workqueue layer the items run one at a time
    with ``threads`` numba and BLAS threads each instead.
    """
    import numba
    from threadpoolctl import threadpool_limits

    if threads > 1 and not _numba_is_threadsafe():
        with threadpool_limits(limits=threads, user_api="blas"):
            yield lambda func, items: [func(x) for x in items]
        return
    with threadpool_limits(limits=1, user_api="blas"):
        if threads <= 1:
            previous = numba.get_num_threads()
            numba.set_num_threads(1)
            try:
                yield lambda func, items: [func(x) for x in items]
            finally:
                numba.set_num_threads(previous)
            return
        with ThreadPoolExecutor(max_workers=threads, initializer=numba.set_num_threads, initargs=(1,)) as pool:
            yield lambda func, items: list(pool.map(func, items))


def _numba_is_threadsafe() -> bool:
    """Whether numba's parallel kernels will run on its OpenMP or TBB threading layer (chosen in
    that order of preference, TBB first, unless NUMBA_THREADING_LAYER says otherwise)."""
    import numba

    layer = numba.config.THREADING_LAYER
    if layer == "workqueue":
        return False
    try:
        return numba.threading_layer() in ("omp", "tbb")
    except ValueError:      # no parallel kernel has run yet: see which layers can load
        pass
    candidates = {"tbb": ["tbb"], "omp": ["omp"]}.get(layer, ["tbb", "omp"])
    for name in candidates:
        try:
            __import__(f"numba.np.ufunc.{name}pool")
            return True
        except ImportError:
            continue
    return False
