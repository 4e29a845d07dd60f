"""STAR reading/writing (processing.io.star) and atomic writes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from processing.errors import InputError
from processing.io import (
    atomic_write,
    bool_column,
    list_value,
    numeric_column,
    read_star,
    read_star_block,
    require_columns,
    string_column,
    vector_column,
    write_star,
)

DATA = Path(__file__).parent / "data" / "io"
TS01 = DATA / "tiltseries" / "tilt_series_metadata" / "tilt_series" / "220728_TS_01.star"


def _blocks() -> dict:
    particles = pd.DataFrame(
        {
            "rlnTomoName": ["01", "TS 2", ""],
            "rlnCenteredCoordinateXAngst": [1.5, -2.0, 3.25e-9],
            "rlnOpticsGroup": [1, 2, 3],
            "rlnIsFlipped": [True, False, True],
            "rlnTomoVisibleFrames": [np.array([1, 0, 1]), np.array([1, 1, 1]), np.array([], dtype=int)],
            "rlnTomoProjX": [np.array([0.0814842382114, -0.996590673923, 0.0129349948257, 3618.28940437])] * 3,
        }
    )
    return {
        "general": {"rlnTomoSubTomosAre2DStacks": True, "rlnComment": "two words"},
        "optics": pd.DataFrame({"rlnOpticsGroup": [1], "rlnVoltage": [300.0]}),
        "particles": particles,
    }


def test_round_trip_multiblock_vectors_booleans(tmp_path):
    path = tmp_path / "multi.star"
    write_star(path, _blocks())
    text = path.read_text()
    # RELION dialect: version line before each block, numbered labels, vectors as one token.
    assert text.count("# version 50001") == 3
    assert "_rlnTomoName #1" in text
    assert "[0.0814842382114,-0.996590673923,0.0129349948257,3618.28940437]" in text
    assert "[1,0,1]" in text and "[]" in text
    assert '"TS 2"' in text and '""' in text

    blocks = read_star(path)
    assert list(blocks) == ["general", "optics", "particles"]  # order preserved
    assert blocks["general"] == {"rlnTomoSubTomosAre2DStacks": 1, "rlnComment": "two words"}
    df = blocks["particles"]
    assert df["rlnTomoName"].tolist() == ["01", "TS 2", ""]  # names stay strings
    np.testing.assert_array_equal(df["rlnCenteredCoordinateXAngst"], [1.5, -2.0, 3.25e-9])
    assert bool_column(df, "rlnIsFlipped").tolist() == [True, False, True]
    frames = vector_column(df, "rlnTomoVisibleFrames", dtype=np.int64)
    assert [f.tolist() for f in frames] == [[1, 0, 1], [1, 1, 1], []]
    proj = vector_column(df, "rlnTomoProjX", length=4)
    np.testing.assert_allclose(proj[0], [0.0814842382114, -0.996590673923, 0.0129349948257, 3618.28940437],
                               rtol=1e-12)
    # write again: identical text (stable formatting)
    write_star(tmp_path / "again.star", blocks)
    assert (tmp_path / "again.star").read_text() == text


def test_version_option_and_empty_loop(tmp_path):
    path = tmp_path / "v.star"
    empty = pd.DataFrame({"rlnA": pd.Series([], dtype=float), "rlnB": pd.Series([], dtype=float)})
    write_star(path, {"empty": empty, "after": pd.DataFrame({"rlnA": [1.0]})}, version=30001)
    assert "# version 30001" in path.read_text()
    blocks = read_star(path)
    assert list(blocks["empty"].columns) == ["rlnA", "rlnB"] and len(blocks["empty"]) == 0
    assert blocks["after"]["rlnA"].tolist() == [1.0]


def test_read_relion_fixture_vectors():
    blocks = read_star(TS01)
    df = blocks["220728_TS_01"]
    assert df.shape == (41, 29)
    w = vector_column(df, "rlnTomoProjW", length=4)
    assert all(v.tolist() == [0, 0, 0, 1] for v in w)
    assert numeric_column(df, "rlnMicrographPreExposure")[1] == 3.0
    assert string_column(df, "rlnMicrographName")[0] == "MotionCorr/job002/frames/TS_01_000_0_0.mrc"


def test_read_star_block_kinds(tmp_path):
    path = tmp_path / "b.star"
    write_star(path, _blocks())
    assert isinstance(read_star_block(path, "optics", loop=True), pd.DataFrame)
    with pytest.raises(InputError, match="data_model_general not found"):
        read_star_block(path, "model_general")
    with pytest.raises(InputError, match="expected a loop_ table"):
        read_star_block(path, "general", loop=True)


def test_missing_file(tmp_path):
    with pytest.raises(InputError) as err:
        read_star(tmp_path / "nope.star")
    assert "nope.star" in str(err.value) and "not found" in str(err.value)


def test_missing_column_and_non_numeric_value(tmp_path):
    path = tmp_path / "bad_values.star"
    df = pd.DataFrame({"rlnTomoName": ["a", "b", "c"], "rlnDefocusU": ["1000", "12x0", "3000"]})
    write_star(path, {"particles": df})
    table = read_star(path)["particles"]
    with pytest.raises(InputError) as err:
        require_columns(table, ["rlnTomoName", "rlnVoltage"], file=path, table="particles")
    message = str(err.value)
    assert "bad_values.star" in message and "data_particles" in message and "rlnVoltage" in message
    with pytest.raises(InputError) as err:
        numeric_column(table, "rlnDefocusU", file=path, table="particles")
    message = str(err.value)
    for part in ("bad_values.star", "data_particles", "rlnDefocusU", "row 2", "12x0"):
        assert part in message
    assert err.value.row == 2 and err.value.column == "rlnDefocusU"
    # defaults for optional columns
    np.testing.assert_array_equal(numeric_column(table, "rlnCtfScalefactor", default=1.0), [1, 1, 1])
    with pytest.raises(InputError, match="row 1.*expected an integer|expected an integer"):
        numeric_column(pd.DataFrame({"rlnX": [1.5]}), "rlnX", integer=True)


def test_list_value_types(tmp_path):
    block = {"rlnA": 1, "rlnB": "x", "rlnC": 2.5}
    assert list_value(block, "rlnA", bool) is True
    assert list_value(block, "rlnMissing", float, default=3.0) == 3.0
    with pytest.raises(InputError, match="rlnB.*expected a number"):
        list_value(block, "rlnB", float, file="f.star", table="general")
    with pytest.raises(InputError, match="compulsory"):
        list_value(block, "rlnMissing", float)


@pytest.mark.parametrize(
    "body, line, needle",
    [
        # a row with a value missing (truncated file): pandas would pad it with NaN
        ("data_t\n\nloop_\n_rlnA #1\n_rlnB #2\n1 2\n3\n", 7, "1 values but the table has 2 columns"),
        # a row with an extra value
        ("data_t\n\nloop_\n_rlnA #1\n_rlnB #2\n1 2\n3 4 5\n", 7, "3 values"),
        # a label line in a list block without a value
        ("data_t\n\n_rlnA 1\n_rlnB\n", 4, "expected '_label value'"),
        # loop_ without column labels
        ("data_t\n\nloop_\n1 2\n", 4, "loop_ without any column labels"),
        # unterminated quote
        ('data_t\n\nloop_\n_rlnA #1\n"abc\n', 5, "No closing quotation"),
    ],
)
def test_corrupted_star(tmp_path, body, line, needle):
    path = tmp_path / "corrupt.star"
    path.write_text(body)
    with pytest.raises(InputError) as err:
        read_star(path)
    message = str(err.value)
    assert "corrupt.star" in message
    assert f"line {line}" in message
    assert needle in message


def test_not_a_star_file(tmp_path):
    path = tmp_path / "binary.star"
    path.write_bytes(b"\x00\xff\xfe" * 50)
    with pytest.raises(InputError, match="binary.star"):
        read_star(path)
    path = tmp_path / "noblocks.star"
    path.write_text("# just a comment\n")
    with pytest.raises(InputError, match="noblocks.star.*no data_ block"):
        read_star(path)


def test_atomic_write_keeps_old_file_on_error(tmp_path):
    path = tmp_path / "out.star"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as handle:
            handle.write("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.star"]
    with atomic_write(path) as handle:
        handle.write("new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.star"]
    assert path.stat().st_mode & 0o644 == 0o644  # not a private 0600 temp file
