"""client.table: CSV files and in-memory tables become finite float64 matrices, or errors naming columns and rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ciphergrad.client.table import (
    TableError,
    as_float_matrix,
    as_float_vector,
    clean_table,
    csv_columns,
    read_csv,
    text_columns,
)


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# The table: column b holds an empty cell (line 3) and the text "x" (line 4).
MESSY = "a,b,c\n1,2,3\n2,,5\n3,x,7\n4,5,9\n"


def test_csv_bad_cells_are_an_error_naming_column_lines_and_reasons(tmp_path: Path) -> None:
    table = read_csv(write(tmp_path, MESSY))
    with pytest.raises(TableError) as caught:
        csv_columns(table, ["a", "b", "c"])
    message = str(caught.value)
    assert "column 'b' has 2 bad cells" in message
    assert "line 3 (missing)" in message and "line 4 (non-numeric 'x')" in message
    assert "'a'" not in message and "'c'" not in message, "only the column with bad cells is named"
    assert isinstance(caught.value, ValueError)


def test_csv_drop_removes_exactly_the_bad_rows_and_says_so(tmp_path: Path) -> None:
    clean = csv_columns(read_csv(write(tmp_path, MESSY)), ["a", "b", "c"], bad_cells="drop")
    np.testing.assert_array_equal(clean.values, [[1, 2, 3], [4, 5, 9]])
    assert clean.values.dtype == np.float64
    assert clean.notice is not None and "dropped 2 of 4 rows" in clean.notice and "'b': 2" in clean.notice


def test_csv_impute_fills_feature_cells_with_the_column_mean(tmp_path: Path) -> None:
    clean = csv_columns(read_csv(write(tmp_path, MESSY)), ["a", "b", "c"], bad_cells="impute", targets=["c"])
    np.testing.assert_allclose(clean.values[:, 1], [2, 3.5, 3.5, 5])  # mean of 2 and 5
    np.testing.assert_array_equal(clean.values[:, [0, 2]], [[1, 3], [2, 5], [3, 7], [4, 9]])
    assert clean.notice is not None and "imputed 2" in clean.notice


def test_csv_impute_never_invents_a_target(tmp_path: Path) -> None:
    table = read_csv(write(tmp_path, "a,y\n1,2\n2,NA\n3,4\n"))
    with pytest.raises(TableError, match=r"column 'y' has 1 bad cell: line 3 \(missing\).*cannot be imputed"):
        csv_columns(table, ["a", "y"], bad_cells="impute", targets=["y"])


def test_csv_error_lists_the_first_five_rows_and_the_count(tmp_path: Path) -> None:
    rows = "".join(f"{i},{'' if i % 2 else i}\n" for i in range(20))
    with pytest.raises(TableError) as caught:
        csv_columns(read_csv(write(tmp_path, "a,b\n" + rows)), ["a", "b"])
    message = str(caught.value)
    assert "column 'b' has 10 bad cells" in message and "and 5 more" in message
    assert "line 3 (missing)" in message and "line 11 (missing)" in message and "line 13" not in message


def test_missing_markers_and_infinity(tmp_path: Path) -> None:
    table = read_csv(write(tmp_path, "a,b\n1, NA \n2,nan\n3,inf\n4,null\n5,1e3\n"))
    with pytest.raises(TableError) as caught:
        csv_columns(table, ["a", "b"])
    assert "4 bad cells" in str(caught.value) and "line 4 (infinite)" in str(caught.value)
    np.testing.assert_array_equal(csv_columns(table, ["a", "b"], bad_cells="drop").values, [[5, 1000]])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("a,b\n", "no data rows"),
        ("a,b\n1,2\n3\n", "line 3 has 1 fields but the header names 2 columns"),
        ("a,a\n1,2\n", "appear more than once"),
        ("a,\n1,2\n", "header field(s) [2] are empty"),
    ],
)
def test_malformed_csv_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(TableError) as caught:
        read_csv(write(tmp_path, text))
    assert expected in str(caught.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="no such file"):
        read_csv(tmp_path / "absent.csv")
    with pytest.raises(TableError, match="is a directory"):
        read_csv(tmp_path)
    (tmp_path / "latin1.csv").write_bytes(b"a,b\n1,\xe9\n")
    with pytest.raises(TableError, match="not UTF-8"):
        read_csv(tmp_path / "latin1.csv")


def test_csv_reading_details(tmp_path: Path) -> None:
    table = read_csv(write(tmp_path, '\ufeff a ,b,name\n1,2,"Elm, North"\n\n3,4,Oak\n'))
    assert table.columns == ("a", "b", "name"), "header trimmed, byte-order mark gone"
    assert table.lines == (2, 4), "blank lines skipped, line numbers kept"
    assert text_columns(table, ["a", "b", "name"]) == ["name"]
    with pytest.raises(TableError, match=r"no column\(s\) \['zz'\]"):
        csv_columns(table, ["a", "zz"])


def test_numpy_torch_and_lists_pass_through_as_float64() -> None:
    data = np.arange(6, dtype=np.int32).reshape(3, 2)
    for values in (data, torch.tensor(data), data.tolist(), data.astype(np.float32)):
        out = as_float_matrix(values)
        assert out.dtype == np.float64 and out.shape == (3, 2)
        np.testing.assert_array_equal(out, data)
    assert as_float_matrix(np.arange(3.0)).shape == (3, 1), "a 1-D input is one column"
    np.testing.assert_array_equal(as_float_vector(torch.arange(3.0)), [0, 1, 2])


def test_in_memory_nan_and_inf_name_column_and_rows() -> None:
    X = np.ones((8, 3))
    X[2, 1], X[6, 1], X[7, 2] = np.nan, np.inf, -np.inf
    with pytest.raises(TableError) as caught:
        as_float_matrix(X, what="X")
    message = str(caught.value)
    assert message.startswith("X: column 'column 1' has 2 bad cells: row 2 (NaN), row 6 (infinite)")
    assert "column 'column 2' has 1 bad cell: row 7 (infinite)" in message
    with pytest.raises(TableError, match=r"y: column 'column 0' has 1 bad cell: row 1 \(missing\)"):
        as_float_vector([1.0, None, 3.0], what="y")


def test_pandas_columns_are_named_and_text_cells_are_errors() -> None:
    frame = pd.DataFrame({"rooms": [1, 2, 3], "area": ["50", "x", None]})
    with pytest.raises(TableError) as caught:
        as_float_matrix(frame)
    assert "column 'area' has 2 bad cells: row 1 (non-numeric 'x'), row 2 (missing)" in str(caught.value)
    clean = clean_table(frame, bad_cells="drop")
    np.testing.assert_array_equal(clean.values, [[1, 50]])
    assert clean.columns == ("rooms", "area") and "dropped 2 of 3 rows" in (clean.notice or "")
    nullable = pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64")})
    with pytest.raises(TableError, match=r"column 'a' has 1 bad cell: row 1 \(missing\)"):
        as_float_matrix(nullable)
    np.testing.assert_array_equal(as_float_matrix(pd.DataFrame({"a": [1.5, 2.5]})), [[1.5], [2.5]])
    with pytest.raises(TableError, match=r"y: column 'price' has 1 bad cell: row 1 \(missing\)"):
        as_float_vector(pd.Series([1.0, pd.NA, 2.0], name="price", dtype="Float64"), what="y")
    np.testing.assert_array_equal(as_float_vector(pd.Series([3, 4])), [3, 4])


def test_impossible_inputs() -> None:
    with pytest.raises(TableError, match="has no rows"):
        as_float_matrix(np.empty((0, 3)))
    with pytest.raises(TableError, match=r"shape \(2, 2, 2\)"):
        as_float_matrix(np.zeros((2, 2, 2)))
    with pytest.raises(TableError, match="not real numbers"):
        as_float_matrix(np.ones((2, 2), dtype=complex))
    with pytest.raises(TableError, match="not a rectangular table"):
        as_float_matrix([[1, 2], [3]])
    with pytest.raises(TableError, match="expected one column"):
        as_float_vector(np.ones((3, 2)))
    with pytest.raises(TableError, match="nothing is left"):
        clean_table([[np.nan, 1.0], [2.0, np.inf]], bad_cells="drop")
    with pytest.raises(TableError, match="no numeric cell to take a mean from"):
        clean_table([[np.nan, 1.0], [np.nan, 2.0]], bad_cells="impute")
    with pytest.raises(TableError, match="bad_cells must be one of"):
        clean_table([[np.nan]], bad_cells="zero")  # type: ignore[arg-type]


def test_comment_lines_are_skipped_and_line_numbers_kept(tmp_path: Path) -> None:
    path = tmp_path / "quotes.csv"
    path.write_text("# Data source: a downloaded quote table\n#\nDate,Open,Close\n2025-01-02,1.5,2\n"
                    "  # a note between rows\n2025-01-03,2.5,oops\n")
    table = read_csv(path)
    assert table.columns == ("Date", "Open", "Close") and len(table.cells) == 2
    with pytest.raises(TableError, match="line 6"):
        csv_columns(table, ["Open", "Close"])
