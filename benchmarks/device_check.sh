#!/usr/bin/env bash
# Issue 14's GPU checks as one command on a lent GPU machine (the device tool's `run`, with
# carry [".whl"] from benchmarks/device_wheels.sh), about 5 minutes on one H100:
#   1. the `gpu` tests: iteration 1 of RELION's fixtures with --gpu 0 against the CPU path (the
#      demo, two optics groups, not premultiplied; a cross-correlation first iteration; 3D
#      pseudo-subtomograms),
#      Reconstruct particle's backprojection on GPU 0 against RELION's maps, and real CuPy
#      refusing what the host stand-in (tests/host_cupy.py) refuses;
#   2. benchmarks/refine_bench.py --gpu: the demo refinement to convergence on 2 CPU threads and
#      on the GPU (per-iteration E-step ratios, the GPU E-step against the device's GEMM rate,
#      iteration counts, FSC between the two final maps).
# Logs go to $OUT (the device tool brings them back).
set -o pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi -L | tee "$OUT/device.txt"
python3 -c "import cupy; print('cupy', cupy.__version__, cupy.cuda.runtime.getDeviceCount(), 'device(s)')" | tee -a "$OUT/device.txt"
python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_path.py tests/test_refine_relion.py 2>&1 | tee "$OUT/gpu_tests.log"
python3 benchmarks/refine_bench.py --gpu --workdir /tmp/refine_bench 2>&1 | tee "$OUT/gpu_bench.log"
