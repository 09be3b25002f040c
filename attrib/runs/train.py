"""`attrib train`: a recorded, replayable training run, and `--check`, its bitwise replay.

A killed run resumes from its latest snapshot: the batches are a function of the seed and
every step is deterministic, so the resumed run is the uninterrupted one.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attrib import log
from attrib.atomic import atomic_dir
from attrib.data import dataset_info, open_dataset, ref_from_settings, undecoded
from attrib.distributed import resolve_device
from attrib.errors import AttribError
from attrib.jsonio import load_json_or_none
from attrib.memory import GIB
from attrib.progress import progress_bar
from attrib.recipe import Recipe
from attrib.runs.engine import State, model_buffers, run_steps, state_from_snapshot
from attrib.runs.optim import Optimizer
from attrib.runs.options import TrainOptions
from attrib.runs.record import (
    RUN_FILE,
    Run,
    environment,
    save_batches,
    save_snapshot,
    snapshot_path,
    write_meta,
)
from attrib.runs.stepper import Stepper
from attrib.tasks import ModelRef, TaskOptions, load_task
from attrib.tasks.loading import DTYPES
from attrib.train import BatchSource, InitialState


def make_batches(count: int, recipe: Recipe) -> list[np.ndarray]:
    """Every step's rows: a seeded permutation per epoch, cut into batches."""
    rng = np.random.default_rng(recipe.seed)
    batches = []
    for _ in range(recipe.epochs):
        order = rng.permutation(count)
        batches += [order[s : s + recipe.batch_size] for s in range(0, count, recipe.batch_size)]
    return batches


def snapshot_steps(total: int, every: int | None, state_bytes: int, budget_gb: float) -> list[int]:
    """Steps before which the state is saved: every ~sqrt(T) (the REPLAY trade-off: one extra
    forward pass over the run, sqrt(T) states in memory), spaced wider when a segment's
    states would not fit the memory budget."""
    if every is None:
        every = max(1, math.ceil(math.sqrt(total)))
        fits = max(1, int(budget_gb * GIB / 2 / max(state_bytes, 1)))
        every = min(every, fits) if fits < every else every
    return sorted({*range(0, total, every), total})


@dataclass
class Loaded:
    """A run's task, its training rows as batches, its stepper and optimizer."""

    task: object
    source: BatchSource
    stepper: Stepper
    optimizer: Optimizer
    batches: list[np.ndarray]
    device: torch.device


def load_run(run: Run, device: str = "auto") -> Loaded:
    """Reopen a recorded run's model and data, ready to replay."""
    meta = run.meta
    model = meta["model"]
    ref = ModelRef(model["source"], None, model.get("adapter"), None, False)
    options = TaskOptions.from_record(meta["task_options"])
    task = load_task(ref, meta["task"], DTYPES[meta["dtype"]], options)
    resolved = resolve_device(device)
    task.to(resolved)
    dataset = open_dataset(ref_from_settings(meta["data"]))
    columns = dict(meta["columns"])
    dataset = undecoded(dataset, columns.get("image"))
    dataset = dataset.select(range(meta["rows"]))
    source = BatchSource(task, dataset, columns, resolved)
    recipe = Recipe(**meta["recipe"])
    batches = run.batches()
    optimizer = Optimizer.from_recipe(recipe, len(batches))
    return Loaded(task, source, Stepper(task, recipe.seed), optimizer, batches, resolved)


