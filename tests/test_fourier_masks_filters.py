"""Masks, filters and reconstruct_particle helpers (spec 4.2, 4.3, 5.5, 5.10)."""
import numpy as np
import pytest

from processing.fourier import filters, masks
from processing.fourier.backprojector import ctf_divide, divide_by_gridding_sinc2, taper
from processing.fourier.fft import half_radius, rfft3_centered


def test_soft_sphere_and_circle():
    m = masks.soft_sphere_mask(32, radius=10, edge_width=4)
    r = masks.radius_grid((32, 32, 32))
    assert np.all(m[r <= 10] == 1) and np.all(m[r >= 14] == 0)
    sel = (r > 10) & (r < 14)
    np.testing.assert_allclose(m[sel], 0.5 + 0.5 * np.cos(np.pi * (r[sel] - 10) / 4))
    c = masks.soft_circle_mask(32, radius=10, edge_width=4)
    np.testing.assert_array_equal(c, m[16])
    with pytest.raises(ValueError, match="radius"):
        masks.soft_sphere_mask(8, radius=-1)


def test_soft_mask_outside_background():
    rng = np.random.default_rng(0)
    imgs = rng.standard_normal((3, 24, 24)) + np.array([1.0, -2.0, 5.0])[:, None, None]
    out = masks.soft_mask_outside(imgs, radius=6, edge_width=5, ndim=2)
    r = masks.radius_grid((24, 24))
    np.testing.assert_array_equal(out[:, r < 6], imgs[:, r < 6])
    t = 1 - masks.soft_circle_mask(24, radius=6, edge_width=5)
    bg = (imgs * t).sum(axis=(1, 2)) / t.sum()
    for k in range(3):
        np.testing.assert_allclose(out[k][r >= 11], bg[k])
    assert abs(bg[2] - 5.0) < 0.1


def test_flatten_solvent():
    v = np.ones((16, 16, 16))
    out = masks.flatten_solvent(v, radius=4, edge_width=5)
    np.testing.assert_allclose(out, masks.soft_sphere_mask(16, radius=4, edge_width=5))
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        masks.flatten_solvent(v, mask=2 * v)


def test_initial_lowpass_form():
    n, px, res = 32, 2.0, 16.0
    w = filters.initial_lowpass_weights(n, resolution=res, pixel_size=px)
    r = half_radius(n, ndim=3)
    r0 = n * px / res - 1  # 3 shells
    assert np.all(w[r < r0] == 1) and np.all(w[r > r0 + 2] == 0)
    sel = (r >= r0) & (r <= r0 + 2)
    np.testing.assert_allclose(w[sel], 0.5 - 0.5 * np.cos(np.pi * (r0 + 2 - r[sel]) / 2))


def test_lowpass_filters_remove_high_frequencies():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((24, 24, 24))
    out = filters.lowpass_filter(v, radius=5, edge_width=2)
    f = rfft3_centered(out)
    r = half_radius(24, ndim=3)
    assert np.abs(f[r > 6]).max() < 1e-12
    np.testing.assert_allclose(f[r < 4], rfft3_centered(v)[r < 4], atol=1e-12)
    out2 = filters.lowpass_filter_relion(v, resolution=8.0, pixel_size=2.0)  # shell 6
    assert np.abs(rfft3_centered(out2)[r > 7]).max() < 1e-12


def test_ctf_divide_and_taper():
    rng = np.random.default_rng(2)
    v = rng.standard_normal((16, 16, 16))
    ones = np.ones((16, 16, 9))
    np.testing.assert_allclose(ctf_divide(v, ones), v, atol=1e-12)
    np.testing.assert_allclose(ctf_divide(v, 4 * ones, snr=1.0), v / 5, atol=1e-12)
    # Heuristic floor: weights below 1/1000 of the shell mean are raised to it.
    w = ones.copy()
    w[0, 0, 3] = 1e-9
    f = rfft3_centered(ctf_divide(v, w))
    assert abs(f[0, 0, 3]) == pytest.approx(abs(rfft3_centered(v)[0, 0, 3]) / 1e-3, rel=0.2)
    t = taper(v, width=3)
    r = masks.radius_grid(v.shape)
    assert np.all(t[r >= 8] == 0)
    inner = r < 5
    np.testing.assert_allclose(t[inner] - v[inner], (t[inner] - v[inner])[0])
    g = divide_by_gridding_sinc2(np.ones((16, 16, 16)))
    assert g[8, 8, 8] == 1.0 and g[0, 0, 0] > 1.0
