"""MRC reading/writing (processing.io.mrc) with RELION's header conventions."""
from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from processing.errors import InputError
from processing.io import (
    parse_image_reference,
    read_image,
    read_mrc,
    read_mrc_header,
    read_stack_slice,
    write_mrc,
)


@pytest.fixture
def volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((6, 8, 10)).astype(np.float32)  # [z, y, x]


def test_volume_float32_round_trip(tmp_path, volume):
    path = tmp_path / "map.mrc"
    write_mrc(path, volume, 2.5)
    out = read_mrc(path)
    np.testing.assert_array_equal(out.data, volume)
    assert out.data.dtype == np.float32 and out.pixel_size == pytest.approx(2.5)
    with mrcfile.open(path) as mrc:
        h = mrc.header
        assert int(h.mode) == 2
        assert (int(h.nx), int(h.ny), int(h.nz)) == (10, 8, 6)
        assert (int(h.mx), int(h.my), int(h.mz)) == (10, 8, 6)
        np.testing.assert_allclose([h.cella.x, h.cella.y, h.cella.z], [25.0, 20.0, 15.0])
        np.testing.assert_allclose([h.origin.x, h.origin.y, h.origin.z], 0.0)
        assert (int(h.mapc), int(h.mapr), int(h.maps)) == (1, 2, 3)
        assert int(h.ispg) == 1


def test_float16_round_trip(tmp_path, volume):
    path = tmp_path / "map16.mrc"
    write_mrc(path, volume, 1.35, float16=True)
    out = read_mrc(path)
    assert out.data.dtype == np.float16
    with mrcfile.open(path) as mrc:
        assert int(mrc.header.mode) == 12
    # float16 keeps ~3 significant digits
    np.testing.assert_allclose(out.data.astype(np.float32), volume, rtol=1e-3, atol=1e-3)
    assert out.pixel_size == pytest.approx(1.35)


def test_stack_conventions_and_slices(tmp_path, volume):
    path = tmp_path / "particle_stack2d.mrcs"
    write_mrc(path, volume, 4.0)  # .mrcs => stack
    with mrcfile.open(path) as mrc:
        h = mrc.header
        assert int(h.mz) == 1 and float(h.cella.z) == 1.0 and int(h.ispg) == 0
        assert float(h.cella.x) == pytest.approx(40.0)
    out = read_mrc(path, mmap=True)
    assert out.data.shape == (6, 8, 10) and out.pixel_size == pytest.approx(4.0)
    np.testing.assert_array_equal(read_stack_slice(path, 1), volume[0])
    np.testing.assert_array_equal(read_stack_slice(path, 6), volume[5])
    image = read_image(f"3@{path.name}", root=tmp_path)
    np.testing.assert_array_equal(image.data, volume[2])
    assert image.pixel_size == pytest.approx(4.0)
    with pytest.raises(InputError, match="image 7@ requested but the stack holds 6"):
        read_stack_slice(path, 7)
    header = read_mrc_header(path)
    assert header.shape == (6, 8, 10) and header.image_size == (10, 8)


def test_single_image(tmp_path, volume):
    path = tmp_path / "tilt.mrc"
    write_mrc(path, volume[0], 1.35)
    header = read_mrc_header(path)
    assert header.shape == (8, 10) and header.image_size == (10, 8)
    assert header.pixel_size == pytest.approx(1.35)


def test_image_references():
    assert parse_image_reference("12@Extract/job002/a.mrcs") == (12, "Extract/job002/a.mrcs")
    assert parse_image_reference("Sub/1_stack2d.mrcs") == (None, "Sub/1_stack2d.mrcs")
    with pytest.raises(InputError, match="start at 1"):
        parse_image_reference("0@a.mrcs")
    with pytest.raises(InputError, match="integer"):
        parse_image_reference("x@a.mrcs")