def run_train(options: TrainOptions) -> Path:
    log.quiet_libraries()
    out, recipe = Path(options.out), options.recipe
    device = resolve_device(options.device)
    log.status(f"loading {options.model} ...")
    task = load_task(options.model_ref, options.task, DTYPES[options.dtype], options.task_options)
    task.to(device)
    dataset = open_dataset(options.data_ref)
    data_record = dataset_info(dataset, options.data_ref)
    columns = task.bind_columns(dataset)
    dataset = undecoded(dataset, columns.get("image"))
    rows = min(len(dataset), options.max_examples or len(dataset))
    dataset = dataset.select(range(rows))
    if recipe.init == "scratch":
        InitialState(task).restore(recipe, recipe.seed)
    stepper = Stepper(task, recipe.seed)
    batches = make_batches(rows, recipe)
    optimizer = Optimizer.from_recipe(recipe, len(batches))
    params = stepper.initial_params()
    state_bytes = (1 + len(optimizer.state_names())) * sum(
        p.numel() * p.element_size() for p in params
    )
    snapshots = snapshot_steps(len(batches), options.snapshot_every, state_bytes, options.memory_gb)
    meta = {
        "model": {
            "source": task.info["source"],
            "fingerprint": task.info["fingerprint"],
            "adapter": (task.info.get("adapter") or {}).get("source"),
        },
        "task": task.name,
        "task_options": task.options.record(),
        "columns": columns,
        "data": data_record,
        "rows": rows,
        "recipe": recipe.to_dict(),
        "dtype": options.dtype,
        "steps": len(batches),
        "snapshots": snapshots,
        "trainable": stepper.names,
    }
    start, state = _resume(out, meta, stepper, optimizer, task, params)
    if start is None:
        log.info(f"{out} is already a complete run with these settings; nothing to do")
        return out
    write_meta(out, {**meta, "environment": environment(device), "complete": False})
    if start == 0:
        save_snapshot(out, 0, *state.named(stepper, optimizer))
    else:
        log.info(f"resuming {out} from step {start} (its latest snapshot)")
    source = BatchSource(task, dataset, columns, device)
    wanted = set(snapshots)
    started = time.perf_counter()
    with progress_bar(options.progress, unit="steps") as bar:
        bar_task = bar.add_task("train", total=len(batches), completed=start)

        def after_step(step: int, current: State) -> None:
            if step in wanted:
                save_snapshot(out, step, *current.named(stepper, optimizer))
            bar.advance(bar_task)

        final = run_steps(
            stepper, optimizer, source, batches, state, start, len(batches), after_step=after_step
        )
    stepper.load_into_model(final.params)
    _save_checkpoint(task, out / "model")
    save_batches(out, batches)
    seconds = time.perf_counter() - started
    write_meta(
        out, {**meta, "environment": environment(device), "seconds": seconds, "complete": True}
    )
    log.info(
        f"wrote {out}: {len(batches)} steps, {len(snapshots)} snapshots, model in {out / 'model'}"
    )
    return out


def _resume(out: Path, meta: dict, stepper, optimizer, task, params) -> tuple[int | None, State]:
    """(first step to run, state before it); None when the run is already complete."""
    fresh = State(params, optimizer.init_state(params), model_buffers(stepper))
    old = load_json_or_none(out / RUN_FILE)
    if old is None:
        if out.exists() and any(out.iterdir()):
            raise AttribError(f"--out {out} exists and is not a run; choose another --out")
        return 0, fresh
    same = {k: old.get(k) for k in meta} == meta
    if not same:
        raise AttribError(f"--out {out} holds a run made with other settings; choose another --out")
    if old.get("complete"):
        return None, fresh
    done = [s for s in meta["snapshots"] if snapshot_path(out, s).is_file()]
    if not done or done[-1] == 0:
        return 0, fresh
    run = Run(out, {**old, "complete": True})
    return done[-1], state_from_snapshot(run, done[-1], stepper, optimizer)


def _save_checkpoint(task, folder: Path) -> None:
    """The trained model where featurize can read it: a transformers checkpoint (with its
    processor), a PEFT adapter folder, or a diffusers pipeline with the trained UNet."""
    source = Path(task.info["source"])
    with atomic_dir(folder) as tmp:
        if task.name == "diffusion":
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            shutil.rmtree(tmp / "unet")
            task.model.save_pretrained(tmp / "unet")
        else:
            task.model.save_pretrained(tmp)
            task.processor.save_pretrained(tmp)


def check_run(path: Path, device: str = "auto") -> dict:
    """Replay a recorded run with w = 1 and compare every snapshot it passes; returns
    {"steps", "identical", "max_abs_diff", "first_difference"}."""
    run = Run.open(path)
    loaded = load_run(run, device)
    state = state_from_snapshot(run, 0, loaded.stepper, loaded.optimizer)
    worst, first = 0.0, None
    checked = set(run.snapshots[1:])

    def compare(step: int, current: State) -> None:
        nonlocal worst, first
        if step not in checked:
            return
        recorded = state_from_snapshot(run, step, loaded.stepper, loaded.optimizer)
        for a, b in zip(current.params, recorded.params):
            diff = float((a - b).abs().max()) if a.numel() else 0.0
            if diff > 0 and first is None:
                first = step
            worst = max(worst, diff)

    run_steps(
        loaded.stepper,
        loaded.optimizer,
        loaded.source,
        loaded.batches,
        state,
        0,
        run.steps,
        after_step=compare,
    )
    return {
        "steps": run.steps,
        "identical": worst == 0.0,
        "max_abs_diff": worst,
        "first_difference": first,
        "threads": torch.get_num_threads(),
        "recorded_threads": run.meta.get("environment", {}).get("threads"),
    }
