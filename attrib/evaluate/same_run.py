"""`evaluate retrain --same-run RUN`: the counterfactual ground truth of one recorded run.

Subset m replays the run exactly (its init, its batches in their order, its per-step noise)
with the loss weights of the rows it leaves out set to 0, so the only difference from the
trained checkpoint is those rows: no seed-to-seed noise, unlike retraining from other seeds.
The file, its parts folder, resuming and `--shard i/n` are those of `evaluate retrain`.
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
from attrib.evaluate.retrain import _part, _save_part, _say_cost, make_masks
from attrib.evaluate.sources import fixed_query_labels, store_source
from attrib.progress import progress_bar
from attrib.runs.engine import run_steps, set_buffers, state_from_snapshot
from attrib.runs.record import Run
from attrib.runs.train import load_run
from attrib.store import Store
from attrib.train import outputs


def check_store_is_the_runs(run: Run, store: Store) -> None:
    data = run.meta["data"]
    same_data = store.settings["dataset"].get("fingerprint") == data.get("fingerprint")
    if not same_data or store.num_examples != run.meta["rows"]:
        raise AttribError(
            f"--train {store.path} does not hold the rows run {run.path} trained on "
            f"({run.meta['rows']} rows of {data['source']}); featurize RUN/model on the run's "
            "data with --max-examples equal to its rows"
        )
    if not np.array_equal(store.column("index"), np.arange(run.meta["rows"])):
        raise AttribError(f"--train {store.path} holds its rows in another order than the run")


def retrain_same_run(config: RetrainOptions) -> GroundTruth | None:
    if config.seeds > 1:
        raise AttribError("--same-run replays one run exactly: --seeds does not apply")
    run = Run.open(config.same_run)
    train_store, query_store = Store(config.train), Store(config.queries)
    check_store_is_the_runs(run, train_store)
    loaded = load_run(run, config.device)
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
        "same_run": {
            "fingerprint": run.meta["model"]["fingerprint"],
            "steps": run.steps,
            "recipe": run.meta["recipe"],
        },
        "output": output,
    }
    check_or_write_meta(parts, meta, "subsets", counts=("subsets",))
    masks = make_masks(train_store.num_examples, config.subsets, config.alpha, config.seed)
    index, count = config.shard_pair
    todo = [m for m in range(index, config.subsets, count) if not _part(parts, m).exists()]
    start = state_from_snapshot(run, 0, loaded.stepper, loaded.optimizer)
    with progress_bar(config.progress, unit="models") as bar:
        bar_task = bar.add_task("replay", total=len(todo))
        started = time.perf_counter()
        for done, m in enumerate(todo):
            if done == 1:
                _say_cost(len(todo), time.perf_counter() - started)
            state = run_steps(
                loaded.stepper,
                loaded.optimizer,
                loaded.source,
                loaded.batches,
                start,
                0,
                run.steps,
                weights=masks[m].astype(np.float64),
            )
            loaded.stepper.load_into_model(state.params)
            set_buffers(loaded.stepper, state.buffers)
            _save_part(parts, m, 0, outputs(task, query_source, query_store.num_examples, output))
            bar.advance(bar_task)
    missing = [m for m in range(config.subsets) if not _part(parts, m).exists()]
    if missing:
        log.info(f"{config.subsets - len(missing)} of {config.subsets} replays done in {parts}")
        return None
    values = np.stack([np.load(_part(parts, m)) for m in range(config.subsets)])
    extra = {
        "recipe": json.dumps(meta),
        "output_function": output,
        "same_run": str(run.path),
        "train_rows": train_store.rows_key(),
        "queries_rows": query_store.rows_key(),
    }
    truth = GroundTruth(masks, values, output == "margin", extra)
    save_groundtruth(config.out, truth)
    queries = query_store.num_examples
    log.info(f"wrote {config.out}: {config.subsets} same-run replays x {queries} queries")
    return truth
