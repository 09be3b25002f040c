"""Arrow IPC shards: schema, atomic writes, and verification of shards left by earlier runs.

A shard holds rows [start, end) of the featurized split: `index` (row in the source split),
the per-example scalars, then one `fixed_size_list<float>` column per module, in module order.

Quantized stores (`--store-dtype int8 | int4`) keep each row's features of a module as
integers in [-L, L] (L = 127 or 7) times one float32 scale per row and module (its largest
magnitude / L, rounded to nearest), in a `MODULE:scale` column after the modules; int4
packs two values a byte (low nibble first, offset by 8). Readers get float32 back
(`feature_matrix`). Why: LDS depends on the projection's size far more than on the bits a
feature keeps (docs/quality.md, "Bits for dimensions"), so at a fixed store size more
features in fewer bits rank better.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from attrib.atomic import atomic_path

STORE_DTYPES = {
    "float16": pa.float16(), "float32": pa.float32(), "int8": pa.int8(), "int4": pa.uint8(),
}  # fmt: skip
QUANTIZED_BITS = {"int8": 8, "int4": 4}


def scale_column(module: str) -> str:
    """A quantized module's per-row scales (no module path holds a colon)."""
    return f"{module}:scale"


def stored_width(dim: int, store_dtype: str) -> int:
    """Values a row of a module keeps in its column: int4 packs two a byte."""
    return (dim + 1) // 2 if store_dtype == "int4" else dim


def schema(modules: list[tuple[str, int]], scalars: list[str], store_dtype: str) -> pa.Schema:
    value_type = STORE_DTYPES[store_dtype]
    fields = [pa.field("index", pa.int64(), nullable=False)]
    fields += [pa.field(name, pa.float32(), nullable=False) for name in scalars]
    fields += [
        pa.field(name, pa.list_(value_type, stored_width(dim, store_dtype)), nullable=False)
        for name, dim in modules
    ]
    if store_dtype in QUANTIZED_BITS:
        scales = [scale_column(name) for name, _ in modules]
        fields += [pa.field(name, pa.float32(), nullable=False) for name in scales]
    return pa.schema(fields)


def quantize(matrix: np.ndarray, store_dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(rows x dim) floats -> (stored values, float32 scales): round to nearest, so each value
    is off by at most half its row's scale."""
    levels = 2 ** (QUANTIZED_BITS[store_dtype] - 1) - 1
    matrix = np.asarray(matrix, dtype=np.float32)
    scale = (np.abs(matrix).max(axis=1) if matrix.shape[1] else np.zeros(len(matrix))) / levels
    scale = scale.astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    values = np.clip(np.rint(matrix / safe[:, None]), -levels, levels).astype(np.int8)
    if store_dtype == "int8":
        return values, scale
    nibbles = (values + 8).astype(np.uint8)  # 1 ... 15
    if nibbles.shape[1] % 2:
        nibbles = np.concatenate([nibbles, np.full((len(nibbles), 1), 8, np.uint8)], axis=1)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4), scale


def dequantize(values: np.ndarray, scale: np.ndarray, dim: int, store_dtype: str) -> np.ndarray:
    """The inverse of `quantize`, as float32 (rows x dim)."""
    if store_dtype == "int4":
        low = (values & 0x0F).astype(np.int8) - 8
        high = (values >> 4).astype(np.int8) - 8
        values = np.stack([low, high], axis=2).reshape(len(values), -1)[:, :dim]
    return values.astype(np.float32) * np.asarray(scale, dtype=np.float32)[:, None]


def _quantized(value_type: pa.DataType) -> str | None:
    """The store dtype a module column's value type stands for, if it is a quantized one."""
    return {"int8": "int8", "uint8": "int4"}.get(str(value_type))


def feature_matrix(data: pa.Table, module: str, dim: int, dtype=np.float32) -> np.ndarray:
    """A module's features in a shard (or a slice of one) as (rows x dim): floats as stored
    (zero-copy where the dtype matches; `dtype=None` keeps float16), quantized ones decoded."""
    values = column_matrix(data.column(module), dtype=None)
    store_dtype = _quantized(data.schema.field(module).type.value_type)
    if store_dtype is not None:
        scale = data.column(scale_column(module)).to_numpy()
        values = dequantize(values, scale, dim, store_dtype)
    return values if dtype is None else values.astype(dtype, copy=False)


def column_matrix(column: pa.ChunkedArray, dtype=np.float32) -> np.ndarray:
    """A fixed_size_list column as a 2-D numpy array (zero-copy when the dtype matches)."""
    chunks = []
    for chunk in column.chunks:
        width = chunk.type.list_size
        values = chunk.flatten().to_numpy(zero_copy_only=False)  # flatten honours slices
        chunks.append(values.reshape(-1, width))
    if not chunks:
        return np.zeros((0, column.type.list_size), dtype=column.type.value_type.to_pandas_dtype())
    matrix = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=0)
    return matrix if dtype is None else matrix.astype(dtype, copy=False)


def table(
    shard_schema: pa.Schema,
    index: np.ndarray,
    scalars: dict[str, np.ndarray],
    features: dict[str, np.ndarray],
) -> pa.Table:
    columns, encoded = [], {}  # a quantized module's scales, for its column after the modules
    for field in shard_schema:
        if field.name == "index":
            columns.append(pa.array(index, type=pa.int64()))
        elif field.name in scalars:
            columns.append(pa.array(scalars[field.name], type=pa.float32()))
        elif field.name in encoded:
            columns.append(encoded[field.name])
        else:
            matrix = np.ascontiguousarray(features[field.name])
            store_dtype = _quantized(field.type.value_type)
            if store_dtype is not None:
                matrix, scale = quantize(matrix, store_dtype)
                encoded[scale_column(field.name)] = pa.array(scale, type=pa.float32())
            flat = pa.array(matrix.reshape(-1), type=field.type.value_type)
            columns.append(pa.FixedSizeListArray.from_arrays(flat, field.type.list_size))
    return pa.Table.from_arrays(columns, schema=shard_schema)


def write_atomic(path: Path, data: pa.Table) -> str:
    """Write an Arrow IPC file atomically; returns its sha256."""
    with atomic_path(path) as part:
        with pa.OSFile(str(part), "wb") as sink:
            with pa.ipc.new_file(sink, data.schema) as writer:
                writer.write_table(data)
        return sha256(part)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: pa.Schema, start: int, end: int) -> bool:
    """True when a shard from an earlier run is complete and holds exactly rows [start, end)."""
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            if not reader.schema.equals(expected) or reader.num_record_batches == 0:
                return False
            data = reader.read_all()
    except (pa.ArrowInvalid, OSError):
        return False
    return data.num_rows == end - start


def read(path: Path, columns: list[str] | None = None) -> pa.Table:
    """A memory-mapped shard (zero-copy reads), optionally only some columns."""
    source = pa.memory_map(str(path))
    data = pa.ipc.open_file(source).read_all()
    return data.select(columns) if columns is not None else data
