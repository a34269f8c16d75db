"""User tables (CSV files, numpy, pandas, torch, lists) as float64 matrices the key holder can encrypt.

Invariants: every array this module returns is float64 and finite; nothing is dropped or filled in silently.
A missing cell (empty, ``NA``, ``NaN``, ``null``, ``None``), a non-numeric cell (``x``) or an infinite one is a
bad cell. By default bad cells raise ``TableError`` (a ``ValueError``) naming each column that holds them and
its first rows, with the count. With ``bad_cells="drop"`` the rows holding them go, with
``bad_cells="impute"`` feature cells become their column's mean (targets are never invented: a bad target
cell is still an error); either way the returned ``notice`` says how many rows or cells changed.

Rows are named the way the user finds them: line numbers for a CSV file (the header is line 1), 0-based
positions for in-memory tables. Reading needs no pandas; pandas and torch inputs are recognised by duck
typing, so neither is imported here.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ciphergrad.core.errors import CipherGradError

BadCells = Literal["error", "drop", "impute"]
BAD_CELL_CHOICES: tuple[str, ...] = ("error", "drop", "impute")
MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none"})
SHOWN_ROWS = 5
DEFAULT_HINT = "fix the table, or pass bad_cells='drop' (drop those rows) or bad_cells='impute' (column mean)"


class TableError(CipherGradError, ValueError):
    """A table that cannot become a finite float64 matrix; the message names columns, rows and the way out."""


@dataclass(frozen=True)
class CsvTable:
    """A CSV file's header and cells as text; ``lines[i]`` is the file line where data row ``i`` ends."""

    path: str
    columns: tuple[str, ...]
    cells: tuple[tuple[str, ...], ...]
    lines: tuple[int, ...]


@dataclass(frozen=True)
class CleanTable:
    """Finite float64 ``values`` (rows × ``columns``) and what cleaning did (None when nothing changed)."""

    values: np.ndarray
    columns: tuple[str, ...]
    notice: str | None


