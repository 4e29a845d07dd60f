"""A host stand-in for CuPy: numpy arrays kept behind CuPy's rules on host and device memory.

The GPU's code path can only be run where CUDA is, but its commonest failures are not
arithmetic: a numpy array handed to a CuPy function, a device array handed to numpy or to a
numba kernel, a result left on the device where the host needs it. CuPy refuses all of these
with a ``TypeError``, and so does this module, so that a whole GPU run can be rehearsed on
any machine: :func:`installed` puts it in ``sys.modules`` as ``cupy`` and ``cupyx``, and
``tests/host_cupy_site`` on ``PYTHONPATH`` does it in the processes of a command
(:func:`install_from_environment`).

The rules, as CuPy (v13) has them (``cupy/_core``):

- ``numpy.asarray(device)`` and any implicit conversion raise (``ndarray.__array__``);
  ``float()``, ``int()``, ``complex()`` and ``bool()`` of one element, ``.get()``,
  ``.item()`` and :func:`asnumpy` copy to the host;
- operators, ufuncs and functions take device arrays and Python or numpy *scalars*; a numpy
  array, of any dimension, is an unsupported type (``_kernel._preprocess_arg``). Only
  :func:`asarray` and :func:`array` copy host data to the device;
- indices may be numpy arrays (they are copied), and an advanced-index assignment may take a
  numpy value; a basic-slice assignment refuses one unless it is 0-d (``_scatter_op``,
  "Refuse assignment from CPU arrays", then ``fill``'s ``ValueError``);
- indexing one element, and reductions, give 0-d device arrays, not scalars;
- ``RawKernel`` arguments are device arrays or numpy scalars. Kernels run here as host
  functions registered under their names (:func:`register_kernel`): the real kernel's
  per-sample code compiled as C++ (:func:`build_gather`, :func:`load_gather`).

Not rehearsed: arithmetic on the device (CUDA's, cuBLAS's and cuFFT's rounding), streams,
and memory: :class:`_Device` reports a fixed free memory.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__all__ = ["build_gather", "install_from_environment", "installed", "load_gather", "make_module",
           "ndarray", "register_kernel"]

#: What CuPy says when a device array is converted to numpy implicitly.
IMPLICIT_TO_HOST = ("Implicit conversion to a NumPy array is not allowed. "
                    "Please use `.get()` to construct a NumPy array explicitly.")


def _host_operand(where: str) -> TypeError:
    return TypeError(f"Unsupported type <class 'numpy.ndarray'> (a host array given to {where}, "
                     "which takes device arrays and scalars only)")


class ndarray(NDArrayOperatorsMixin):  # noqa: N801 - CuPy's name
    """A device array: a numpy array that refuses to mix with host arrays."""

    __slots__ = ("_host",)

    def __init__(self, host: np.ndarray) -> None:
        self._host = host

    # conversions CuPy allows, and the one it refuses
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_TO_HOST)

    def get(self) -> np.ndarray:
        return self._host.copy()

    def __float__(self) -> float:
        return float(self._host)

    def __int__(self) -> int:
        return int(self._host)

    def __complex__(self) -> complex:
        return complex(self._host)

    def __bool__(self) -> bool:
        return bool(self._host)

    def __len__(self) -> int:
        return len(self._host)

    def __iter__(self) -> Iterator[Any]:
        return (_to_device_result(row) for row in self._host)

    def __repr__(self) -> str:
        return f"host_cupy.ndarray({self._host!r})"

    # numpy's protocols: run numpy on the wrapped arrays, refusing host operands
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"numpy.{ufunc.__name__}" + ("" if method == "__call__" else f".{method}")
        args = _device_operands(inputs, where)
        if "out" in kwargs:
            kwargs["out"] = _device_operands(kwargs["out"], where)
        return _to_device_result(getattr(ufunc, method)(*args, **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        where = f"numpy.{func.__name__}"
        return _to_device_result(func(*_device_operands(args, where), **_device_operands(kwargs, where)))

    # indexing
    def __getitem__(self, index):
        return _to_device_result(self._host[_index(index)])

    def __setitem__(self, index, value) -> None:
        index = _index(index)
        if isinstance(value, np.ndarray) and value.ndim and not _is_advanced(index):
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill (a host array assigned to a "
                             "basic slice of a device array: CuPy refuses it there, copy it with asarray first)")
        self._host[index] = value._host if isinstance(value, ndarray) else value

    # everything else (shape, dtype, astype, reshape, view, sum, real, T, ...) is numpy's
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):          # numpy's __array_interface__ would hand numpy the data
            raise AttributeError(name)
        attribute = getattr(self._host, name)
        if callable(attribute):
            def method(*args, **kwargs):
                where = f"ndarray.{name}"
                return _to_device_result(attribute(*_device_operands(args, where),
                                                   **_device_operands(kwargs, where)))
            return method
        return _to_device_result(attribute)


def _is_advanced(index: Any) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, (np.ndarray, list)) for p in parts)


def _index(index: Any) -> Any:
    """Device arrays in an index unwrapped; numpy arrays kept (CuPy copies them over)."""
    if isinstance(index, tuple):
        return tuple(_index(p) for p in index)
    return index._host if isinstance(index, ndarray) else index


def _device_operands(value: Any, where: str) -> Any:
    """``value`` with device arrays unwrapped; a TypeError for a host array anywhere in it."""
    if isinstance(value, ndarray):
        return value._host
    if isinstance(value, np.ndarray):
        raise _host_operand(where)
    if isinstance(value, (list, tuple)):
        return type(value)(_device_operands(v, where) for v in value)
    if isinstance(value, dict):
        return {k: _device_operands(v, where) for k, v in value.items()}
    return value


def _to_device_result(value: Any) -> Any:
    """numpy results as device arrays (numpy scalars as 0-d arrays, as CuPy returns them)."""
    if isinstance(value, np.ndarray):
        return ndarray(value)
    if isinstance(value, np.generic):
        return ndarray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_to_device_result(v) for v in value)
    if isinstance(value, list):
        return [_to_device_result(v) for v in value]
    return value


def _device_function(function: Callable[..., Any], where: str) -> Callable[..., Any]:
    def on_device(*args, **kwargs):
        return _to_device_result(function(*_device_operands(args, where), **_device_operands(kwargs, where)))
    on_device.__name__ = getattr(function, "__name__", where)
    return on_device


def asarray(a: Any, dtype: Any = None, order: Any = None) -> ndarray:
    """``a`` on the device: a copy of host data, ``a`` itself for a device array of that dtype."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a._host.dtype else ndarray(a._host.astype(dtype))
    return ndarray(np.array(_device_operands_or_host(a), dtype=dtype, order=order or "K", copy=True))


