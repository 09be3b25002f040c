"""`evaluate retrain --same-run RUN`: the counterfactual ground truth of one recorded run.

Subset m replays the run exactly (its init, its batches in their order, its per-step noise)
with the loss weights of the rows it leaves out set to 0, so the only difference from the
trained checkpoint is those rows: no seed-to-seed noise, unlike retraining from other seeds.
The file, its parts folder, resuming and the sharing of subsets among processes and array
jobs are those of `evaluate retrain`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from attrib import log
from attrib.atomic import check_or_write_meta
from attrib.errors import AttribError
from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth
from attrib.evaluate.options import RetrainOptions
from attrib.execution import start_execution
from attrib.progress import progress_bar
from attrib.store import Store
from attrib.tasks.output_functions import output_function
from attrib.training.engine import replay, set_buffers, state_from_snapshot
from attrib.training.inputs import check_query_task, check_store_is_the_runs
from attrib.training.load import load_run
from attrib.training.loop import outputs
from attrib.training.parts import (
    all_parts_done,
    load_part,
    make_masks,
    part_done,
    save_part,
    say_cost,
)
from attrib.training.record import Run
from attrib.training.sources import fixed_query_labels, store_source


def retrain_same_run(config: RetrainOptions) -> GroundTruth | None:
    if config.seeds > 1:
        raise AttribError("--same-run replays one run exactly: --seeds does not apply")
    run = Run.open(config.same_run)
    train_store, query_store = Store(config.train), Store(config.queries)
    check_store_is_the_runs(run, train_store)
    check_query_task(run, query_store)
    execution = start_execution(config.device, config.shard, sharded=config.fsdp)
    # --fsdp: sharded before any state is read, so each process reads its pieces of it.
    loaded = load_run(run, str(execution.device), execution.runtime if config.fsdp else None)
    task = loaded.task
    output = config.output or task.evaluation_output
    if output not in task.output_functions:
        raise AttribError(f"--output {output} is not available for {task.name}")
    final = state_from_snapshot(run, run.steps, loaded.stepper, loaded.optimizer)
    loaded.stepper.load_into_model(final.params)
    set_buffers(loaded.stepper, final.buffers)
    labels = fixed_query_labels(task, query_store, loaded.device)  # the run's own predictions
    query_source = store_source(task, query_store, loaded.device, labels)
    parts = Path(f"{config.out}.parts")
    meta = {
        "train": train_store.fingerprint(),
        "queries": query_store.fingerprint(),
        "subsets": config.subsets,
        "alpha": config.alpha,
        "seed": config.seed,
        # Parts are bound to the run (its settings and every file's checksum): parts of
        # another run, or of this one before it changed, are never merged with these.
        "same_run": {
            "fingerprint": run.meta["model"]["fingerprint"],
            "steps": run.steps,
            "recipe": run.meta["recipe"],
            "run": run.identity(),
        },
        "output": output,
    }
    execution.agree(meta, "ground-truth settings")
    execution.first_then_rest(
        lambda: check_or_write_meta(parts, meta, "subsets", counts=("subsets",))
    )
    masks = make_masks(train_store.num_examples, config.subsets, config.alpha, config.seed)
    queries = query_store.num_examples
    todo = execution.pending(
        execution.mine(range(config.subsets)), lambda m: part_done(parts, m, 0, queries)
    )
    start = state_from_snapshot(run, 0, loaded.stepper, loaded.optimizer)  # read once
    with progress_bar(config.progress and execution.is_writer, unit="models") as bar:
        bar_task = bar.add_task("replay", total=len(todo))
        started = time.perf_counter()
        for done, m in enumerate(todo):
            if done == 1:
                say_cost(len(todo), time.perf_counter() - started)
            state = replay(run, loaded, masks[m].astype(np.float64), start)
            loaded.stepper.load_into_model(state.params)
            set_buffers(loaded.stepper, state.buffers)
            values = outputs(task, query_source, queries, output)
            if execution.saves_units:
                save_part(parts, m, 0, values)
            bar.advance(bar_task)
    if not all_parts_done(execution, parts, config.subsets, 1, queries, config.out):
        return None
    values = np.stack([load_part(parts, m) for m in range(config.subsets)])
    extra = {
        "recipe": json.dumps(meta),
        "output_function": output,
        "same_run": str(run.path),
        "train_rows": train_store.rows_key(),
        "queries_rows": query_store.rows_key(),
        "made_by": json.dumps(execution.record()),
    }
    truth = GroundTruth(masks, values, output_function(output).higher_is_better, extra)
    save_groundtruth(config.out, truth)
    log.info(f"wrote {config.out}: {config.subsets} same-run replays x {queries} queries")
    execution.finish()
    return truth