def test_bad_mrc_files(tmp_path, volume):
    with pytest.raises(InputError) as err:
        read_mrc(tmp_path / "missing.mrc")
    assert "missing.mrc" in str(err.value) and "not found" in str(err.value)

    good = tmp_path / "good.mrc"
    write_mrc(good, volume, 1.0)
    truncated = tmp_path / "truncated.mrc"
    truncated.write_bytes(good.read_bytes()[:-100])
    for mmap in (False, True):
        with pytest.raises(InputError) as err:
            read_mrc(truncated, mmap=mmap)
        assert "truncated.mrc" in str(err.value) and "corrupt or truncated" in str(err.value)

    garbage = tmp_path / "garbage.mrcs"
    garbage.write_bytes(b"not an mrc file" * 5)
    with pytest.raises(InputError, match="garbage.mrcs.*corrupt or truncated"):
        read_mrc_header(garbage)
    with pytest.raises(InputError, match="garbage.mrcs"):
        read_stack_slice(garbage, 1)


def test_atomic_mrc_write_leaves_no_temp_files(tmp_path, volume):
    path = tmp_path / "m.mrc"
    write_mrc(path, volume, 1.0)
    write_mrc(path, volume * 2, 1.0)  # overwrite
    np.testing.assert_array_equal(read_mrc(path).data, volume * 2)
    assert [p.name for p in tmp_path.iterdir()] == ["m.mrc"]


# ---- bad files: every problem an InputError naming the file -------------------------------------

def _broken(path, kind: str) -> None:
    """Write ``path`` as a broken MRC of the given kind (from a valid 16 x 16 image)."""
    write_mrc(path, np.ones((16, 16), np.float32), 1.0)
    data = bytearray(path.read_bytes())
    if kind == "truncated":
        path.write_bytes(bytes(data[:1024 + 100]))
    elif kind == "header_only":
        path.write_bytes(bytes(data[:1024]))
    elif kind == "mode99":
        data[12:16] = np.int32(99).tobytes()
        path.write_bytes(bytes(data))
    elif kind == "garbage":
        path.write_bytes(b"not an MRC file" * 4)
    elif kind == "complex":
        path.unlink()
        with mrcfile.new(path) as mrc:
            mrc.set_data(np.ones((16, 16), np.complex64))


@pytest.mark.parametrize("kind", ["truncated", "header_only", "mode99", "garbage", "complex"])
def test_bad_files_are_refused_naming_the_file(tmp_path, kind):
    from processing.io import check_mrc_file, map_image

    path = tmp_path / f"{kind}.mrc"
    _broken(path, kind)
    for read in (check_mrc_file, read_mrc, lambda p: map_image(p)[0].close(), lambda p: read_stack_slice(p, 1)):
        with pytest.raises(InputError) as info:
            read(path)
        assert str(path) in str(info.value)
    if kind in ("mode99", "complex"):
        with pytest.raises(InputError, match="mode"):
            read_mrc(path)


def test_non_finite_data_refused_where_read(tmp_path):
    from processing.io import map_image

    stack = np.zeros((3, 8, 8), np.float32)
    stack[1, 2, 3] = np.inf
    path = tmp_path / "s.mrcs"
    with pytest.warns(RuntimeWarning):  # mrcfile warns when it writes the header statistics
        write_mrc(path, stack, 1.0)
    with pytest.raises(InputError, match=r"slice 2 .*NaN or infinite"):
        read_mrc(path)
    assert read_mrc(path, finite=False).data.shape == (3, 8, 8)
    with pytest.raises(InputError, match="image 2"):
        read_stack_slice(path, 2)
    np.testing.assert_array_equal(read_stack_slice(path, 1), 0)
    image = tmp_path / "i.mrc"
    write_mrc(image, np.zeros((8, 8), np.float32), 1.0)
    with pytest.raises(InputError, match="expected 4 x 8 px"):
        map_image(image, shape=(8, 4), what="tilt 1")
    handle, data = map_image(image, shape=(8, 8))
    assert data.shape == (8, 8)
    handle.close()