def array(a: Any, dtype: Any = None, copy: bool = True, order: Any = None) -> ndarray:
    if isinstance(a, ndarray) and not copy:
        return asarray(a, dtype)
    host = a._host if isinstance(a, ndarray) else _device_operands_or_host(a)
    return ndarray(np.array(host, dtype=dtype, order=order or "K", copy=True))


def _device_operands_or_host(a: Any) -> Any:
    """Host data as given; sequences may hold device arrays too (cupy.array stacks them)."""
    if isinstance(a, (list, tuple)):
        return [_device_operands_or_host(v) for v in a]
    return a._host if isinstance(a, ndarray) else a


def asnumpy(a: Any) -> np.ndarray:
    return a._host.copy() if isinstance(a, ndarray) else np.asarray(a)


# ---------------------------------------------------------------------------------------------
# CUDA: devices and kernels

class _Device:
    """``cupy.cuda.Device``: a context that makes itself the thread's current device."""

    free_bytes = 8 << 30
    total_bytes = 16 << 30

    def __init__(self, device: int | None = None) -> None:
        count = _runtime.getDeviceCount()
        self.id = _current.id if device is None else int(device)
        if not 0 <= self.id < count:
            raise RuntimeError(f"cudaErrorInvalidDevice: device {self.id} of {count}")
        self._previous: list[int] = []

    @property
    def mem_info(self) -> tuple[int, int]:
        return self.free_bytes, self.total_bytes

    def use(self) -> None:
        _current.id = self.id

    def synchronize(self) -> None:
        """Nothing to wait for: the host computes each operation when it is called."""

    def __enter__(self) -> "_Device":
        self._previous.append(_current.id)
        _current.id = self.id
        return self

    def __exit__(self, *exc: Any) -> None:
        _current.id = self._previous.pop()


class _Runtime:
    device_count = 1

    def getDeviceCount(self) -> int:  # noqa: N802 - CUDA's name
        return self.device_count


_runtime = _Runtime()
_current = types.SimpleNamespace(id=0)
_kernels: dict[str, Callable[..., None]] = {}


def register_kernel(name: str, host_function: Callable[..., None]) -> None:
    """Run the ``RawKernel`` named ``name`` as ``host_function(*args)`` on the host arrays of
    its arguments (outputs written in place, as the kernel writes them)."""
    _kernels[name] = host_function


