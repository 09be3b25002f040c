"""`attrib magic` as a library call: a run and a query store in, ranked records out; the
score matrix is kept per block of queries in RUN/magic/ (a killed run resumes)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from functools import partial
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

# Part of the block cache's key: bumped whenever the scores a run gets change, so blocks a
# previous version computed are recomputed (2: BatchNorm's running statistics differentiated).
ALGORITHM = 2


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
    blocks = _query_blocks(loaded, source, queries.num_examples, output, options)
    matrix = _all_blocks(run, loaded, blocks, queries, output, options)
    labels = [label for _, _, rows in blocks for label in rows]
    smooth = None
    if options.smoothness:
        checked = min(queries.num_examples, options.block)
        batch = source.batch(list(range(checked)))
        owner = np.array([q for q, _, _ in labels])
        per_query = np.stack([matrix[owner == q].sum(0) for q in range(checked)])
        smooth = smoothness_check(
            run, loaded, batch, per_query, output, options.smoothness, options.drop
        )
    scores = matrix if output == "margin" else -matrix  # higher = more helpful
    if options.out is not None:
        with atomic_path(options.out, ".npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, scores.astype(np.float32))
    return _records(run, queries, scores, labels, options), smooth


Block = tuple[str, Callable[[], dict], list[tuple[int, int | None, str | None]]]


def _query_blocks(loaded: Loaded, source, count: int, output: str, options) -> list[Block]:
    """(name, its batch, its rows as (query, token position, token text)). With --per-token
    each query is a block of one row per completion token, whose outputs (each token's
    share of the mean loss) sum to the query's loss, and so do their metagradients."""
    if not options.per_token:
        spans = [(s, min(s + options.block, count)) for s in range(0, count, options.block)]
        return [
            (
                f"queries-{s:08d}-{e:08d}",
                partial(source.batch, list(range(s, e))),
                [(q, None, None) for q in range(s, e)],
            )
            for s, e in spans
        ]
    task = loaded.task
    if not hasattr(task, "token_rows") or output != "loss":
        raise AttribError("--per-token is for language models and their loss output")
    blocks = []
    for q in range(count):
        rows, positions = task.token_rows(source.batch([q]))
        ids = rows["input_ids"][0].tolist()
        labels = [(q, p, task.processor.decode([ids[p]])) for p in positions]
        blocks.append((f"query-{q:08d}-tokens", partial(dict, rows), labels))
    return blocks


def _all_blocks(
    run, loaded: Loaded, blocks: list[Block], queries: Store, output: str, options
) -> np.ndarray:
    key = [queries.fingerprint(), output, ALGORITHM] + (["per-token"] if options.per_token else [])
    parts = Path(run.path) / "magic" / hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    todo = [b for b in blocks if not (parts / f"{b[0]}.npy").is_file()]
    if len(todo) < len(blocks):
        log.info(f"resuming: {len(blocks) - len(todo)} of {len(blocks)} query blocks kept")
    with progress_bar(options.progress, unit="steps") as bar:
        task = bar.add_task("magic", total=len(todo) * run.steps)
        for name, batch, _ in todo:
            block = metagradients(run, loaded, batch(), output, lambda: bar.advance(task))
            parts.mkdir(parents=True, exist_ok=True)
            with atomic_path(parts / f"{name}.npy", ".npy") as tmp, open(tmp, "wb") as f:
                np.save(f, block)
    return np.concatenate([np.load(parts / f"{b[0]}.npy") for b in blocks])


class _RunRows:
    """What Previewer reads of a store, for the run's training rows."""

    def __init__(self, run: Run):
        self.settings = {
            "dataset": run.meta["data"],
            "task_options": {"columns": run.meta["columns"]},
        }


def _records(run: Run, queries: Store, scores: np.ndarray, labels, options) -> list[dict]:
    from attrib.score.preview import Previewer

    top = min(options.top, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    previews = Previewer(_RunRows(run))(order.reshape(-1)) if options.preview else {}
    query_ids = [int(i) for i in queries.column("index")]
    echoed = Previewer(queries)(query_ids) if options.preview else {}
    records = []
    for line, row in enumerate(order):
        q, position, text = labels[line]
        shown = "  ".join(f"{k}: {v}" for k, v in echoed.get(query_ids[q], {}).items())
        for rank, index in enumerate(row):
            record = {"query": q, "query_id": query_ids[q]}
            if shown:
                record["query_preview"] = shown
            if position is not None:
                record.update(token=position, token_text=text)
            record.update(rank=rank + 1, index=int(index), score=float(scores[line, index]))
            records.append({**record, **previews.get(int(index), {})})
    return records
