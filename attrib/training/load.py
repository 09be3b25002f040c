"""Reopening a recorded run's model and data for replay, refusing what changed since it was
recorded: the model it started from (weights, tokenizer and config files) and the training
rows (their values and order). A replay on other inputs would answer for another run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attrib import log
from attrib.data import open_dataset, ref_from_settings, rows_fingerprint, undecoded
from attrib.distributed import resolve_device
from attrib.errors import AttribError
from attrib.sharding import shard_model
from attrib.tasks import ModelRef, TaskOptions, load_task
from attrib.tasks.loading import DTYPES
from attrib.training.gathered import GatheredStepper
from attrib.training.loop import BatchSource
from attrib.training.optim import Optimizer
from attrib.training.recipe import Recipe
from attrib.training.record import Run
from attrib.training.sharded import stepper_for
from attrib.training.stepper import Stepper


@dataclass
class Loaded:
    """A run's task, its training rows as batches, its stepper and optimizer."""

    task: object
    source: BatchSource
    stepper: Stepper
    optimizer: Optimizer
    batches: list[np.ndarray]
    device: torch.device


def model_record(task) -> dict:
    """What a run records of the model it starts from, and checks again before a replay."""
    adapter = task.info.get("adapter") or {}
    return {
        "source": task.info["source"],
        "fingerprint": task.info["fingerprint"],
        "adapter": adapter.get("source"),
        **({"adapter_fingerprint": adapter["fingerprint"]} if adapter else {}),
    }


def check_model_unchanged(run: Run, task) -> None:
    recorded, now = run.meta["model"], model_record(task)
    for key, what in (("fingerprint", "model"), ("adapter_fingerprint", "adapter")):
        if key in recorded and recorded[key] != now.get(key):
            source = recorded["source"] if key == "fingerprint" else recorded.get("adapter")
            raise AttribError(
                f"the {what} at {source} changed since run {run.path} was recorded (its files' "
                "fingerprint differs): a replay would not be that run; restore it, or train a "
                "new run"
            )


def check_data_unchanged(run: Run, dataset, columns: dict) -> None:
    data = run.meta["data"]
    if len(dataset) < run.rows:
        raise AttribError(
            f"the data at {data['source']} has {len(dataset)} rows, run {run.path} trained on "
            f"{run.rows}: it changed since the run was recorded; restore it, or train a new run"
        )
    if "content" in data:
        same = rows_fingerprint(dataset, run.rows, columns) == data["content"]
    else:  # recorded before content fingerprints: datasets' own
        same = dataset._fingerprint == data.get("fingerprint")
    if not same:
        raise AttribError(
            f"the training data at {data['source']} changed since run {run.path} was recorded "
            "(its rows' values or order differ): a replay would not be that run; restore it, "
            "or train a new run"
        )


def load_run(run: Run, device: str = "auto", runtime=None, gathered: bool = False) -> Loaded:
    """Reopen a recorded run's model and data, ready to replay; with `runtime`, the model
    sharded over its processes (--fsdp) before it moves to the device, or, `gathered`, the
    trainable state sharded and the weights gathered inside each step's graph (magic
    --fsdp, gathered.py)."""
    meta = run.meta
    model = meta["model"]
    ref = ModelRef(model["source"], None, model.get("adapter"), None, False)
    try:
        options = TaskOptions.from_record(meta["task_options"])
    except (TypeError, ValueError) as exc:
        raise AttribError(f"{run.path}/run.json: task options are damaged ({exc})") from None
    task = load_task(ref, meta["task"], DTYPES[meta["dtype"]], options)
    check_model_unchanged(run, task)
    resolved = resolve_device(device)
    recipe = Recipe(**meta["recipe"])
    stepper = None
    if gathered:  # the shards are cut before the model moves: it never has to fit whole
        stepper = GatheredStepper(task, recipe.seed, runtime.world_size, runtime.rank)
        stepper.to(resolved)
        log.info(f"--fsdp: {stepper.describe()}")
    elif runtime is not None:
        log.info(f"--fsdp: {shard_model(task.model, runtime)}")
    task.to(resolved)
    dataset = open_dataset(ref_from_settings(meta["data"]))
    columns = dict(meta["columns"])
    check_data_unchanged(run, dataset, columns)
    dataset = undecoded(dataset, columns.get("image")).select(range(run.rows))
    source = BatchSource(task, dataset, columns, resolved)
    batches = run.batches()
    stepper = stepper or stepper_for(task, recipe.seed)
    if stepper.names != meta["trainable"]:
        raise AttribError(
            f"run {run.path} trained other parameters than the model at {model['source']} has "
            "now; restore the model, or train a new run"
        )
    optimizer = Optimizer.from_recipe(recipe, len(batches))
    return Loaded(task, source, stepper, optimizer, batches, resolved)