class RawKernel:
    """``cupy.RawKernel``: launches the host function registered under ``name``."""

    def __init__(self, code: str, name: str, options: tuple[str, ...] = (), **_: Any) -> None:
        if name not in _kernels:
            raise RuntimeError(f"host_cupy has no host version of the kernel {name!r} (register_kernel)")
        if f" {name}(" not in code:
            raise RuntimeError(f"the kernel source has no function {name!r}")
        self.name = name

    def __call__(self, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...], **_: Any) -> None:
        host_args = []
        for i, arg in enumerate(args):
            if isinstance(arg, ndarray):
                host_args.append(arg._host)
            elif isinstance(arg, np.generic):
                host_args.append(arg)
            else:
                raise TypeError(f"kernel {self.name}, argument {i}: {type(arg).__name__} "
                                "(RawKernel takes device arrays and numpy scalars)")
        _kernels[self.name](*host_args)


def build_gather(work: Path) -> Path:
    """Compile the gather kernel's host version into ``work``; the shared library's path."""
    from processing.refine import _cuda_kernels as CK

    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("needs a C++ compiler")
    source, library = work / "gather.cpp", work / "gather.so"
    source.write_text(CK.HOST_SHIMS + CK.SAMPLE_SOURCE + HOST_LOOP)
    subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    return library


def load_gather(library: Path) -> Callable[..., None]:
    function = ctypes.CDLL(str(library)).host_gather
    pointer = np.ctypeslib.ndpointer
    function.argtypes = [pointer(np.complex64, flags="C"), ctypes.c_int, pointer(np.float32, flags="C"),
                         pointer(np.float32, flags="C"), pointer(np.float32, flags="C"), ctypes.c_longlong,
                         ctypes.c_longlong, pointer(np.complex64, flags="C")]
    return function


#: The kernel's threads as one host loop: thread t computes (m, j) = divmod(t, k).
HOST_LOOP = r"""
extern "C" void host_gather(const float2* grid, int c, const float* a, const float* kx, const float* ky,
                            long long n, long long k, float2* out)
{
    for (long long m = 0; m < n; ++m)
        for (long long j = 0; j < k; ++j)
            out[m * k + j] = gather_sample(grid, c, a + 6 * m, kx[j], ky[j]);
}
"""


# ---------------------------------------------------------------------------------------------
# the modules

class _NumpyOnDevice(types.ModuleType):
    """A module whose names are numpy's, each function refusing host arrays and giving
    device arrays; ``overrides`` name what differs."""

    def __init__(self, name: str, numpy_module: types.ModuleType, overrides: dict[str, Any]) -> None:
        super().__init__(name)
        self._numpy_module = numpy_module
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        value = getattr(self._numpy_module, name)
        if isinstance(value, (type, np.dtype)) or not callable(value):
            return value
        return _device_function(value, f"cupy.{name}")


def _scatter_add(a: ndarray, slices: Any, value: Any) -> None:
    if not isinstance(a, ndarray):
        raise TypeError("cupyx.scatter_add: the target must be a device array")
    np.add.at(a._host, _index(slices), value._host if isinstance(value, ndarray) else value)


def make_module() -> tuple[types.ModuleType, types.ModuleType]:
    """(cupy, cupyx) stand-ins."""
    cuda = types.SimpleNamespace(Device=_Device, runtime=_runtime)
    fft = _NumpyOnDevice("cupy.fft", np.fft, {})
    cupy = _NumpyOnDevice("cupy", np, {
        "ndarray": ndarray, "asarray": asarray, "array": array, "asnumpy": asnumpy, "cuda": cuda,
        "RawKernel": RawKernel, "fft": fft, "__version__": "host stand-in",
    })
    cupyx = types.ModuleType("cupyx")
    cupyx.scatter_add = _scatter_add
    return cupy, cupyx


def install_from_environment() -> None:
    """Make ``cupy`` and ``cupyx`` the stand-ins in this process, for the commands a test runs
    with ``tests/host_cupy_site`` and ``tests`` on ``PYTHONPATH``: ``HOST_CUPY_DEVICES`` CUDA
    devices (default 1), the gather kernel from the library ``HOST_CUPY_GATHER``
    (:func:`build_gather`)."""
    cupy, cupyx = make_module()
    sys.modules["cupy"], sys.modules["cupyx"] = cupy, cupyx
    _runtime.device_count = int(os.environ.get("HOST_CUPY_DEVICES", "1"))
    if os.environ.get("HOST_CUPY_GATHER"):
        register_kernel("gather_points", load_gather(Path(os.environ["HOST_CUPY_GATHER"])))


@contextlib.contextmanager
def installed(*, devices: int = 1) -> Iterator[types.ModuleType]:
    """``cupy`` and ``cupyx`` are the stand-ins inside (``devices`` CUDA devices seen)."""
    saved = {name: sys.modules.get(name) for name in ("cupy", "cupyx")}
    cupy, cupyx = make_module()
    sys.modules["cupy"], sys.modules["cupyx"] = cupy, cupyx
    _runtime.device_count, _current.id = devices, 0
    try:
        yield cupy
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
