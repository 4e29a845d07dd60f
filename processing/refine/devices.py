"""Which GPU each MPI process of a refinement uses: relion_refine's ``--gpu`` argument.

RELION's syntax: device numbers for the working processes separated by ``:``, and within one
process, for its threads, by ``,`` — ``--gpu "0:1"`` puts the first worker on device 0 and
the second on device 1, ``--gpu "0,1:2,3"`` gives each worker's threads two devices. Workers
beyond the list take its entries again in turn (worker ``w`` takes entry ``w mod n``). An
empty value (or one not starting with a digit) maps threads to devices automatically: the
workers on a host share its devices evenly. The leader of an MPI run (rank 0) reads and
writes but computes nothing, so it uses no device; a single-process run is its own worker.

This engine runs one device per process: a process's threads share it, so a list that gives
one process's threads different devices is refused rather than silently narrowed.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

from processing.errors import InputError

__all__ = ["parse_gpu_ids", "thread_devices", "DevicePlan", "plan_devices", "announce_device"]


def parse_gpu_ids(text: str) -> list[list[int]] | None:
    """The per-worker, per-thread device numbers of a ``--gpu`` value; None for automatic mapping.

    Raises
    ------
    InputError
        For an entry that is not a device number (column ``gpu_ids``).
    """
    text = (text or "").strip()
    if not text or not text[0].isdigit():
        return None
    workers = []
    for rank_text in text.split(":"):
        ids = []
        for entry in rank_text.split(","):
            entry = entry.strip()
            if not entry.isdigit():
                raise InputError(f"--gpu {text!r}: {entry!r} is not a device number (device numbers for the MPI "
                                 f"processes are separated by ':', for the threads of one process by ',')",
                                 column="gpu_ids")
            ids.append(int(entry))
        workers.append(ids)
    return workers


def thread_devices(text: str, *, worker: int, n_threads: int, n_devices: int, workers_on_host: int = 1) -> list[int]:
    """The device of each of a worker's ``n_threads`` threads (relion_refine's mapping).

    Parameters
    ----------
    text
        The ``--gpu`` value.
    worker
        0-based worker index (MPI rank - 1 under MPI; 0 for a single process).
    n_devices
        Devices the worker's host has (for automatic mapping).
    workers_on_host
        Workers sharing that host (automatic mapping spreads them over its devices).
    """
    ids = parse_gpu_ids(text)
    if ids is None:
        if n_devices < 1:
            return []
        slot = (worker % workers_on_host) * n_threads if workers_on_host > 1 else 0
        return [n_devices * (slot + i) // (max(workers_on_host, 1) * n_threads) for i in range(n_threads)]
    own = ids[worker % len(ids)]
    return [own[i % len(own)] for i in range(n_threads)]


@dataclass(frozen=True)
class DevicePlan:
    """The device of one process (None: the CPU)."""

    device: int | None

    @property
    def on_gpu(self) -> bool:
        return self.device is not None


def plan_devices(text: str | None, *, rank: int, n_ranks: int, n_threads: int, n_devices: int,
                 workers_on_host: int = 1) -> DevicePlan:
    """This process's device for ``--gpu text`` (None: no ``--gpu``), checked against the
    ``n_devices`` CUDA devices it sees.

    Raises
    ------
    InputError
        For a device number the process does not see, or several devices for one process's
        threads (column ``gpu_ids``).
    """
    if text is None or (n_ranks > 1 and rank == 0):
        return DevicePlan(None)
    worker = rank - 1 if n_ranks > 1 else 0
    devices = thread_devices(text, worker=worker, n_threads=n_threads, n_devices=n_devices,
                             workers_on_host=workers_on_host)
    if not devices:
        raise InputError("--gpu: this process sees no CUDA device", column="use_gpu")
    missing = sorted({d for d in devices if d >= n_devices})
    if missing:
        raise InputError(f"--gpu {text!r}: device(s) {missing} do not exist here ({n_devices} CUDA device(s): "
                         f"0-{n_devices - 1})", column="gpu_ids")
    if parse_gpu_ids(text) is not None and len(set(devices)) > 1:
        raise InputError(f"--gpu {text!r} gives the threads of MPI process {rank} several devices {sorted(set(devices))}; "
                         f"each process runs on one device here: give one number per process (e.g. '0:1')",
                         column="gpu_ids")
    return DevicePlan(devices[0])


def announce_device(rank: int, device: int) -> None:
    """Print " + process RANK runs on GPU device DEVICE" from every process of a job, as one
    write: MPI ranks share the job's output, and print's separate newline interleaves there."""
    sys.stdout.write(f" + process {rank} runs on GPU device {device}\n")
    sys.stdout.flush()
