"""Arrow IPC shards: schema, atomic writes, and verification of shards left by earlier runs.

A shard holds rows [start, end) of the featurized split: `index` (row in the source split),
the per-example scalars, then one `fixed_size_list<float>` column per module, in module order.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa

from attrib.atomic import atomic_path

STORE_DTYPES = {"float16": pa.float16(), "float32": pa.float32()}


def schema(modules: list[tuple[str, int]], scalars: list[str], store_dtype: str) -> pa.Schema:
    value_type = STORE_DTYPES[store_dtype]
    fields = [pa.field("index", pa.int64(), nullable=False)]
    fields += [pa.field(name, pa.float32(), nullable=False) for name in scalars]
    fields += [pa.field(name, pa.list_(value_type, dim), nullable=False) for name, dim in modules]
    return pa.schema(fields)


def table(
    shard_schema: pa.Schema,
    index: np.ndarray,
    scalars: dict[str, np.ndarray],
    features: dict[str, np.ndarray],
) -> pa.Table:
    columns = []
    for field in shard_schema:
        if field.name == "index":
            columns.append(pa.array(index, type=pa.int64()))
        elif field.name in scalars:
            columns.append(pa.array(scalars[field.name], type=pa.float32()))
        else:
            matrix = np.ascontiguousarray(features[field.name])
            flat = pa.array(matrix.reshape(-1), type=field.type.value_type)
            columns.append(pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]))
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
