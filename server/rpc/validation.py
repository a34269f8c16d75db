"""The one validation layer between protobuf requests and core: every request field a servicer hands to core
is checked here first, and a bad value raises INVALID_ARGUMENT naming the field and what to change.

Invariants once a value has passed:
* numbers are finite and inside the documented ranges below (``MAX_EPOCHS`` keeps a job's epoch counters
  inside the API's int32; ``init_seed`` and columns are non-negative; floats stay within ``MAX_HYPERPARAMETER``);
* Struct hyperparameters hold a number, boolean or string only where the algorithm's config field takes
  one, and null only for optional fields;
* declared sizes are non-negative and, when given, equal to the bytes that actually arrived;
* ciphertexts from a client carry the session's scale (a fresh encryption, or a pending product at its
  square) and a level the session's chain has, so no SEAL scale overflow can surface later as INTERNAL.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from google.protobuf import json_format, struct_pb2

from ciphergrad.core import flat
from ciphergrad.core.engine import Engine
from ciphergrad.core.errors import MalformedInputError, ParameterError, ShapeError
from ciphergrad.core.layout import Tile
from ciphergrad.core.tensor import EncryptedMatrix, parse_header
from ciphergrad.server.rpc.errors import invalid
from ciphergrad.server.store.records import DatasetRecord
from ciphergrad.wire import codec
from ciphergrad.wire.proto_gen.ciphergrad.v1 import types_pb2

# A job's epochs: its progress counters are int32 in the API, and 100,000 epochs are years of refreshes.
MAX_EPOCHS = 100_000
# Struct numbers are doubles: integers beyond 2**53 are not exact.
MAX_SEED = 2**53
# Any other hyperparameter (learning rate, l2, bound, ...) lies within ± this.
MAX_HYPERPARAMETER = 1e6
MAX_INT_HYPERPARAMETER = 2**31 - 1
# MetricsSpec: the |x| polynomial's range and degree (core.polynomial.fit_abs: even degrees).
MAX_MAE_BOUND = 1e6
MAX_MAE_DEGREE = 16
# A server-side sigmoid polynomial's range [-bound, bound]: a fit outside this is numerically meaningless.
SIGMOID_BOUNDS = (0.01, 1000.0)
# Within this factor of the session's scale (or of its square, an unrescaled product) a ciphertext is usable.
SCALE_FACTOR = 2.0

_INT_RANGES = {"epochs": (1, MAX_EPOCHS), "init_seed": (0, MAX_SEED)}


def job_config(
    struct: struct_pb2.Struct, config_type: type, dataset: DatasetRecord, build: Callable[[dict], Any] | None = None
) -> Any:
    """The core config ``struct`` describes, checked against ``dataset`` (its columns and tile), or
    INVALID_ARGUMENT: a job is stored only once this has passed. ``build`` makes the config from the checked
    values (default ``config_type.from_dict``; the registry's ``service_config`` fills in service defaults)."""
    columns = dataset.columns
    kinds = {field.name: str(field.type) for field in dataclasses.fields(config_type)}
    values: dict[str, Any] = {}
    for name, value in struct.fields.items():
        if name not in kinds:  # ``build`` refuses it, naming the known ones (or, for a solver, the choices)
            try:
                values[name] = json_format.MessageToDict(value)
            except ValueError:  # NaN or infinity somewhere in it: JSON has no such numbers
                raise invalid(f"hyperparameter {name} holds a NaN or an infinity: give finite numbers") from None
            continue
        values[name] = _hyperparameter(name, value, kinds[name])
    column = values.get("intercept_column")
    if column is not None and column >= columns:
        raise invalid(
            f"hyperparameter intercept_column={column} lies outside the dataset's {columns} feature columns: "
            f"use 0..{columns - 1} (the column of ones), or null for no intercept"
        )
    try:
        config = (build or config_type.from_dict)(values)
    except ParameterError:
        raise
    except (TypeError, ValueError) as exc:
        raise invalid(f"hyperparameters do not make a {config_type.__name__}: {exc}") from exc
    tile_rows = dataset.layout.tile[0]
    batch_size = getattr(config, "batch_size", None)
    if batch_size is not None and tile_rows and batch_size != tile_rows:
        raise invalid(
            f"hyperparameter batch_size={batch_size} needs data encrypted in tiles of {batch_size} rows; dataset "
            f"{dataset.id} has tiles of {tile_rows}: upload it with that batch_size, or use batch_size={tile_rows}"
        )
    return config


def _hyperparameter(name: str, value: struct_pb2.Value, kind: str) -> Any:
    found = value.WhichOneof("kind")
    optional = "None" in kind
    if found == "null_value":
        if optional:
            return None
        raise invalid(f"hyperparameter {name} is null: give it a value (a {kind}) or leave it out for the default")
    if found == "list_value" and kind.startswith("tuple[tuple[float"):
        return _number_lists(name, value)
    if found in ("list_value", "struct_value"):
        raise invalid(f"hyperparameter {name} is a {found.split('_')[0]}: it takes a single {kind}")
    if found == "string_value":
        if "str" in kind:
            return value.string_value
        raise invalid(f"hyperparameter {name}={value.string_value!r} is text: it takes a {kind}")
    if found == "bool_value":
        if "bool" in kind:
            return value.bool_value
        raise invalid(f"hyperparameter {name}={value.bool_value} is a boolean: it takes a {kind}")
    number = value.number_value
    if not math.isfinite(number):
        raise invalid(f"hyperparameter {name}={number} is not a finite number: give a {kind}")
    if "int" in kind and "float" not in kind:
        low, high = _INT_RANGES.get(name, (0, MAX_INT_HYPERPARAMETER))
        if not number.is_integer() or not low <= number <= high:
            raise invalid(f"hyperparameter {name}={number:g} must be a whole number in {low}..{high}")
        return int(number)
    if "float" in kind:
        if abs(number) > MAX_HYPERPARAMETER:
            raise invalid(
                f"hyperparameter {name}={number:g} is out of range: use a value within ±{MAX_HYPERPARAMETER:g}"
            )
        return number
    raise invalid(f"hyperparameter {name}={number:g} is a number: it takes a {kind}")


def _number_lists(name: str, value: struct_pb2.Value) -> tuple[tuple[float, ...], ...]:
    """A list of lists of finite numbers within ±MAX_HYPERPARAMETER (``standardization``: scales and shifts)."""
    lists = []
    for item in value.list_value.values:
        if item.WhichOneof("kind") != "list_value":
            raise invalid(f"hyperparameter {name} takes lists of numbers (e.g. [[scales], [shifts]])")
        numbers = []
        for entry in item.list_value.values:
            kind = entry.WhichOneof("kind")
            number = entry.number_value if kind == "number_value" else math.nan
            if not math.isfinite(number) or abs(number) > MAX_HYPERPARAMETER:
                shown = repr(number) if kind == "number_value" else f"a {(kind or 'missing').split('_')[0]} value"
                raise invalid(f"hyperparameter {name} holds {shown}: every value must be a finite number within "
                              f"±{MAX_HYPERPARAMETER:g}")
            numbers.append(number)
        lists.append(tuple(numbers))
    return tuple(lists)


def declared_size(value: int, field: str) -> int:
    """A size the client announces: not negative (0 means: not announced)."""
    if value < 0:
        raise invalid(f"{field}={value} is negative: send the byte count of what follows, or 0")
    return value


def arrived(declared: int, received: int, field: str) -> None:
    """The bytes that came match the announced size (when one was announced)."""
    if declared and declared != received:
        raise invalid(f"{field}={declared} but {received} bytes arrived: announce the exact size, or 0")


def packing(value: int) -> int:
    if value not in types_pb2.Packing.values():
        names = ", ".join(types_pb2.Packing.keys())
        raise invalid(f"packing={value} is not a Packing value: use one of {names}")
    return value


def ddof(value: int, rows: int) -> int:
    if not 0 <= value < rows:
        raise invalid(f"ddof={value} must lie in 0..{rows - 1} for a dataset of {rows} rows (1: sample statistics)")
    return value


def mae_spec(bound: float, degree: int) -> None:
    if not math.isfinite(bound) or not 0 <= bound <= MAX_MAE_BOUND:
        raise invalid(
            f"mae_bound={bound} must be a finite number in [0, {MAX_MAE_BOUND:g}] (0: no MAE; else a bound on "
            "|prediction - target|)"
        )
    if not 0 <= degree <= MAX_MAE_DEGREE or degree % 2:
        raise invalid(f"mae_degree={degree} must be an even number in 0..{MAX_MAE_DEGREE} (0: the default, 6)")


def finite(values: Any, field: str) -> list[float]:
    """Plaintext model numbers (weights, bias, bounds) as floats, all finite."""
    numbers = [float(v) for v in values]
    bad = [v for v in numbers if not math.isfinite(v)]
    if bad:
        raise invalid(f"{field} contains {bad[0]}: every value must be a finite number")
    return numbers


def inbound(matrix: EncryptedMatrix, what: str) -> EncryptedMatrix:
    """A client's encrypted matrix whose ciphertexts the session's operations can take."""
    engine = matrix.engine
    for ct in matrix.ciphertexts:
        ciphertext(engine, ct, what)
    return matrix


def ciphertext(engine: Engine, ct: Any, what: str) -> None:
    scale = ct.scale
    fresh = engine.scale / SCALE_FACTOR <= scale <= engine.scale * SCALE_FACTOR
    pending = engine.scale**2 / SCALE_FACTOR <= scale <= engine.scale**2 * SCALE_FACTOR
    if not (math.isfinite(scale) and (fresh or pending)):
        shown = f"2**{math.log2(scale):.1f}" if math.isfinite(scale) and scale > 0 else repr(scale)
        raise invalid(
            f"{what}: a ciphertext has scale {shown}, but the session's scale is 2**{math.log2(engine.scale):.0f}: "
            "encrypt it with the session's key holder (KeyHolder.encrypt)"
        )
    if engine.level(ct) < 0:
        raise invalid(f"{what}: a ciphertext has no level left for its scale: encrypt it afresh")


def reply_matrix(engine: Engine, message: types_pb2.EncryptedMatrix | bytes, what: str,
                 like: Any = None) -> EncryptedMatrix:
    """A matrix the key holder sent back (a refreshed matrix, solved weights), as the proto or its serialized
    bytes: parsed against the session's context, every ciphertext usable (``inbound``) and, with ``like`` (the
    matrix sent out), in its shape and tile."""
    if isinstance(message, bytes):
        message = types_pb2.EncryptedMatrix.FromString(message)
    try:
        parsed = codec.matrix_from_proto(engine, message)
    except MalformedInputError as exc:  # SEAL's refusal says what was wrong, not which reply it was
        raise MalformedInputError(f"{what}: {exc}") from exc
    matrix = inbound(parsed, what)
    if like is not None and (matrix.shape != like.shape or matrix.tile != like.tile):
        raise invalid(f"{what} has shape {matrix.shape}; expected {like.shape} in the same tile")
    return matrix


@dataclass(frozen=True)
class ScannedMatrix:
    """What a stored upload's checks need of a matrix (shape, tile, level, the context's slots), without its
    ciphertexts or engine: small and picklable, so the check may run where the session's context is loaded
    (a Ray worker, ``Executor.check_files``) and only this comes back."""

    shape: tuple[int, int]
    tile: Tile
    level: int
    slots: int


def scan_file(engine: Engine, path: Path, what: str) -> ScannedMatrix:
    """Check a serialized matrix on disk one ciphertext at a time (an upload is never held whole)."""
    with open(path, "rb") as handle:
        return scan(engine, handle, what)


def scan(engine: Engine, handle: BinaryIO, what: str) -> ScannedMatrix:
    """``scan_file`` of an open file (or bytes in a ``BytesIO``): every ciphertext parsed against ``engine``'s
    context and checked (``ciphertext``), their count against the header's grid."""
    header, blobs = flat.read(handle)
    shape, tile, _, (rows, cols) = parse_header(engine, header)
    level, count = None, 0
    for blob in blobs:
        ct = engine.ciphertext_from_bytes(blob)
        ciphertext(engine, ct, what)
        level = engine.level(ct) if level is None else min(level, engine.level(ct))
        count += 1
    if count != rows * cols:
        raise ShapeError(
            f"{what}: a {shape[0]}x{shape[1]} matrix in {tile.rows}x{tile.cols} tiles needs {rows * cols} "
            f"ciphertexts, got {count}"
        )
    assert level is not None  # rows * cols >= 1
    return ScannedMatrix(shape, tile, level, engine.slots)
