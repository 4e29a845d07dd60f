"""The GPU's code path of the refinement, checked where there is no GPU, and ``--gpu``.

The E-step runs on a GPU through CuPy with the array-module kernels
(:mod:`processing.refine._array_kernels`) and the CUDA gather (:mod:`._cuda_kernels`) in place
of the numba ones. With numpy the array kernels must give the numba kernels' numbers (here).
Tests marked ``gpu`` run the real thing and are skipped where CuPy sees no device.

The whole-run tests also run with CuPy replaced by a host stand-in (tests/host_cupy.py, the
``device_cupy`` fixture): numpy held to CuPy's rules on host and device arrays, the gather
kernel's own code compiled for the host. RELION's fixtures go through it in
test_refine_relion.py::test_an_iteration_on_the_gpu_is_the_cpus, MPI runs in
test_refine_engine.py and test_reconstruct_job.py, a launch from a session in
test_sessions_refine.py. It found that a ``--gpu`` run handed its device arrays to numpy
(nothing had made :func:`processing.backend.get_array_module` see them), which no numpy-only
test could show.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numba
import numpy as np
import pytest

from processing.backend import cupy_available
from processing.errors import InputError
from processing.geometry.euler import euler_to_matrix
from processing.refine import _array_kernels as AK
from processing.refine import _cuda_kernels as CK
from processing.refine import _kernels as K
from processing.refine.devices import parse_gpu_ids, plan_devices, thread_devices

import host_cupy
from conftest import run_cmd, venv_bin
from test_refine_relion import CASES, pseudo3d_case, relion_options, started_run, with_relion_halves  # noqa: F401

def gpu(test):
    """Marked ``gpu``; runs only where CuPy sees a CUDA device."""
    return pytest.mark.gpu(pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA device")(test))

C, PAD = 20, 2.0


@pytest.fixture(scope="module")
def grid_and_points():
    rng = np.random.default_rng(7)
    shape = (2 * C + 1, 2 * C + 1, C + 1)
    grid = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
    n, k = 12, 300
    rot = euler_to_matrix(rng.uniform(-180, 180, n), rng.uniform(0, 180, n), rng.uniform(-180, 180, n))
    # |k| <= 8 px, so pad·|k| + 1 stays inside the grid (gather_points has no bounds tests)
    radius, phi = 8 * np.sqrt(rng.uniform(0, 1, k)), rng.uniform(0, 2 * np.pi, k)
    kx, ky = radius * np.cos(phi), radius * np.sin(phi)
    kz = rng.uniform(-5, 5, k)
    values = rng.normal(size=(n, k)) + 1j * rng.normal(size=(n, k))
    weights = rng.uniform(0, 1, (n, k))
    return grid, np.ascontiguousarray(rot), kx, ky, kz, values, weights, rng.uniform(0, 1, (3, k))


def numba_gather(grid, rot, kx, ky, power_weights):
    """The CPU's numba gather of (n, K) values and (n,) weighted powers, the reference here."""
    n, k = rot.shape[0], kx.size
    out, power = np.empty((n, k), np.complex64), np.empty(n, np.float32)
    K.gather_points(grid.view(np.float32).reshape(grid.shape + (2,)), C, rot, PAD, kx.astype(np.float32),
                    ky.astype(np.float32), power_weights.astype(np.float32), out, power)
    return out, power


def test_gathers_match_the_numba_kernels(grid_and_points) -> None:
    grid, rot, kx, ky, kz, _, _, power_weights = grid_and_points
    n, k = rot.shape[0], kx.size
    pw = power_weights.astype(np.float32)
    out, power = numba_gather(grid, rot, kx, ky, pw)
    values, power_a = AK.gather_points(grid, C, rot, PAD, kx.astype(np.float32), ky.astype(np.float32), pw)
    # both single precision, the corners summed in another order: float32 rounding (values ~3)
    np.testing.assert_allclose(values, out, atol=2e-5)
    np.testing.assert_allclose(power_a, power, rtol=2e-5)
    assert values.dtype == np.complex64 and power_a.dtype == np.float32

    grid64 = grid.astype(np.complex128)
    out3, power3 = np.empty((n, k), np.complex128), np.empty(n)
    K.gather_points_3d(grid64, C, rot, PAD, kx, ky, kz, power_weights, out3, power3)
    values3, power3_a = AK.gather_points_3d(grid64, C, rot, PAD, kx, ky, kz, power_weights)
    np.testing.assert_allclose(values3, out3, atol=1e-12)          # double precision: round-off
    np.testing.assert_allclose(power3_a, power3, rtol=1e-12)


