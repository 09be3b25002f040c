"""`attrib score` as a library call: a request in, ranked records out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attrib import log
from attrib.errors import AttribError
from attrib.methods import METHODS, get_method
from attrib.score import queries
from attrib.score import stream as scoring
from attrib.score.preview import Previewer
from attrib.store import Store
from attrib.weights import load_weights

DEFAULT_TOP = 10


@dataclass
class ScoreRequest:
    train: Path
    method: str = "trak-block"
    damping: float | None = None
    weights: Path | None = None
    top: int | None = None
    out: Path | None = None
    self_influence: bool = False
    queries: Path | None = None
    values: list[str] | None = None
    prompts: list[str] | None = None
    preview: bool = True
    device: str = "auto"
    batch_size: int = 16
    trust_remote_code: bool = False
    progress: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise AttribError(f"unknown --method {self.method!r}; choose {', '.join(METHODS)}")
        if self.top is not None and self.top < 1:
            raise AttribError("--top must be at least 1")
        if self.out is not None and Path(self.out).suffix != ".npy":
            raise AttribError(f"--out {self.out}: the scores file must end in .npy")


def weight_vector(store: Store, path: Path | None) -> torch.Tensor | None:
    """The (D,) per-feature weights from a weights file, checked against the store's groups."""
    if path is None:
        return None
    per_module = load_weights(path).module_weights(store.module_names)
    return torch.from_numpy(store.layout.expand(per_module)).float()


def _warn_output_mismatch(store: Store, method: str) -> None:
    from attrib.tasks import TASKS

    task = TASKS.get(store.settings["task"])
    wanted = METHODS[method].output
    if task is None or wanted not in task.output_functions:
        wanted = "loss"  # the task has no such output function: its methods use the loss
    have = store.settings["output_function"]
    if have != wanted and (wanted, have) != ("journey", "loss"):  # jtrak: L_simple train side
        log.warn(
            f"{store.path} holds {have} gradients but {method} is defined on {wanted} gradients; "
            f"featurize with --method {method} for the method as published"
        )


def run_score(request: ScoreRequest) -> list[dict]:
    store = Store(request.train)
    _warn_output_mismatch(store, request.method)
    method = get_method(request.method, store, request.damping)
    weights = weight_vector(store, request.weights)
    if request.self_influence:
        return _self_records(store, method.prepare(), weights, request)
    if request.queries is not None:
        chosen = queries.from_store(store, Store(request.queries))
    else:
        chosen = queries.from_values(
            store,
            request.values or [],
            request.device,
            request.batch_size,
            request.trust_remote_code,
            request.prompts,
        )
    top = scoring.score(
        store,
        method.prepare(),
        chosen.features,
        request.top or DEFAULT_TOP,
        weights,
        request.out,
        request.progress,
    )
    previews = Previewer(store)(top.indices.reshape(-1)) if request.preview else {}
    records = []
    for q, query_id in enumerate(chosen.ids):
        for rank in range(top.scores.shape[1]):
            index = int(top.indices[q, rank])
            record = {
                "query": q,
                "query_id": query_id,
                "rank": rank + 1,
                "index": index,
                "score": float(top.scores[q, rank]),
            }
            records.append({**record, **previews.get(index, {})})
    return records


def _self_records(store, method, weights, request) -> list[dict]:
    values, index = scoring.self_influence(store, method, weights)
    if request.out is not None:
        scoring.write_vector(request.out, values)
    order = np.argsort(-values, kind="stable")[: request.top or len(values)]
    previews = Previewer(store)(index[order]) if request.preview else {}
    return [
        {
            "rank": r + 1,
            "index": int(index[i]),
            "self_influence": float(values[i]),
            **previews.get(int(index[i]), {}),
        }
        for r, i in enumerate(order)
    ]
