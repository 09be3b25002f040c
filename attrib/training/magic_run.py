"""`attrib magic` as a library call: a run and a query store in, ranked records out; the
score matrix is kept per block of queries in RUN/magic/ (a killed run resumes). Blocks are
units of the execution layer: a torchrun launch, or array jobs (`--shard i/n`), share them."""

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
from attrib.execution import Execution, start_execution, write_provenance
from attrib.memory import Budget
from attrib.outputs import declare
from attrib.progress import progress_bar
from attrib.store import Store
from attrib.store.lock import lock_store, unlock_store
from attrib.tasks.output_functions import output_function
from attrib.training.engine import set_buffers, state_from_snapshot
from attrib.training.inputs import check_queries_are_the_runs, check_replica
from attrib.training.load import Loaded, load_run
from attrib.training.magic import metagradients
from attrib.training.magic_options import MagicOptions
from attrib.training.parts import read_back
from attrib.training.record import Run
from attrib.training.smoothness import smoothness_check
from attrib.training.sources import fixed_query_labels, store_source

# Part of the block cache's key: bumped whenever the scores a run gets change, so blocks a
# previous version computed are recomputed (2: BatchNorm's running statistics differentiated).
ALGORITHM = 2


def check_budget(run: Run, loaded: Loaded, options: MagicOptions) -> int:
    """The states of one segment and every query's adjoints of a block fit --memory-gb;
    returns what a segment's step graphs may hold."""
    state = sum(p.numel() * p.element_size() for p in loaded.stepper.initial_params())
    per_state = state * (1 + len(loaded.optimizer.state_names()))
    segment = max(b - a for a, b in zip(run.snapshots, run.snapshots[1:]))
    block = min(options.block, 10**9)
    needed = per_state * (segment + 2 * block)
    budget = Budget(options.memory_gb)
    budget.reserve(
        needed,
        f"a segment of {segment} states and the adjoints of {block} queries",
        "lower --block",
    )
    if loaded.stepper.replicas > 1:
        # --fsdp keeps no segment's graphs: each step's is built when the reverse pass
        # reaches it. Memory is what it is for, and the graphs could not be measured: the
        # innermost saved-tensor hooks win, and the gathers' hide the model's activations.
        return 0
    # Half of the rest may hold a segment's step graphs; the other half is the reverse
    # pass's room (its batched double backward holds a block's worth of activations).
    return budget.left // 2


def run_magic(options: MagicOptions) -> tuple[list[dict] | None, dict | None]:
    """(ranked records, smoothness summary or None); (None, None) on a process that does not
    report: the launch's others, or an array job that finds blocks still missing."""
    run = Run.open(options.run)
    replicas = [Run.open(path) for path in options.replicas]
    queries = Store(options.queries)
    check_queries_are_the_runs(run, queries)
    for replica in replicas:
        check_replica(run, replica)
    if len({r.identity() for r in [run, *replicas]}) < 1 + len(replicas):
        raise AttribError("--replicas names a run twice; give each run once")
    execution = start_execution(options.device, options.shard, sharded=options.fsdp)
    settings = [run.identity(), [r.identity() for r in replicas], queries.fingerprint()]
    settings += [options.output, options.block, options.per_token, options.fsdp]
    execution.agree(settings + [options.smoothness], "magic settings (run, queries or options)")
    # The replicas first, RUN last: its replay stays loaded for the smoothness check.
    parts = [_replayed(r, queries, options, execution)[-1] for r in replicas]  # freed
    loaded, source, blocks, output, main_parts = _replayed(run, queries, options, execution)
    parts.append(main_parts)
    execution.barrier()
    matrix = None
    if execution.is_writer and all(_merged(p, blocks, run.rows, False) for p in parts):
        if execution.claim_merge(main_parts, options.out):  # one array task merges
            matrix = np.mean([_merged(p, blocks, run.rows) for p in parts], axis=0)
    for p in parts:
        unlock_store(p)
    if matrix is None:
        execution.finish()
        return None, None
    labels = [label for _, _, rows in blocks for label in rows]
    smooth = None
    if options.smoothness:
        checked = min(queries.num_examples, options.smoothness_queries)
        batch = source.batch(list(range(checked)))
        owner = np.array([q for q, _, _ in labels])
        per_query = np.stack([matrix[owner == q].sum(0) for q in range(checked)])
        smooth = smoothness_check(
            run, loaded, batch, per_query, output, options.smoothness, options.drop
        )
    scores = output_function(output).helpful(matrix)  # higher = more helpful
    if options.out is not None:
        with atomic_path(options.out, ".npy") as tmp, open(tmp, "wb") as handle:
            np.save(handle, scores.astype(np.float32))
        provenance = {"command": "magic", "shape": list(scores.shape), "run": str(run.path)}
        if replicas:
            provenance["replicas"] = [str(r.path) for r in replicas]
        provenance.update(queries=str(queries.path), output=output, made_by=execution.record())
        write_provenance(options.out, provenance)
    records = _records(run, queries, scores, labels, options)
    execution.finish()
    return records, smooth