@pytest.fixture(scope="module")
def host_cuda_gather(host_cupy_gather):
    """The CUDA kernel's per-sample function compiled as host C++, called over every sample."""
    function = host_cupy.load_gather(host_cupy_gather)

    def gather(grid, c, rot, pad, kx, ky):
        a = CK.scaled_rows(rot, pad, np)
        out = np.empty((a.shape[0], kx.size), np.complex64)
        function(np.ascontiguousarray(grid, np.complex64), c, a, np.ascontiguousarray(kx, np.float32),
                 np.ascontiguousarray(ky, np.float32), a.shape[0], kx.size, out)
        return out
    return gather


def test_the_cuda_gathers_arithmetic_is_the_numba_kernels(grid_and_points, host_cuda_gather) -> None:
    """The CUDA kernel's per-sample code, run on the CPU, against the numba gather (inside the
    grid) and the array kernel's bounds rule (samples whose cell leaves the grid read zero)."""
    grid, rot, kx, ky, *_ = grid_and_points
    out, _ = numba_gather(grid, rot, kx, ky, np.zeros((1, kx.size)))
    values = host_cuda_gather(grid, C, rot, PAD, kx, ky)
    # single precision both, the same operations (the compilers may contract some into FMAs)
    np.testing.assert_allclose(values, out, atol=2e-5)
    assert np.abs(values).max() > 1.0 and (values.real < 0).any() and (values.imag < 0).any()
    # points out to pad·|k| = 2·20, beyond the grid's corners (c·√3): the outer ones read zero,
    # like the array kernel's
    radius = np.linspace(0.0, 20.0, 401)
    far_x, far_y = (radius * np.cos(0.7)).astype(np.float32), (radius * np.sin(0.7)).astype(np.float32)
    expected, _ = AK.gather_points(grid, C, rot, PAD, far_x, far_y, np.zeros((1, far_x.size), np.float32))
    got = host_cuda_gather(grid, C, rot, PAD, far_x, far_y)
    np.testing.assert_allclose(got, expected, atol=2e-5)
    assert (got == 0).any(axis=1).all() and (got != 0).any(axis=1).all()


def test_the_cuda_gather_kernel_compiles(tmp_path) -> None:
    """The whole kernel through the CUDA compiler (H100: sm_90), where the toolkit is installed."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("needs the CUDA toolkit (nvcc)")
    source = tmp_path / "gather.cu"
    source.write_text(CK.GATHER_SOURCE)
    proc = subprocess.run([nvcc, "-std=c++14", "-ptx", "-arch=sm_90", "-o", str(tmp_path / "gather.ptx"),
                           str(source)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert ".entry gather_points" in (tmp_path / "gather.ptx").read_text()


def test_insertions_match_the_numba_kernels(grid_and_points) -> None:
    grid, rot, kx, ky, kz, values, weights, _ = grid_and_points
    for three_d in (False, True):
        expected = np.zeros(grid.shape, np.complex128), np.zeros(grid.shape)
        got = np.zeros(grid.shape, np.complex128), np.zeros(grid.shape)
        if three_d:
            limit = 120.0            # cuts some points: the |p|² rule is exercised
            K.scatter_points_3d(*expected, C, rot, PAD, kx, ky, kz, values, weights, limit)
            AK.scatter_points_3d(*got, C, rot, PAD, kx, ky, kz, values, weights, limit)
        else:
            K.scatter_points(*expected, C, rot, PAD, kx, ky, values, weights)
            AK.scatter_points(*got, C, rot, PAD, kx, ky, values, weights)
        np.testing.assert_allclose(got[0], expected[0], atol=1e-12)
        np.testing.assert_allclose(got[1], expected[1], atol=1e-12)
        assert np.count_nonzero(got[1]) > 1000 and np.abs(got[0]).max() > 0.5


def test_3d_array_kernels_keep_to_the_device(grid_and_points, device_cupy) -> None:
    """The array kernels of 3D data, handed device arrays, work on the device and give the
    numba kernels' numbers (the 3D half of a GPU run on pseudo-subtomograms)."""
    cp = device_cupy
    grid, rot, kx, ky, kz, values, weights, power_weights = grid_and_points
    grid64 = grid.astype(np.complex128)
    n, k = rot.shape[0], kx.size
    out, power = np.empty((n, k), np.complex128), np.empty(n)
    K.gather_points_3d(grid64, C, rot, PAD, kx, ky, kz, power_weights, out, power)
    got, got_power = AK.gather_points_3d(cp.asarray(grid64), C, cp.asarray(rot), PAD, cp.asarray(kx), cp.asarray(ky),
                                         cp.asarray(kz), cp.asarray(power_weights))
    assert isinstance(got, cp.ndarray) and isinstance(got_power, cp.ndarray)
    np.testing.assert_allclose(cp.asnumpy(got), out, atol=1e-12)
    np.testing.assert_allclose(cp.asnumpy(got_power), power, rtol=1e-12)
    expected = np.zeros(grid.shape, np.complex128), np.zeros(grid.shape)
    K.scatter_points_3d(*expected, C, rot, PAD, kx, ky, kz, values, weights, 120.0)
    data, weight = cp.zeros(grid.shape, np.complex128), cp.zeros(grid.shape)
    AK.scatter_points_3d(data, weight, C, cp.asarray(rot), PAD, cp.asarray(kx), cp.asarray(ky), cp.asarray(kz),
                         cp.asarray(values), cp.asarray(weights), 120.0)
    np.testing.assert_allclose(cp.asnumpy(data), expected[0], atol=1e-12)
    np.testing.assert_allclose(cp.asnumpy(weight), expected[1], atol=1e-12)


