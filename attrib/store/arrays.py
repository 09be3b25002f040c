"""Writing a complete store from in-memory arrays.

For features that do not come from `featurize` (synthetic benchmarks, planted tests, methods
whose features are not gradients): the result reads back like any other store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attrib.store import shards
from attrib.store.kinds import GRADIENTS
from attrib.store.manifest import shard_ranges
from attrib.store.module_spec import ModuleSpec
from attrib.store.writer import StoreWriter


def write_arrays(
    path: Path,
    features: dict[str, np.ndarray],
    scalars: dict[str, np.ndarray] | None = None,
    settings: dict | None = None,
    shard_size: int = 1024,
    store_dtype: str = "float32",
    made_by: dict | None = None,
) -> Path:
    """Write `features` (module -> N x F) as a store; `settings` entries override defaults.
    `scalars` may hold an `index` column (rows of the source split; default 0..N-1).
    `made_by`: the processes that computed the rows (Execution.record(); default one)."""
    dims = {name: int(matrix.shape[1]) for name, matrix in features.items()}
    count = len(next(iter(features.values())))
    scalars = scalars or {}

    def rows(start: int, end: int):
        return (
            {n: m[start:end] for n, m in features.items()},
            {k: v[start:end] for k, v in scalars.items()},
        )

    names = [name for name in scalars if name != "index"]
    return write_generated(
        path, dims, count, rows, names, settings, shard_size, store_dtype, made_by=made_by
    )


def write_generated(
    path: Path,
    dims: dict[str, int],
    count: int,
    rows,
    scalar_names: list[str] | None = None,
    settings: dict | None = None,
    shard_size: int = 1024,
    store_dtype: str = "float32",
    overwrite: bool = True,
    beside=None,
    made_by: dict | None = None,
) -> Path:
    """Write a store whose rows [start, end) come from `rows(start, end) -> (features, scalars)`,
    one shard at a time (so stores larger than memory can be generated). Like featurize, a
    rerun after a kill keeps the complete shards, and an equal complete store is left as it
    is; without `overwrite` a store of other settings at `path` is refused. `beside(folder,
    start, end, shard_file)` writes a shard's companion files (an ensemble's Kronecker
    factors) into the folder being written, before the store is committed."""
    names = list(dims)
    scalar_names = list(dict.fromkeys([*(scalar_names or []), "loss", "out_to_loss"]))
    modules = [
        {"spec": ModuleSpec(n, "linear", dims[n], 1, False).to_dict(), "feature_dim": dims[n]}
        for n in names
    ]
    base = {
        "kind": GRADIENTS,
        "model": {"source": "arrays", "fingerprint": "arrays", "adapter": None, "dtype": "float32"},
        "task": "arrays",
        "task_options": {"columns": {}},
        "output_function": "loss",
        "projection": {"kind": "none", "dim": None, "seed": 0},
        "modules": modules,
        "scalars": scalar_names,
        "store_dtype": store_dtype,
        "dataset": {"source": "arrays", "split": "train", "fingerprint": None},
        "num_examples": count,
        "shard_size": shard_size,
    }
    full = {**base, **(settings or {})}
    schema = shards.schema([(n, dims[n]) for n in names], scalar_names, store_dtype)
    writer = StoreWriter(Path(path), full, schema, ["write_arrays"])
    writer.check(overwrite=overwrite)
    if writer.complete:
        return Path(path)
    writer.create()
    records = []
    dtype = np.float16 if store_dtype == "float16" else np.float32  # int8/int4: table() rounds
    for start, end in shard_ranges(count, shard_size):
        done = writer.resumable(start, end)
        if done is not None:
            if beside is not None:
                beside(writer.path, start, end, done.file)
            records.append(done)
            continue
        features, scalars = rows(start, end)
        scalars = dict(scalars)
        index = scalars.pop("index", None)
        index = np.arange(start, end, dtype=np.int64) if index is None else index
        scalars.setdefault("loss", np.zeros(end - start, np.float32))
        scalars.setdefault("out_to_loss", np.ones(end - start, np.float32))
        data = shards.table(
            schema,
            np.asarray(index, np.int64),
            {k: np.asarray(v, np.float32) for k, v in scalars.items()},
            {n: np.asarray(features[n], dtype) for n in names},
        )
        records.append(writer.write_shard(start, end, data))
        if beside is not None:
            beside(writer.path, start, end, records[-1].file)
    writer.report(0, records)
    writer.finish(writer.merged_records(1, array=False), made_by or {"processes": 1})
    return Path(path)
