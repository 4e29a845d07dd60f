"""FFT backend, RELION normalisation, centring, cropping and shells (spec 2.5)."""
import numpy as np
import pytest

from processing import backend
from processing.fourier import fft as F


def test_backend_numpy_default():
    assert backend.get_backend() == "numpy"
    assert backend.get_array_module() is np
    assert backend.get_array_module(np.zeros(2)) is np
    assert isinstance(backend.to_host([1, 2]), np.ndarray)
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.set_backend("torch")  # type: ignore[arg-type]
    if not backend.cupy_available():
        with pytest.raises(RuntimeError, match="cupy"):
            backend.set_backend("cupy")
    assert backend.get_backend() == "numpy"


def test_workers():
    old = F.get_fft_workers()
    F.set_fft_workers(1)
    assert F.get_fft_workers() == 1
    with pytest.raises(ValueError):
        F.set_fft_workers(0)
    F.set_fft_workers(old)


@pytest.mark.parametrize("n", [16, 15])
def test_relion_normalisation_and_centring(n):
    rng = np.random.default_rng(0)
    img = rng.standard_normal((3, n, n))
    f = F.rfft2_centered(img)
    assert f.shape == (3, n, n // 2 + 1)
    np.testing.assert_allclose(f[:, 0, 0].real, img.mean(axis=(1, 2)))  # forward / N^2
    np.testing.assert_allclose(F.irfft2_centered(f, n), img, atol=1e-12)
    # A delta at the box centre has a flat, real transform of value 1/N^2.
    d = np.zeros((n, n, n))
    d[n // 2, n // 2, n // 2] = 1.0
    np.testing.assert_allclose(F.rfft3_centered(d), 1.0 / n**3, atol=1e-15)


def test_checkerboard_equals_centring_for_even_boxes():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((8, 8, 8))
    a = F.rfft3_centered(v)
    b = F.rfftn(v, ndim=3) * F.checkerboard(8, ndim=3)
    np.testing.assert_allclose(a, b, atol=1e-14)


def test_crop_and_pad_half():
    rng = np.random.default_rng(2)
    v = rng.standard_normal((16, 16, 16))
    f = F.rfft3_centered(v)
    small = F.crop_half(f, 8, ndim=3)
    assert small.shape == (8, 8, 5)
    binned = F.irfft3_centered(small, 8)
    assert binned.mean() == pytest.approx(v.mean())  # grey scale kept
    back = F.pad_half(small, 16, ndim=3)
    assert back.shape == f.shape
    np.testing.assert_array_equal(F.crop_half(back, 8, ndim=3), small)
    img = rng.standard_normal((2, 12, 12))
    g = F.rfft2_centered(img)
    np.testing.assert_array_equal(F.crop_half(F.pad_half(g, 20, ndim=2), 12, ndim=2), g)
    with pytest.raises(ValueError):
        F.crop_half(g, 14, ndim=2)


def test_shells_and_radial_average():
    sh = F.shell_index(8, ndim=2)
    assert sh.shape == (8, 5)
    assert sh[0, 0] == 0 and sh[0, 4] == 4 and sh[4, 0] == 4 and sh[7, 1] == 1  # (ky=-1,kx=1): 1.41
    assert sh[2, 1] == 2  # sqrt(5) = 2.24
    ky, kx = F.half_frequencies(8, ndim=2)
    assert ky[4, 0] == 4 and ky[5, 0] == -3  # Nyquist row counts as +N/2
    vals = F.half_radius(8, ndim=2)
    avg = F.radial_average(vals, sh, n_shells=5)
    assert avg[0] == 0 and avg[4] == pytest.approx(vals[sh == 4].mean())
    s3 = F.shell_index(10, ndim=3)
    assert s3.shape == (10, 10, 6) and s3.max() == int(np.floor(np.sqrt(75) + 0.5))


@pytest.mark.parametrize("n, rows, n_columns", [(24, [0, 1, 2, 3, -4, -3, -2, -1], 5), (15, [0, 1, 2, -2, -1], 3),
                                                 (12, list(range(12)), 7)])
def test_cropped_transform_is_the_crop_of_the_whole_transform(n, rows, n_columns):
    # Even boxes take the sign route, odd ones the shift; a crop to the whole box keeps everything.
    rng = np.random.default_rng(3)
    img = rng.standard_normal((4, n, n))
    index = np.mod(rows, n)
    whole = F.rfft2_centered(img)[:, index, :n_columns]
    cropped = F.rfft2_centered_cropped(img, index, n_columns)
    assert cropped.shape == (4, len(rows), n_columns)
    np.testing.assert_allclose(cropped, whole, rtol=0, atol=1e-15 * np.abs(whole).max() * n)