def _replayed(run: Run, queries: Store, options: MagicOptions, execution: Execution):
    """(loaded, query source, blocks, output, blocks folder): this process's query blocks of
    `run` computed and kept in its blocks folder (locked until the caller unlocks it)."""
    runtime = execution.runtime if options.fsdp else None
    loaded = load_run(run, str(execution.device), runtime, gathered=options.fsdp)
    graph_bytes = check_budget(run, loaded, options)
    output = options.output or loaded.task.evaluation_output
    if output not in loaded.task.output_functions:
        raise AttribError(f"--output {output} is not available for {loaded.task.name} models")
    final = state_from_snapshot(run, run.steps, loaded.stepper, loaded.optimizer)
    loaded.stepper.load_into_model(final.params)
    set_buffers(loaded.stepper, final.buffers)
    labels = fixed_query_labels(loaded.task, queries, loaded.device)
    source = store_source(loaded.task, queries, loaded.device, labels)
    blocks = _query_blocks(loaded, source, queries.num_examples, output, options)
    parts = _all_blocks(run, loaded, blocks, queries, output, options, graph_bytes, execution)
    return loaded, source, blocks, output, parts


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
    run, loaded: Loaded, blocks: list[Block], queries: Store, output: str, options,
    graph_bytes: int, execution: Execution,
) -> Path:  # fmt: skip
    """This process's share of the blocks computed and kept; returns their folder, locked."""
    # Blocks are bound to the run and the queries: a resume after either changed starts over.
    key = [run.identity(), queries.fingerprint(), output, ALGORITHM]
    key += ["per-token"] if options.per_token else []
    cache = Path(options.cache) if options.cache is not None else Path(run.path) / "magic"
    parts = cache / hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    parts.mkdir(parents=True, exist_ok=True)
    declare(parts)  # a full disk is said of the cache, not of --out
    # One magic per run and query store at a time; the workers of one (a launch's processes,
    # an array's jobs) share the folder, each writing only its own blocks.
    lock_store(parts, exclusive=execution.runtime.world_size * execution.array.count == 1)
    mine = execution.mine(blocks)
    done = lambda i: _block_done(parts, mine[i][0], len(mine[i][2]), run.rows)  # noqa: E731
    todo = [mine[i] for i in execution.pending(range(len(mine)), done)]  # numbers: picklable
    if len(todo) < len(mine):
        log.info(f"resuming: {len(mine) - len(todo)} of {len(mine)} query blocks kept")
    with progress_bar(options.progress and execution.is_writer, unit="steps") as bar:
        task = bar.add_task("magic", total=len(todo) * run.steps)
        for name, batch, _ in todo:
            block = metagradients(
                run, loaded, batch(), output, lambda: bar.advance(task), graph_bytes
            )
            if not execution.saves_units:  # --fsdp: every process made it; the main saves it
                continue
            parts.mkdir(parents=True, exist_ok=True)
            with atomic_path(parts / f"{name}.npy", ".npy") as tmp, open(tmp, "wb") as f:
                np.save(f, block)
    return parts


def _merged(parts: Path, blocks: list[Block], rows: int, read: bool = True):
    """The blocks' matrix (or, with read=False, True) once every block is done; else None."""
    done = sum(_block_done(parts, b[0], len(b[2]), rows) for b in blocks)
    if done < len(blocks):
        log.info(f"{done} of {len(blocks)} query blocks done in {parts}; run the other shards")
        return None
    return np.concatenate([np.load(parts / f"{b[0]}.npy") for b in blocks]) if read else True


def _block_done(parts: Path, name: str, queries: int, rows: int) -> bool:
    """A kept block is used only when it reads back whole, with its shape and finite values."""
    block = read_back(parts / f"{name}.npy")
    return block is not None and block.shape == (queries, rows) and bool(np.isfinite(block).all())


class _RunRows:
    """What RowReader reads of a store, for the run's training rows."""

    def __init__(self, run: Run):
        self.settings = {
            "dataset": run.meta["data"],
            "task_options": {"columns": run.meta["columns"]},
        }


def _records(run: Run, queries: Store, scores: np.ndarray, labels, options) -> list[dict]:
    from attrib.report.rows import RowReader

    top = min(options.top, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top]
    previews = RowReader(_RunRows(run)).previews(order.reshape(-1)) if options.preview else {}
    query_ids = [int(i) for i in queries.column("index")]
    echoed = RowReader(queries).previews(query_ids) if options.preview else {}
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
