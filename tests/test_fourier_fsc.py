"""FSC, resolution and phase randomisation against relion_postprocess (tests/data/fsc)."""
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import starfile

from processing.fourier import fsc as F
from processing.fourier.masks import soft_sphere_mask

DATA = Path(__file__).parent / "data" / "fsc"


@pytest.fixture(scope="module")
def maps():
    h1 = mrcfile.read(DATA / "run_half1_class001_unfil.mrc")
    h2 = mrcfile.read(DATA / "run_half2_class001_unfil.mrc")
    mask = mrcfile.read(DATA / "mask_sphere_r17_edge6.mrc")
    return h1, h2, mask


def _table(sub):
    return starfile.read(DATA / sub / "postprocess.star")["fsc"]


def test_unmasked_fsc_and_resolution(maps):
    h1, h2, _ = maps
    t = _table("unmasked")
    unmasked = F.fsc(h1, h2)
    # RELION prints 6 decimals; the definition reproduces it to 2e-6 -> tolerance 1e-5.
    np.testing.assert_allclose(unmasked, t.rlnFourierShellCorrelationUnmaskedMaps, atol=1e-5)
    assert F.resolution_from_fsc(unmasked, box_size=48, pixel_size=2.0) == pytest.approx(8.727273, abs=5e-7)  # 96/11
    assert F.resolution_shell(unmasked) == 11


def test_masked_fsc_and_the_correction_rule(maps):
    """The masked FSC and, from RELION's own masked and randomised columns, the corrected curve,
    the randomisation shell and the mask fraction (the whole of relion_postprocess, random
    phases included, is followed in test_postprocess.py)."""
    h1, h2, mask = maps
    t = _table("masked")
    np.testing.assert_allclose(F.fsc(h1, h2, mask=mask), t.rlnFourierShellCorrelationMaskedMaps, atol=1e-5)
    randomize_at = F.randomize_from_shell(F.fsc(h1, h2))
    assert randomize_at == 9
    assert F.particle_mask_fraction(mask) == pytest.approx(1.577471, abs=1e-6)
    masked = t.rlnFourierShellCorrelationMaskedMaps.values
    randomized = t.rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps.values
    c = F.corrected_fsc(masked, randomized, randomize_at=randomize_at)
    np.testing.assert_allclose(c, t.rlnFourierShellCorrelationCorrected, atol=1e-5)     # print precision
    np.testing.assert_allclose(F.particle_mask_fraction_fsc(t.rlnFourierShellCorrelationUnmaskedMaps.values, 1.577471),
                               t.rlnFourierShellCorrelationParticleMaskFraction, atol=1e-5)
    assert F.resolution_from_fsc(c, box_size=48, pixel_size=2.0) == 8.0
    # relion_refine's variant: 0 where the randomised curve is above the masked one, from
    # randomize_at + 2 on (relion_postprocess keeps the negative values there)
    refine = F.corrected_fsc(masked, randomized, randomize_at=randomize_at, zero_where_noise_exceeds=True)
    beyond = np.arange(masked.size) >= randomize_at + 2
    noisier = beyond & (randomized > masked)
    assert noisier.any()
    np.testing.assert_array_equal(refine[noisier], 0.0)
    np.testing.assert_array_equal(refine[~noisier], c[~noisier])


def test_fsc_identical_and_mask_fixture(maps):
    h1, _, mask = maps
    np.testing.assert_allclose(F.fsc(h1, h1), 1.0, atol=1e-12)
    # Our soft sphere reproduces the fixture's mask (float32 file).
    np.testing.assert_allclose(soft_sphere_mask(48, radius=17, edge_width=6), mask, atol=1e-6)


def test_resolution_rules():
    curve = np.array([1.0, 0.9, 0.5, 0.2, 0.1, 0.3])
    assert F.resolution_shell(curve) == 3
    assert F.resolution_shell(curve, threshold=0.5) == 2  # 0.5 is not < 0.5
    assert F.resolution_shell(np.ones(5)) == 4
    assert F.resolution_from_fsc([1.0, 0.1], box_size=10, pixel_size=1.0) == np.inf
    assert F.randomize_from_shell([1.0, 0.9, 0.79, 0.5]) == 2
