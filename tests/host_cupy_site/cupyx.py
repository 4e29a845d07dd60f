"""``import cupyx`` with this folder on PYTHONPATH: the stand-in installed by ``cupy`` (tests only)."""
import cupy  # noqa: F401 - installs the stand-ins of cupy and cupyx in sys.modules
