"""Batches of a store's rows, re-read from the dataset its manifest names."""

from __future__ import annotations

import numpy as np
import torch

from attrib.data import open_dataset, ref_from_settings, undecoded
from attrib.store import Store
from attrib.training.loop import BatchSource


def store_source(task, store: Store, device, labels=None) -> BatchSource:
    """The store's rows (in store order) as batches for `task`."""
    settings = store.settings
    dataset = open_dataset(ref_from_settings(settings["dataset"]))
    columns = dict(settings["task_options"]["columns"])
    dataset = undecoded(dataset, columns.get("image"))
    dataset = dataset.select(store.column("index").tolist())
    return BatchSource(task, dataset, columns, device, labels)


def fixed_query_labels(task, store: Store, device) -> np.ndarray | None:
    """For label-less classifier queries, the class the current model predicts: outputs are
    then always measured for the class the query's features explain."""
    columns = store.settings["task_options"]["columns"]
    if columns.get("label"):
        return None
    source = store_source(task, store, device)
    predictions = []
    with torch.no_grad():
        for start in range(0, store.num_examples, 256):
            batch = source.batch(list(range(start, min(start + 256, store.num_examples))))
            predicted = task.predicted_labels(batch)
            if predicted is None:
                return None
            predictions.append(predicted.cpu())
    return torch.cat(predictions).numpy()
