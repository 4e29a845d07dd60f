"""The array module of a run: numpy (default) or cupy, chosen once per run.

Numerical code asks :func:`get_array_module` for ``xp`` and writes ``xp.asarray``,
``xp.fft``..., so one code path serves the CPU and the GPU. The choice is made once, at the
start of a job, with :func:`set_backend` (or the environment variable ``TOMODASH_BACKEND``),
and :func:`to_host` brings results back to numpy for I/O.

Examples
--------
>>> from processing import backend
>>> backend.set_backend("numpy")
>>> xp = backend.get_array_module()
>>> a = xp.zeros(3)
>>> backend.to_host(a).shape
(3,)
"""
from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from types import ModuleType
from typing import Any, Literal

import numpy as np

__all__ = [
    "BackendName",
    "set_backend",
    "get_backend",
    "get_array_module",
    "to_host",
    "to_device",
    "is_gpu",
    "cupy_available",
    "cupy_problem",
    "device_count",
    "device_module",
    "select_device",
    "use_device",
]

BackendName = Literal["numpy", "cupy"]
_VALID = ("numpy", "cupy")

_backend: str = "numpy"


def _probe_cupy() -> tuple[ModuleType | None, int, str | None]:
    """(cupy, the CUDA devices it sees, None) where it can run, else (None, 0, why not)."""
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA install failing at import
        return None, 0, f"CuPy is not installed ({exc.__class__.__name__}: {exc})"
    try:
        n = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # CUDA driver missing or failing
        return None, 0, f"CUDA is not usable ({exc.__class__.__name__}: {exc})"
    return (cupy, n, None) if n > 0 else (None, 0, "CUDA sees no GPU")


def cupy_available() -> bool:
    """True when cupy imports and sees at least one CUDA device."""
    return cupy_problem() is None


def cupy_problem() -> str | None:
    """Why cupy cannot run here (not installed, no CUDA driver, no device), or None when it can."""
    return _probe_cupy()[2]


def device_count() -> int:
    """CUDA devices cupy sees (0 without cupy or CUDA)."""
    return _probe_cupy()[1]


def device_module() -> ModuleType:
    """The cupy module (for code that puts its own arrays on the GPU, whatever the run's
    backend); RuntimeError, with the reason, where cupy cannot run."""
    cupy, _, problem = _probe_cupy()
    if cupy is None:
        raise RuntimeError(f"no GPU array module: {problem}")
    return cupy


def select_device(device: int) -> None:
    """Make ``device`` the calling thread's current CUDA device."""
    device_module().cuda.Device(device).use()


def use_device(device: int | None):
    """A context in which cupy allocates on and runs kernels on ``device`` (a no-op for None).
    CuPy's current device belongs to the thread, so each worker thread enters it."""
    return nullcontext() if device is None else device_module().cuda.Device(device)


def set_backend(name: BackendName) -> None:
    """Choose the array module for this run.

    Parameters
    ----------
    name
        ``"numpy"`` or ``"cupy"``.

    Raises
    ------
    ValueError
        For an unknown name.
    RuntimeError
        When ``"cupy"`` is requested but cupy cannot be imported or sees no GPU.
    """
    global _backend
    if name not in _VALID:
        raise ValueError(f"backend must be one of {_VALID}, got {name!r}")
    if name == "cupy":
        cupy, _, problem = _probe_cupy()
        if cupy is None:
            raise RuntimeError(f"backend 'cupy' requested but cupy cannot run here: {problem}")
    _backend = name


def get_backend() -> str:
    """The name of the current backend (``"numpy"`` or ``"cupy"``)."""
    return _backend


def is_gpu() -> bool:
    """True when the current backend is cupy."""
    return _backend == "cupy"


def get_array_module(*arrays: Any) -> ModuleType:
    """The array module to use.

    Parameters
    ----------
    *arrays
        Optional arrays. If any of them is a cupy array, ``cupy`` is returned regardless of
        the run's backend (so functions handed device arrays stay on the device); if all are
        numpy arrays ``numpy`` is returned. Without arrays, the run's backend module.
    """
    if arrays:
        cupy = _imported_cupy()
        if cupy is not None and any(isinstance(a, cupy.ndarray) for a in arrays):
            return cupy
        return np
    return (_imported_cupy() or np) if _backend == "cupy" else np


def _imported_cupy() -> ModuleType | None:
    """cupy where it has been imported, whatever the run's backend: a job that puts its own
    arrays on a device (``--gpu``) imports it without :func:`set_backend`, and no device array
    exists before it is imported."""
    return sys.modules.get("cupy")


def to_host(array: Any) -> np.ndarray:
    """A numpy copy (or view) of ``array`` wherever it lives."""
    cupy = _imported_cupy()
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy.asnumpy(array)
    return np.asarray(array)


def scatter_add(target: Any, index: Any, values: Any) -> None:
    """``target[index] += values`` with repeated indices summed, in ``target``'s memory (real
    float arrays; view complex sums as interleaved floats): ``np.add.at`` on the host,
    ``cupyx.scatter_add`` on the GPU."""
    if get_array_module(target) is np:
        np.add.at(target, index, values)
    else:
        import cupyx

        cupyx.scatter_add(target, index, values)


def to_device(array: Any) -> Any:
    """``array`` on the current backend (a cupy array under cupy, numpy otherwise)."""
    return get_array_module().asarray(array)


_env = os.environ.get("TOMODASH_BACKEND", "").strip().lower()
if _env:
    set_backend(_env)  # type: ignore[arg-type]
