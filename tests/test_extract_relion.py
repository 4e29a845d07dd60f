"""Extract subtomos reproduces relion_tomo_subtomo value for value: RELION 5's own 2D stacks
and 3D pseudo-subtomograms (data, CTF² and multiplicity volumes) of the TEST dataset, at two
binnings and without the CTF (fixture: tests/data/extract_relion, ORIGIN.md there)."""
from __future__ import annotations

from pathlib import Path

import mrcfile
import numpy as np
import pytest

from processing.io import read_star

from conftest import run_cmd, venv_bin

RELION = Path(__file__).parent / "data" / "extract_relion"

#: fixture folder -> (binning, box, crop, extra flags)
CASES = {
    "bin2_2d": (2, 32, 24, ["--stack2d"]),
    "bin2_3d": (2, 32, 24, []),
    "bin3_2d": (3, 32, 20, ["--stack2d"]),
    "bin3_3d": (3, 32, 20, []),
    "bin2_noctf_2d": (2, 32, 24, ["--stack2d", "--no_ctf"]),
}

#: float32 rounding: RELION's and tomodash's arithmetic differ in order, measured at most
#: 2.4e-6 of the data's standard deviation (3e-7 of the weights' maximum). The rules this
#: guards gave 1e-2 and more: the Nyquist row read as +n/2 (16 % rms in the 2D stacks), the
#: missing scale² of the 3D insertion (x1.8), the missing dose cut-off (multiplicity).
TOLERANCE = 1e-5


@pytest.fixture(scope="module", params=list(CASES))
def extraction(request, test_dataset, tmp_path_factory) -> tuple[Path, Path]:
    """(RELION's folder, tomodash's job folder) of one case."""
    binning, box, crop, flags = CASES[request.param]
    out = tmp_path_factory.mktemp(request.param) / "Extract" / "job002"
    run_cmd([venv_bin("tomodash"), "extract", "--i", str(test_dataset / "optimisation_set.star"), "--o", f"{out}/",
             "--b", str(box), "--crop", str(crop), "--bin", str(binning), "--j", "1", *flags])
    return RELION / request.param, out


def test_volumes_and_stacks_are_relions(extraction) -> None:
    relion, ours = extraction
    files = sorted(p for p in relion.rglob("*") if p.suffix in (".mrc", ".mrcs"))
    assert files
    for theirs in files:
        mine = ours / "Subtomograms" / theirs.relative_to(relion)
        a = mrcfile.read(mine).astype(np.float64)
        b = mrcfile.read(theirs).astype(np.float64)
        assert a.shape == b.shape, theirs
        if theirs.name.endswith("_weights.mrc"):
            # CTF² (z < crop) and multiplicity (z >= crop), FFTW half layout.
            assert np.abs(a - b).max() <= TOLERANCE * np.abs(b).max(), theirs
        else:
            assert np.abs(a - b).max() <= TOLERANCE * b.std(), theirs
        with mrcfile.open(mine, header_only=True) as m, mrcfile.open(theirs, header_only=True) as t:
            assert float(m.voxel_size.x) == pytest.approx(float(t.voxel_size.x), rel=1e-4)


def test_star_tables_are_relions(extraction) -> None:
    relion, ours = extraction
    theirs, mine = read_star(relion / "particles.star"), read_star(ours / "particles.star")
    assert int(mine["general"]["rlnTomoSubTomosAre2DStacks"]) == int(theirs["general"]["rlnTomoSubTomosAre2DStacks"])
    for table in ("optics", "particles"):
        a, b = mine[table], theirs[table]
        assert list(a.columns) == list(b.columns), table
        for column in b.columns:
            if column in ("rlnImageName", "rlnCtfImage"):
                # RELION's paths start with its own output folder.
                assert [Path(x).parts[-2:] for x in a[column]] == [Path(x).parts[-2:] for x in b[column]]
            elif b[column].dtype.kind in "if":
                # RELION prints six decimals and computes the re-centred coordinates in its own
                # order of operations: measured 2e-6 Å apart.
                np.testing.assert_allclose(a[column].to_numpy(float), b[column].to_numpy(float), rtol=1e-6,
                                           atol=1e-5, err_msg=f"{table}.{column}")
            else:
                assert list(a[column].astype(str)) == list(b[column].astype(str)), f"{table}.{column}"