# ---- --gpu: relion_refine's device lists ----------------------------------------------------

def test_gpu_ids_follow_relions_syntax() -> None:
    assert parse_gpu_ids("") is None and parse_gpu_ids("auto") is None
    assert parse_gpu_ids("0:1") == [[0], [1]]
    assert parse_gpu_ids("0,1:2,3") == [[0, 1], [2, 3]]
    with pytest.raises(InputError, match="'x' is not a device number") as err:
        parse_gpu_ids("0:x")
    assert err.value.column == "gpu_ids"
    # Workers beyond the list take its entries again; threads beyond a worker's list likewise.
    assert thread_devices("0:1", worker=2, n_threads=2, n_devices=4) == [0, 0]
    assert thread_devices("2,3", worker=0, n_threads=3, n_devices=4) == [2, 3, 2]
    # Automatic: a host's workers share its devices evenly (RELION's formula).
    assert [thread_devices("", worker=w, n_threads=1, n_devices=2, workers_on_host=4)[0] for w in range(4)] == \
        [0, 0, 1, 1]
    assert thread_devices("", worker=0, n_threads=2, n_devices=2) == [0, 1]


def test_gpu_plan_of_each_rank() -> None:
    # The leader of an MPI run computes nothing; workers take the list in turn.
    assert plan_devices("0:1", rank=0, n_ranks=3, n_threads=2, n_devices=2).device is None
    assert [plan_devices("0:1", rank=r, n_ranks=5, n_threads=2, n_devices=2).device for r in (1, 2, 3, 4)] == \
        [0, 1, 0, 1]
    assert plan_devices(None, rank=1, n_ranks=3, n_threads=1, n_devices=2).device is None
    assert plan_devices("1", rank=0, n_ranks=1, n_threads=4, n_devices=2).device == 1
    with pytest.raises(InputError, match=r"device\(s\) \[3\] do not exist"):
        plan_devices("0:3", rank=2, n_ranks=3, n_threads=1, n_devices=2)
    with pytest.raises(InputError, match="several devices"):
        plan_devices("0,1", rank=1, n_ranks=3, n_threads=2, n_devices=2)
    with pytest.raises(InputError, match="sees no CUDA device"):
        plan_devices("", rank=1, n_ranks=3, n_threads=1, n_devices=0)


