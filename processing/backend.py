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
]

BackendName = Literal["numpy", "cupy"]
_VALID = ("numpy", "cupy")

_backend: str = "numpy"
_cupy: ModuleType | None = None


def cupy_available() -> bool:
    """True when cupy imports and sees at least one CUDA device."""
    try:
        import cupy  # noqa: F401

        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # ImportError, CUDA driver errors
        return False


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
    global _backend, _cupy
    if name not in _VALID:
        raise ValueError(f"backend must be one of {_VALID}, got {name!r}")
    if name == "cupy":
        if not cupy_available():
            raise RuntimeError("backend 'cupy' requested but cupy is not importable or sees no GPU")
        import cupy

        _cupy = cupy
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
        if _cupy is not None:
            for a in arrays:
                if isinstance(a, _cupy.ndarray):
                    return _cupy
        return np
    return _cupy if (_backend == "cupy" and _cupy is not None) else np


def to_host(array: Any) -> np.ndarray:
    """A numpy copy (or view) of ``array`` wherever it lives."""
    if _cupy is not None and isinstance(array, _cupy.ndarray):
        return _cupy.asnumpy(array)
    return np.asarray(array)


def to_device(array: Any) -> Any:
    """``array`` on the current backend (a cupy array under cupy, numpy otherwise)."""
    return get_array_module().asarray(array)


_env = os.environ.get("TOMODASH_BACKEND", "").strip().lower()
if _env:
    set_backend(_env)  # type: ignore[arg-type]