def read_csv(path: str | Path) -> CsvTable:
    """The header row and data rows of a CSV file, as text. Raises TableError for anything unreadable."""
    name = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            # Comment lines ("# Data source: ...", as downloaded quote tables start) read as blank lines, so
            # line numbers in messages stay the file's own.
            reader = csv.reader("\n" if line.lstrip().startswith("#") else line for line in handle)
            header = next((row for row in reader if any(cell.strip() for cell in row)), None)
            rows, lines = [], []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank lines carry no data
                rows.append(row)
                lines.append(reader.line_num)
    except FileNotFoundError:
        raise TableError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise TableError(f"{name}: is a directory, not a CSV file") from None
    except PermissionError:
        raise TableError(f"{name}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise TableError(f"{name}: not UTF-8 text (byte {exc.start}); save the table as UTF-8 CSV") from None
    except (OSError, csv.Error) as exc:
        raise TableError(f"{name}: cannot read it as CSV: {exc}") from None
    if header is None:
        raise TableError(f"{name}: the file is empty; it needs a header row naming the columns")
    columns = tuple(column.strip() for column in header)
    _check_header(name, columns)
    for row, line in zip(rows, lines, strict=True):
        if len(row) != len(columns):
            raise TableError(
                f"{name}: line {line} has {len(row)} fields but the header names {len(columns)} columns; "
                "every row needs one value per column"
            )
    if not rows:
        raise TableError(f"{name}: the header has no data rows below it")
    return CsvTable(name, columns, tuple(tuple(row) for row in rows), tuple(lines))


def _check_header(name: str, columns: tuple[str, ...]) -> None:
    unnamed = [i + 1 for i, column in enumerate(columns) if not column]
    if unnamed:
        raise TableError(f"{name}: header field(s) {unnamed} are empty; give every column a name")
    duplicates = sorted({c for c in columns if columns.count(c) > 1})
    if duplicates:
        raise TableError(f"{name}: column name(s) {duplicates} appear more than once in the header; rename them")


def text_columns(table: CsvTable, names: Sequence[str]) -> list[str]:
    """The columns among ``names`` without a single numeric cell: text such as street names, not numbers."""
    return [name for name in names if not any(_is_number(row[table.columns.index(name)]) for row in table.cells)]


def csv_columns(
    table: CsvTable,
    columns: Sequence[str],
    *,
    bad_cells: BadCells = "error",
    targets: Sequence[str] = (),
    hint: str = DEFAULT_HINT,
) -> CleanTable:
    """``columns`` of a CSV table as a finite float64 matrix; ``targets`` (among them) are never imputed."""
    unknown = [c for c in columns if c not in table.columns]
    if unknown:
        raise TableError(f"{table.path}: no column(s) {unknown}; the header has {list(table.columns)}")
    indices = [table.columns.index(c) for c in columns]
    cells = [[row[i] for i in indices] for row in table.cells]
    return _clean(
        _parse(cells), tuple(columns), [f"line {n}" for n in table.lines], bad_cells, targets, hint, what=table.path
    )


def as_float_matrix(
    values: Any,
    what: str = "X",
    *,
    columns: Sequence[str] | None = None,
    bad_cells: BadCells = "error",
    hint: str = DEFAULT_HINT,
) -> np.ndarray:
    """A numpy array, pandas DataFrame/Series, torch tensor or nested list as a finite 2-D float64 matrix.

    A 1-D input is one column. Raises TableError naming the columns (DataFrame names, else ``column i``) and
    0-based rows of NaN, infinite, missing or non-numeric cells. ``what`` names the argument in messages.
    """
    return clean_table(values, what, columns=columns, bad_cells=bad_cells, hint=hint).values


def as_float_vector(values: Any, what: str = "y") -> np.ndarray:
    """A 1-D (or one-column) table as a finite float64 vector; bad cells raise TableError naming the rows."""
    matrix = as_float_matrix(values, what)
    if matrix.shape[1] != 1:
        raise TableError(f"{what}: expected one column of values, got {matrix.shape[1]} columns")
    return matrix[:, 0]


def clean_table(
    values: Any,
    what: str = "X",
    *,
    columns: Sequence[str] | None = None,
    bad_cells: BadCells = "error",
    hint: str = DEFAULT_HINT,
) -> CleanTable:
    """``as_float_matrix`` with the column names and the notice of what was dropped or imputed."""
    names, array = _to_array(values, what)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise TableError(f"{what}: expected a table (rows × columns), got an array of shape {array.shape}")
    names = tuple(columns) if columns is not None else names or tuple(f"column {i}" for i in range(array.shape[1]))
    if len(names) != array.shape[1]:
        raise TableError(f"{what}: {len(names)} column names for {array.shape[1]} columns")
    if array.shape[0] == 0:
        raise TableError(f"{what}: the table has no rows")
    parsed = _parse(array) if array.dtype.kind in "OUS" else _numeric(array, what)
    return _clean(parsed, names, [f"row {i}" for i in range(array.shape[0])], bad_cells, (), hint, what=what)


def _to_array(values: Any, what: str) -> tuple[tuple[str, ...], np.ndarray]:
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor
        return (), values.detach().cpu().numpy()
    if hasattr(values, "columns") and hasattr(values, "to_numpy"):  # a pandas DataFrame
        names = tuple(str(c) for c in values.columns)
        kinds = {np.dtype(d).kind if isinstance(d, np.dtype) else "O" for d in values.dtypes}
        return names, values.to_numpy(dtype=np.float64 if kinds <= set("biuf") else object, na_value=np.nan)
    if hasattr(values, "to_frame") and hasattr(values, "to_numpy"):  # a pandas Series: one named column
        return _to_array(values.to_frame(), what)
    try:
        return (), np.asarray(values)
    except ValueError as exc:  # ragged nested lists
        raise TableError(f"{what}: not a rectangular table ({exc})") from None


def _numeric(array: np.ndarray, what: str) -> _Parsed:
    if array.dtype.kind not in "biuf":
        raise TableError(f"{what}: cells of type {array.dtype} are not real numbers; pass floats or integers")
    values = array.astype(np.float64)
    finite = np.isfinite(values)
    reasons = np.where(np.isnan(values), "NaN", "infinite").astype(object)
    return _Parsed(np.where(finite, values, np.nan), ~finite, reasons)


@dataclass(frozen=True)
class _Parsed:
    values: np.ndarray  # float64, NaN where bad
    bad: np.ndarray  # bool
    reasons: np.ndarray  # object: why a bad cell is bad ("missing", "non-numeric 'x'", "infinite")


def _parse(cells: Any) -> _Parsed:
    grid = np.asarray(cells, dtype=object)
    values = np.full(grid.shape, np.nan)
    reasons = np.full(grid.shape, None, dtype=object)
    for index, cell in np.ndenumerate(grid):
        number, reason = _cell_value(cell)
        if reason is None:
            values[index] = number
        else:
            reasons[index] = reason
    return _Parsed(values, reasons != None, reasons)  # noqa: E711 (elementwise)


def _cell_value(cell: Any) -> tuple[float, str | None]:
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        return np.nan, "missing"
    if isinstance(cell, bytes):
        cell = cell.decode("utf-8", "replace")
    if isinstance(cell, str):
        text = cell.strip()
        if text.lower() in MISSING_MARKERS:
            return np.nan, "missing"
        try:
            number = float(text)
        except ValueError:
            return np.nan, f"non-numeric {text[:20]!r}"
    elif isinstance(cell, (bool, int, float, np.number)) and not isinstance(cell, complex | np.complexfloating):
        number = float(cell)
    else:
        return np.nan, f"non-numeric {type(cell).__name__}"
    return (number, None) if np.isfinite(number) else (np.nan, "infinite")


def _is_number(text: str) -> bool:
    return _cell_value(text)[1] is None


def _clean(
    parsed: _Parsed,
    columns: tuple[str, ...],
    row_names: list[str],
    bad_cells: BadCells,
    targets: Sequence[str],
    hint: str,
    what: str,
) -> CleanTable:
    if bad_cells not in BAD_CELL_CHOICES:
        raise TableError(f"bad_cells must be one of {BAD_CELL_CHOICES}, not {bad_cells!r}")
    bad = parsed.bad
    if not bad.any():
        return CleanTable(parsed.values, columns, None)
    target_columns = [j for j, name in enumerate(columns) if name in targets]
    if bad_cells == "error" or (bad_cells == "impute" and bad[:, target_columns].any()):
        problem = _describe(parsed, columns, row_names, only=target_columns if bad_cells == "impute" else None)
        if bad_cells == "impute":
            hint = "a target value cannot be imputed: fix those cells or drop their rows"
        raise TableError(f"{what}: {problem}; {hint}")
    if bad_cells == "drop":
        keep = ~bad.any(axis=1)
        if not keep.any():
            raise TableError(f"{what}: every row has a bad cell, nothing is left after dropping; {_summary(bad)}")
        notice = f"{what}: dropped {int((~keep).sum())} of {len(keep)} rows with a missing or non-numeric cell"
        return CleanTable(parsed.values[keep], columns, f"{notice} ({_per_column(bad, columns)})")
    empty = [columns[j] for j in range(len(columns)) if bad[:, j].all()]
    if empty:
        raise TableError(f"{what}: column(s) {empty} have no numeric cell to take a mean from; leave them out")
    means = np.nanmean(parsed.values, axis=0)
    values = np.where(bad, means, parsed.values)
    notice = f"{what}: imputed {int(bad.sum())} missing or non-numeric cells with their column mean"
    return CleanTable(values, columns, f"{notice} ({_per_column(bad, columns)})")


def _describe(parsed: _Parsed, columns: tuple[str, ...], row_names: list[str], only: list[int] | None) -> str:
    parts = []
    for j, name in enumerate(columns):
        rows = np.flatnonzero(parsed.bad[:, j])
        if len(rows) == 0 or (only is not None and j not in only):
            continue
        shown = ", ".join(f"{row_names[i]} ({parsed.reasons[i, j]})" for i in rows[:SHOWN_ROWS])
        more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
        parts.append(f"column {name!r} has {len(rows)} bad cell{'s' if len(rows) > 1 else ''}: {shown}{more}")
    return "; ".join(parts)


def _per_column(bad: np.ndarray, columns: tuple[str, ...]) -> str:
    return ", ".join(f"{name!r}: {int(bad[:, j].sum())}" for j, name in enumerate(columns) if bad[:, j].any())


def _summary(bad: np.ndarray) -> str:
    return f"{int(bad.sum())} bad cells in {int(bad.any(axis=1).sum())} rows"