@pytest.mark.skipif(cupy_available(), reason="checks the refusal where there is no GPU")
def test_gpu_without_cuda_stops_before_writing(tmp_path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    options = relion_options(tmp_path / "job" / "run", with_relion_halves(folder))
    args = [venv_bin("tomodash"), "refine", "--ios", options.optimisation_set,
            "--ref", options.reference, "--o", options.output_root, "--auto_refine", "--split_random_halves",
            "--particle_diameter", "250", "--ini_high", "60", "--sym", "C6", "--gpu", "0"]
    proc = run_cmd(args, check=False, timeout=120)
    assert proc.returncode != 0
    assert "needs CuPy and a CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "job").exists() or not any((tmp_path / "job").iterdir())


def _reconstruct_slices(box: int, n: int, seed: int):
    """n random slices of a box (FFTW half layout), their CTF², rotations, dose cut-offs, halves."""
    rng = np.random.default_rng(seed)
    shape = (n, box, box // 2 + 1)
    spectra = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    weights = rng.uniform(0.0, 1.0, size=shape)
    rotations = euler_to_matrix(*(rng.uniform(-180, 180, (3, n)) * np.array([[1], [0.5], [1]])))
    # some slices exactly along the grid axes (the plane's normal along z: the nx == 0 rows)
    rotations[:3] = np.eye(3)
    max_freqs = np.where(rng.uniform(size=n) < 0.8, box // 2, rng.integers(box // 4, box // 2 + 1, n))
    targets = rng.integers(0, 2, n)
    return spectra, weights, rotations, max_freqs, targets


@pytest.mark.parametrize("box", [16, 15])
def test_reconstruct_array_backprojection_is_the_numba_kernels(box) -> None:
    """Reconstruct particle's slab insertion through the array module (the GPU's code path, run
    by numpy) against the numba kernel: every voxel of both half sums and of the CTF² sums.
    Same double-precision arithmetic per voxel; only the order of the per-voxel sums over the
    slices differs, hence 1e-12 of the largest value (a voxel missed or a wrong clipping rule
    is an O(1) difference)."""
    from processing.reconstruct._array_backproject import backproject_slices_array
    from processing.reconstruct._backproject import backproject_slices

    args = _reconstruct_slices(box, 120, seed=box)
    sums = {}
    for name, insert in (("numba", backproject_slices), ("array", backproject_slices_array)):
        data = np.zeros((2, box, box, box // 2 + 1), dtype=np.complex128)
        ctf2 = np.zeros(data.shape)
        insert(*args, data, ctf2)
        sums[name] = (data, ctf2)
    (data_n, ctf2_n), (data_a, ctf2_a) = sums["numba"], sums["array"]
    assert np.count_nonzero(ctf2_n) > 0.2 * ctf2_n.size
    np.testing.assert_allclose(data_a, data_n, rtol=0, atol=1e-12 * np.abs(data_n).max())
    np.testing.assert_allclose(ctf2_a, ctf2_n, rtol=0, atol=1e-12 * ctf2_n.max())


def test_reconstruct_gpu_device_of_each_process() -> None:
    from processing.jobs.reconstruct import process_device

    # Every process of Reconstruct particle backprojects (no idle leader): process r takes entry
    # r mod n of the list, or device r mod (devices) automatically.
    assert [process_device("0:1", rank=r, n_devices=2) for r in range(4)] == [0, 1, 0, 1]
    assert [process_device("", rank=r, n_devices=3) for r in range(4)] == [0, 1, 2, 0]
    assert process_device("1,0", rank=0, n_devices=2) == 1
    with pytest.raises(InputError, match="device 2 does not exist") as err:
        process_device("0:2", rank=1, n_devices=2)
    assert err.value.column == "other_args"
    with pytest.raises(InputError, match="sees no CUDA device"):
        process_device("", rank=0, n_devices=0)


@pytest.mark.skipif(cupy_available(), reason="checks the refusal where there is no GPU")
def test_reconstruct_gpu_without_cuda_stops_before_writing(test_dataset, tmp_path) -> None:
    out = tmp_path / "Reconstruct" / "job003"
    proc = run_cmd([venv_bin("tomodash"), "reconstruct", "--p", str(test_dataset / "particles.star"),
                    "--t", str(test_dataset / "tomograms.star"), "--o", f"{out}/", "--b", "32", "--bin", "3",
                    "--gpu", "0"], check=False, timeout=120)
    assert proc.returncode != 0
    assert "--gpu needs CuPy and a CUDA GPU" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())


# ---- on a GPU ------------------------------------------------------------------------------

@gpu
def test_gpu_gather_kernel_matches_the_numba_kernel(grid_and_points) -> None:
    import cupy

    grid, rot, kx, ky, _, _, _, power_weights = grid_and_points
    pw = power_weights.astype(np.float32)
    out, power = numba_gather(grid, rot, kx, ky, pw)
    values, power_gpu = CK.gather_points(cupy.asarray(grid), C, rot, PAD, cupy.asarray(kx, dtype=np.float32),
                                         cupy.asarray(ky, dtype=np.float32), cupy.asarray(pw))
    np.testing.assert_allclose(cupy.asnumpy(values), out, atol=2e-5)
    np.testing.assert_allclose(cupy.asnumpy(power_gpu), power, rtol=2e-5)


def test_device_arrays_are_seen_without_a_backend_switch(device_cupy) -> None:
    """A ``--gpu`` job puts its own arrays on a device and never calls ``set_backend``: its
    device arrays must still be recognised (they were not, and every GPU run handed them to
    numpy)."""
    from processing import backend

    cp = device_cupy
    assert backend.get_backend() == "numpy"
    a = cp.arange(3.0)
    assert backend.get_array_module(a) is cp and backend.get_array_module(np.zeros(1)) is np
    host = backend.to_host(a)
    assert type(host) is np.ndarray and host.tolist() == [0.0, 1.0, 2.0]


def test_the_host_stand_in_keeps_cupys_rules(device_cupy) -> None:
    """What the rehearsal relies on: host arrays refused where CuPy refuses them (and allowed
    where CuPy copies them), device arrays refused by numpy and by numba."""
    cp = device_cupy
    a, host = cp.arange(6, dtype=np.float64), np.arange(6.0)
    for mixed in (lambda: a + host, lambda: host * a, lambda: cp.maximum(a, host), lambda: np.asarray(a),
                  lambda: cp.ascontiguousarray(host)):
        with pytest.raises(TypeError):
            mixed()
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        a[:] = host
    a[:] = np.float64(2.0)
    a[:3] = np.array(1.0)                                          # 0-d: a scalar
    assert float(a.sum()) == 9.0
    with pytest.raises(numba.core.errors.TypingError):
        K.gather_points(a, 1, a, 1.0, a, a, a, a, a)
    b = cp.asarray(host)
    host[0] = 99.0                                                 # asarray copied it over
    assert float(b[0]) == 0.0 and isinstance(b[0], cp.ndarray) and isinstance(b.sum(), cp.ndarray)
    b[np.array([1, 2])] = np.array([5.0, 6.0])                     # advanced indices may be host data
    np.testing.assert_array_equal(cp.asnumpy(b[np.array([1, 2])]), [5.0, 6.0])
    assert isinstance(np.exp(b), cp.ndarray) and float(np.sum(b)) == 23.0
    assert cp.cuda.runtime.getDeviceCount() >= 1


def assert_gpu_iteration_is_the_cpus(tmp_path, case=CASES["demo"], *, cc: bool = False) -> None:
    """Iteration 1 of a RELION fixture on 2 CPU threads and with ``--gpu 0``: the same poses and
    maps (CUDA's float32 sums in another order: 1e-5 of the largest value)."""
    results = {}
    for name, gpu_ids in (("cpu", None), ("gpu", "0")):
        (tmp_path / name).mkdir()
        run, state = started_run(tmp_path / name, case, gpu=gpu_ids)
        assert run.device.on_gpu == (gpu_ids is not None)
        run.iterate(state, 1, cc=cc, final=False)
        results[name] = state
    cpu, gpu_state = results["cpu"], results["gpu"]
    np.testing.assert_allclose(np.array([p.angles for p in gpu_state.particles]),
                               np.array([p.angles for p in cpu.particles]), atol=1e-6)
    for h_cpu, h_gpu in zip(cpu.halves, gpu_state.halves):
        np.testing.assert_allclose(h_gpu.map, h_cpu.map, atol=1e-5 * np.abs(h_cpu.map).max())


def test_gpu_cross_correlation_iteration_matches_the_cpu_path(tmp_path, device_cupy) -> None:
    """A first iteration scored by cross-correlation (``--firstiter_cc``: the batched
    ``xp.matmul`` of the CC score) on RELION's demo, on the GPU against the CPU run. The
    likelihood iterations of RELION's fixtures are compared in test_refine_relion.py
    (test_an_iteration_on_the_gpu_is_the_cpus)."""
    assert_gpu_iteration_is_the_cpus(tmp_path, cc=True)


@gpu
def test_gpu_iteration_on_pseudo_subtomograms_matches_the_cpu_path(tmp_path, pseudo3d_case) -> None:
    """3D pseudo-subtomograms (the 3D gathers and insertions) on CUDA. Not rehearsed whole on the
    host: there the 3D gathers, as numpy array operations, take ~5 min for these 70 particles
    (test_3d_array_kernels_keep_to_the_device rehearses them)."""
    assert_gpu_iteration_is_the_cpus(tmp_path, pseudo3d_case)


@pytest.mark.skipif(cupy_available(), reason="checks the refusal where there is no GPU")
def test_launching_a_gpu_job_checks_this_machine_only_when_it_runs_here(tmp_path) -> None:
    """"Use GPU acceleration?" is refused at launch on a machine without CUDA when the job runs
    here; a queued job runs on a node whose GPUs it checks itself, so the launch only checks
    the device list's syntax and goes on to the inputs."""
    from processing.jobs.preflight import check_job_inputs
    from processing.jobs.refine3d_params import Refine3DParameters

    params = dict(in_optimisation="Reconstruct/job003/optimisation_set.star", fn_ref="Reconstruct/job003/merged.mrc",
                  sym_name="C6", particle_diameter=230, nr_threads=2, nr_mpi=3, use_gpu=True, gpu_ids="0:1")
    with pytest.raises(InputError, match="needs CuPy and a CUDA GPU") as local:
        check_job_inputs(Refine3DParameters(**params), root=tmp_path)
    assert local.value.column == "use_gpu"
    with pytest.raises(InputError) as queued:                    # past the GPU check: the missing inputs
        check_job_inputs(Refine3DParameters(**params, do_queue=True), root=tmp_path)
    assert "CUDA" not in str(queued.value) and "optimisation_set.star" in str(queued.value)
    with pytest.raises(InputError, match="'x' is not a device number"):
        check_job_inputs(Refine3DParameters(**{**params, "gpu_ids": "0:x"}, do_queue=True), root=tmp_path)


QUEUE_GPU_CHECK = r"""
from processing.jobs.refine3d_params import Refine3DParameters
from sessions import runner, slurm

running = Refine3DParameters.fields_by_tab()["Running"]
assert "qsub_extra1" in running and "qsub_extra2" not in running, running
field = Refine3DParameters.param["qsub_extra1"]
assert field.label == "Number of GPUs:" and field.default == "1", (field.label, field.default)
params = Refine3DParameters(use_gpu=True, gpu_ids="0:1", do_queue=True, nr_mpi=3, qsub_extra1="2")
options = params.to_job_options()
assert options["qsub_extra1"] == "2"
template = "#SBATCH --ntasks=XXXmpinodesXXX\n#SBATCH --gres=gpu:XXXextra1XXX\nXXXcommandXXX\n"
values = slurm.submission_values(slurm.QueueSettings(nr_mpi=3, extras=runner._qsub_extras(options)), "Refine3D/job004/")
script = slurm.render_template(template, values, [["tomodash", "refine", "--gpu", "0:1"]])
print(script)
"""


def test_queue_gpu_field_fills_the_submission_template() -> None:
    """A site's extra queue field (RELION_QSUB_EXTRA1 = "Number of GPUs:") is a field of the
    Running tab, saved in job.star, and fills XXXextra1XXX: a GPU job asks SLURM for its GPUs."""
    env = {"RELION_QSUB_EXTRA1": "Number of GPUs:", "RELION_QSUB_EXTRA1_DEFAULT": "1",
           "RELION_QSUB_EXTRA_COUNT": "3"}
    proc = subprocess.run([sys.executable, "-c", QUEUE_GPU_CHECK], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --gres=gpu:2" in proc.stdout and "tomodash refine --gpu 0:1" in proc.stdout


def test_gpu_reconstruct_gives_relions_maps(test_dataset, tmp_path, device_cupy) -> None:
    """Reconstruct particle with its backprojection on GPU 0 gives RELION's maps (the same
    tolerance as the CPU's, test_reconstruct_relion.py)."""
    from test_reconstruct_relion import reconstruct_in_process_is_relions

    reconstruct_in_process_is_relions(test_dataset, tmp_path, device=0)
