"""The outputs of K perturbed copies as a store: one row per example (same rows and `index`
as the store it came from), one pseudo-module `copies` of width K.

The settings are the source store's (model, task, dataset, so previews, ground truth and
evaluation work as for any store) with what the rows now are: `projection.kind` is
`perturbed` and carries the copies' settings, so a query store from other copies (another
K, seed, objective or checkpoint) is refused by `score` like any other mismatch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from attrib.store import Store
from attrib.store.arrays import write_arrays
from attrib.store.kinds import PERTURBED

MODULE = "copies"


def copies_fingerprint(meta: dict) -> str:
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]


def write_output_store(
    path: Path, source: Store, values: np.ndarray, options, meta: dict, made_by: dict
):
    """`values` (rows x K): each row's output under each copy; `made_by`: the processes that
    trained the copies (Execution.record())."""
    settings = {
        key: source.settings[key]
        for key in ("model", "task", "task_options", "dataset")
        if key in source.settings
    }
    settings.update(
        {
            "kind": PERTURBED,
            "output_function": f"perturbed-{options.recorded}",
            "projection": {
                "kind": PERTURBED,
                "dim": int(values.shape[1]),
                "seed": options.seed,
                "copies": copies_fingerprint(meta),
                "objective": options.objective,
                "black_box": options.black_box,
                "recorded": options.recorded,
            },
        }
    )
    scalars = {"index": source.column("index"), "loss": source.column("loss")}
    return write_arrays(
        Path(path),
        {MODULE: values.astype(np.float32)},
        scalars,
        settings,
        shard_size=int(source.settings.get("shard_size", 1024)),
        made_by=made_by,
    )
