"""`attrib magic` as a library call: a run and a query store in, ranked records out; the
score matrix is kept per block of queries in RUN/magic/ (a killed run resumes)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from attrib import log
from attrib.atomic import atomic_path
from attrib.errors import AttribError
from attrib.evaluate.sources import fixed_query_labels, store_source
from attrib.progress import progress_bar
from attrib.runs.engine import set_buffers, state_from_snapshot
from attrib.runs.magic import metagradients
from attrib.runs.magic_options import MagicOptions
from attrib.runs.record import Run
from attrib.runs.smoothness import smoothness_check
from attrib.runs.train import Loaded, load_run
from attrib.store import Store


def run_magic(options: MagicOptions) -> tuple[list[dict], dict | None]:
    """(ranked records, smoothness summary or None)."""
    run = Run.open(options.run)
    queries = Store(options.queries)
    loaded = load_run(run, options.device)
    output = options.output or loaded.task.evaluation_output
    if output not in loaded.task.output_functions:
        raise AttribError(f"--output {output} is not available for {loaded.task.name} models")
    final = state_from_snapshot(run, run.steps, loaded.stepper, loaded.optimizer)
    loaded.stepper.load_into_model(final.params)
    set_buffers(loaded.stepper, final.buffers)
    labels = fixed_query_labels(loaded.task, queries, loaded.device)
    source = store_source(loaded.task, queries, loaded.device, labels)
    matrix = _all_blocks(run, loaded, source, queries, output, options)
    smooth = None
    if options.smoothness:
        checked = min(queries.num_examples, options.block)
        batch = source.batch(list(range(checked)))
        smooth = smoothness_check(
            run, loaded, batch, matrix[:checked], output, options.smoothness, options.drop
        )
    scores = matrix if output == "margin" else -matrix  # higher = more helpful
    if options.out is not None:
        with atomic_path(options.out, ".npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, scores.astype(np.float32))
    return _records(run, queries, scores, options), smooth


def _all_blocks(run, loaded: Loaded, source, queries: Store, output: str, options) -> np.ndarray:
    key = hashlib.sha256(json.dumps([queries.fingerprint(), output]).encode()).hexdigest()[:16]
    parts = Path(run.path) / "magic" / key
    count = queries.num_examples
    blocks = [(s, min(s + options.block, count)) for s in range(0, count, options.block)]
    todo = [b for b in blocks if not _part(parts, b).is_file()]
    if len(todo) < len(blocks):
        log.info(f"resuming: {len(blocks) - len(todo)} of {len(blocks)} query blocks kept")
    with progress_bar(options.progress, unit="steps") as bar:
        task = bar.add_task("magic", total=len(todo) * run.steps)
        for start, end in todo:
            batch = source.batch(list(range(start, end)))
            block = metagradients(run, loaded, batch, output, lambda: bar.advance(task))
            parts.mkdir(parents=True, exist_ok=True)
            with atomic_path(_part(parts, (start, end)), ".npy") as tmp, open(tmp, "wb") as f:
                np.save(f, block)
    return np.concatenate([np.load(_part(parts, b)) for b in blocks])


def _part(parts: Path, block: tuple[int, int]) -> Path:
    return parts / f"queries-{block[0]:08d}-{block[1]:08d}.npy"


class _RunRows:
    """What Previewer reads of a store, for the run's training rows."""

    def __init__(self, run: Run):
        self.settings = {
            "dataset": run.meta["data"],
            "task_options": {"columns": run.meta["columns"]},
        }


def _records(run: Run, queries: Store, scores: np.ndarray, options) -> list[dict]:
    from attrib.score.preview import Previewer

    top = min(options.top, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    previews = Previewer(_RunRows(run))(order.reshape(-1)) if options.preview else {}
    query_ids = [int(i) for i in queries.column("index")]
    echoed = Previewer(queries)(query_ids) if options.preview else {}
    records = []
    for q, row in enumerate(order):
        shown = "  ".join(f"{k}: {v}" for k, v in echoed.get(query_ids[q], {}).items())
        for rank, index in enumerate(row):
            record = {"query": q, "query_id": query_ids[q]}
            if shown:
                record["query_preview"] = shown
            record.update(rank=rank + 1, index=int(index), score=float(scores[q, index]))
            records.append({**record, **previews.get(int(index), {})})
    return records
