"""`attrib evaluate retrain`: the LDS ground truth for the built-in tasks.

M random subsets of the training store (each keeps round(alpha * N) examples, seeded), a
model trained on each with a recipe (`--seeds S`: S models from different seeds, outputs
averaged), every query's output recorded. Work is kept per subset and seed in `OUT.parts/`
(written atomically), so a killed run resumes. Subsets are units of the execution layer
(attrib/execution.py): the processes of a torchrun or accelerate launch share them, and so do
array jobs (`--shard i/n`) sharing that folder; the launch's first process, or the array job
that finds every subset done, writes OUT.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from attrib import log
from attrib.atomic import check_or_write_meta
from attrib.errors import AttribError
from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth
from attrib.evaluate.options import RetrainOptions
from attrib.evaluate.reliability import split_half_reliability
from attrib.evaluate.start_from import start_from
from attrib.execution import start_execution
from attrib.progress import progress_bar
from attrib.sharding import load_state, shard_model
from attrib.store import Store
from attrib.tasks import load_task_from_settings
from attrib.tasks.output_functions import output_function
from attrib.training.loop import InitialState, outputs, train
from attrib.training.parts import (
    all_parts_done,
    load_part,
    make_masks,
    part_done,
    save_part,
    say_cost,
)
from attrib.training.sources import fixed_query_labels, store_source


def subset_seed(seed: int, subset: int, replicate: int = 0) -> int:
    key = f"retrain:{seed}:{subset}" + (f":{replicate}" if replicate else "")
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _output_task(settings: dict, config: RetrainOptions):
    """The task whose outputs are recorded; diffusion's timesteps and noise may differ from
    the store's (a ground truth averaged over more of them is less noisy)."""
    task = load_task_from_settings(settings)
    overrides = {
        name: value
        for name, value in (("timesteps", config.timesteps), ("noise_seed", config.noise_seed))
        if value is not None
    }
    if overrides:
        if task.name != "diffusion":
            raise AttribError("--timesteps and --noise-seed apply to diffusion models only")
        task.options = replace(task.options, **overrides)
        task.timesteps()  # a count out of range fails here, before any training
    return task


def retrain(config: RetrainOptions) -> GroundTruth | None:
    if config.same_run is not None:
        from attrib.evaluate.same_run import retrain_same_run

        return retrain_same_run(config)
    train_store, query_store = Store(config.train), Store(config.queries)
    settings = train_store.settings
    recipe = config.recipe_resolved
    task = _output_task(settings, config)
    execution = start_execution(config.device, config.shard, sharded=config.fsdp)
    device = execution.device
    if config.fsdp:  # sharded first: each process then moves only its pieces to the device
        log.info(f"--fsdp: {shard_model(task.model, execution.runtime)}")
    task.to(device)
    output = config.output or task.evaluation_output
    if output not in task.output_functions:
        raise AttribError(f"--output {output} is not available for {task.name}")
    parts = Path(f"{config.out}.parts")
    start = start_from(task, settings, config.start_from) if config.start_from else None
    meta = {
        "train": train_store.fingerprint(),
        "queries": query_store.fingerprint(),
        "subsets": config.subsets,
        "alpha": config.alpha,
        "seed": config.seed,
        "recipe": recipe.to_dict(),
        "output": output,
        # Recorded only when not the default, so parts made before these options still resume.
        **({"seeds": config.seeds} if config.seeds > 1 else {}),
        **({"timesteps": task.options.timesteps} if config.timesteps else {}),
        **({"noise_seed": task.options.noise_seed} if config.noise_seed is not None else {}),
        **({"start_from": start[1]} if start is not None else {}),
    }
    # Subset m's mask and seed r's model do not depend on the totals: a run with more
    # subsets or seeds extends an earlier one (a single-seed ground truth gains a second seed
    # for its reliability without retraining the first).
    execution.agree(meta, "ground-truth settings")
    execution.first_then_rest(
        lambda: check_or_write_meta(parts, meta, "subsets", counts=("subsets", "seeds"))
    )
    masks = make_masks(train_store.num_examples, config.subsets, config.alpha, config.seed)
    train_source = store_source(task, train_store, device)
    labels = fixed_query_labels(task, query_store, device)  # before any retraining
    query_source = store_source(task, query_store, device, labels)
    query_count = query_store.num_examples
    if start is not None:
        load_state(task.model, start[0])
    initial = InitialState(task)
    seeds = range(config.seeds)
    todo = execution.pending(
        [(m, r) for m in execution.mine(range(config.subsets)) for r in seeds],
        lambda unit: part_done(parts, *unit, query_count),
    )
    with progress_bar(config.progress and execution.is_writer, unit="models") as bar:
        bar_task = bar.add_task("retrain", total=len(todo))
        started = time.perf_counter()
        for done, (m, r) in enumerate(todo):
            if done == 1:  # the first model's time prices the run
                say_cost(len(todo), time.perf_counter() - started)
            seed = subset_seed(config.seed, m, r)
            initial.restore(recipe, seed)
            torch.manual_seed(seed)
            train(task, train_source, np.flatnonzero(masks[m]), recipe, seed)
            values = outputs(task, query_source, query_count, output)
            if execution.saves_units:
                save_part(parts, m, r, values)
            bar.advance(bar_task)
    if not all_parts_done(execution, parts, config.subsets, config.seeds, query_count, config.out):
        return None
    by_seed = np.stack(
        [np.stack([load_part(parts, m, r) for m in range(config.subsets)]) for r in seeds]
    )
    extra = {
        "recipe": json.dumps(meta),
        "output_function": output,
        "train_rows": train_store.rows_key(),
        "queries_rows": query_store.rows_key(),
        "made_by": json.dumps(execution.record()),
    }
    if config.seeds > 1:
        extra["outputs_by_seed"] = by_seed
    truth = GroundTruth(masks, by_seed.mean(0), output_function(output).higher_is_better, extra)
    save_groundtruth(config.out, truth)
    log.info(f"wrote {config.out}: {config.subsets} subsets x {query_count} queries")
    if config.seeds > 1:
        reliability = split_half_reliability(by_seed)
        log.info(
            f"ground-truth noise: split-half Spearman {reliability.split_half:.3f}, "
            f"reliability of the {config.seeds}-seed mean {reliability.full:.3f} "
            f"(an LDS ceiling of about {reliability.ceiling:.3f})"
        )
    execution.finish()
    return truth
