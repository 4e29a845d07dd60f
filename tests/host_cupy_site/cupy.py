"""``import cupy`` in a process with this folder (and ``tests``) on PYTHONPATH: the host
stand-in of :mod:`host_cupy`, which replaces this module in ``sys.modules`` (tests only)."""
import host_cupy

host_cupy.install_from_environment()
