#!/usr/bin/env bash
# Wheels the GPU machine lacks (its image has numpy, scipy, numba, pandas, cupy, mpi4py, pytest),
# for Python 3.12, into .whl/ (git-ignored through .git/info/exclude) for device_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
rm -rf .whl && mkdir .whl
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl \
    "mrcfile==$(.venv/bin/python -c 'import mrcfile; print(mrcfile.__version__)')" \
    "starfile==$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("starfile"))')" \
    "param==$(.venv/bin/python -c 'import param; print(param.__version__)')"
ls -l .whl
