"""CTF and dose weighting against RELION 5 measurements (tests/data/ctf, spec 2.6, 2.7, 7)."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from processing.fourier.ctf import CtfParameters, ctf_value, depth_defocus_offset, dose_weight
from processing.geometry.projection import projection_depth, tilt_projection_matrices

DATA = Path(__file__).parent / "data" / "ctf"


def _params(row, *, full: bool) -> CtfParameters:
    return CtfParameters(
        defocus_u=row.defocusU_A, defocus_v=row.defocusV_A, defocus_angle=row.defocus_angle_deg,
        voltage=row.voltage_kV, cs=row.Cs_mm, amplitude_contrast=row.Q0,
        phase_shift=row.phase_shift_deg,
        bfactor=row.bfactor_A2 if full else 0.0, scale=row.scale if full else 1.0,
    )


@pytest.fixture(scope="module")
def tables():
    return pd.read_csv(DATA / "ctf_params.csv").set_index("set"), pd.read_csv(DATA / "ctf_values.csv")


def test_ctf_matches_relion_grid(tables):
    params, values = tables
    assert set(values.set) == {"S1", "S2", "S3", "S4", "S5"}
    for name, grp in values.groupby("set"):
        row = params.loc[name]
        full = ctf_value(grp.kx_invA.values, grp.ky_invA.values, _params(row, full=True))
        bare = ctf_value(grp.kx_invA.values, grp.ky_invA.values, _params(row, full=False))
        # The formula column is spec 2.6 in float64 (printed to 9 digits): 1e-6.
        np.testing.assert_allclose(full, grp.ctf_formula.values, rtol=0, atol=1e-6)
        # relion_project (full formula incl. B and scale), float32 images: 1e-6.
        proj = grp.ctf_relion_project.values
        ok = ~np.isnan(proj)
        assert ok.sum() > 400
        np.testing.assert_allclose(full[ok], proj[ok], rtol=0, atol=1e-6)
        # relion_ctf_toolbox --simulate always uses B = 0, scale = 1; float32 output: 5e-7.
        np.testing.assert_allclose(bare, grp.ctf_relion_simulate.values, rtol=0, atol=5e-7)


def test_ctf_unit_case():
    """RELION's tests/ctf.cpp: getCTF(10, 10) = 0.59154."""
    p = CtfParameters(10000, 12000, 90, 300, 2.7, 0.1)
    assert ctf_value(10.0, 10.0, p) == pytest.approx(0.5915429, abs=1e-6)


def test_ctf_conventions():
    # +Q0 at k = 0 for underfocus; U lies along kx at angle 0.
    p = CtfParameters(20000, 10000, 0.0, 300, 2.7, 0.1)
    assert ctf_value(0.0, 0.0, p) == pytest.approx(0.1, abs=1e-12)
    pu = CtfParameters(20000, 20000, 0.0, 300, 2.7, 0.1)
    k = 0.05
    assert ctf_value(k, 0.0, p) == pytest.approx(ctf_value(k, 0.0, pu), abs=1e-12)


def test_dose_weight_spec_values():
    k, dose = 0.1, 10.0
    expected = np.exp(-dose / (2 * (0.245 * k ** -1.665 + 2.81)))
    assert dose_weight(k, dose) == pytest.approx(expected, rel=1e-12)
    assert dose_weight(0.0, dose) == 1.0
    assert dose_weight(k, dose, bfactor_per_dose=4.0) == pytest.approx(np.exp(-4 * dose * k * k / 4))
    # Inside the CTF the dose envelope replaces the B-factor envelope.
    p = CtfParameters(15000, 15000, 0.0, 300, 2.7, 0.1, bfactor=300.0)
    undamped = ctf_value(k, 0.0, CtfParameters(15000, 15000, 0.0, 300, 2.7, 0.1))
    assert ctf_value(k, 0.0, p, dose=dose) == pytest.approx(undamped * expected, rel=1e-12)


def test_depth_defocus():
    """A particle +100 ts-px along z from the centre, untilted frame: dDefocus = hand*px*slope*100."""
    size = (400, 400, 200)
    P = tilt_projection_matrices([0.0], [0.0], [0.0], [0.0], [0.0], tomogram_size=size,
                                 image_size=(400, 400), pixel_size=1.35)
    centre = np.array([200.0, 200.0, 100.0])
    dz = projection_depth(P, centre + [0, 0, 100]) - projection_depth(P, centre)
    assert dz[0, 0] == pytest.approx(100.0)
    off = depth_defocus_offset(dz[0, 0], hand=-1, pixel_size=1.35, defocus_slope=0.9)
    assert off == pytest.approx(-1 * 1.35 * 0.9 * 100)
    p = CtfParameters(15000, 14000, 30.0)
    shifted = CtfParameters(15000 + off, 14000 + off, 30.0)
    kx, ky = np.meshgrid(np.linspace(-0.2, 0.2, 9), np.linspace(-0.2, 0.2, 9))
    np.testing.assert_allclose(ctf_value(kx, ky, p, defocus_offset=off), ctf_value(kx, ky, shifted), atol=1e-12)


def test_frequency_grid_puts_the_nyquist_row_where_asked() -> None:
    """numpy's row box//2 is -1/(2 px); RELION's FFTW images (CTF::getFftwImage) have +1/(2 px).
    Nothing else moves, and an odd box has no Nyquist row."""
    from processing.fourier.ctf import fourier_frequency_grid

    kx, ky = fourier_frequency_grid(24, 2.0)
    kx_r, ky_r = fourier_frequency_grid(24, 2.0, positive_nyquist_row=True)
    assert ky[12, 0] == -0.25 and ky_r[12, 0] == 0.25
    np.testing.assert_array_equal(np.delete(ky_r, 12, axis=0), np.delete(ky, 12, axis=0))
    np.testing.assert_array_equal(kx_r, kx)
    for flag in (False, True):
        np.testing.assert_array_equal(fourier_frequency_grid(23, 2.0, positive_nyquist_row=flag)[1],
                                      fourier_frequency_grid(23, 2.0)[1])
