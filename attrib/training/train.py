"""`attrib train`: a recorded, replayable training run.

A killed run resumes from its latest intact snapshot: the batches are a function of the seed
and every step is deterministic, so the resumed run is the uninterrupted one. A complete run
whose files were damaged since is repaired the same way, from the last snapshot that is
still intact. One writer per run folder: the folder's lock is held for the whole run.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import torch

from attrib import log
from attrib.atomic import atomic_dir
from attrib.data import dataset_info, open_dataset, rows_fingerprint, undecoded
from attrib.distributed import resolve_device
from attrib.errors import AttribError
from attrib.execution import Execution
from attrib.jsonio import load_json_or_none
from attrib.memory import GIB
from attrib.progress import progress_bar
from attrib.sharding import shard_model, whole_state_dict
from attrib.store.lock import lock_store, unlock_store
from attrib.tasks import load_task
from attrib.tasks.loading import DTYPES
from attrib.training.batches import check_batches_fit, make_batches
from attrib.training.engine import State, model_buffers, run_steps, state_from_snapshot
from attrib.training.load import model_record
from attrib.training.loop import BatchSource, InitialState
from attrib.training.optim import Optimizer
from attrib.training.options import TrainOptions
from attrib.training.record import (
    RUN_FILE,
    Run,
    environment,
    file_entry,
    save_batches,
    save_snapshot,
    snapshot_name,
    write_meta,
)
from attrib.training.sharded import stepper_for

# Keys of run.json that do not say which run it is (compared when resuming or repairing).
_UNCOMPARED = ("environment", "seconds", "complete", "files", "format")


def snapshot_steps(total: int, every: int | None, state_bytes: int, budget_gb: float) -> list[int]:
    """Steps before which the state is saved: every ~sqrt(T) (the REPLAY trade-off: one extra
    forward pass over the run, sqrt(T) states in memory), spaced wider when a segment's
    states would not fit the memory budget."""
    if every is None:
        every = max(1, math.ceil(math.sqrt(total)))
        fits = max(1, int(budget_gb * GIB / 2 / max(state_bytes, 1)))
        every = min(every, fits) if fits < every else every
    return sorted({*range(0, total, every), total})


def _comparable(meta: dict) -> dict:
    """A record without what varies between identical runs: datasets' own fingerprint of a
    local file follows its modification time; the rows' content fingerprint decides."""
    out = {k: v for k, v in meta.items() if k not in _UNCOMPARED}
    if isinstance(out.get("data"), dict):
        out["data"] = {k: v for k, v in out["data"].items() if k != "fingerprint"}
    return out


def run_train(options: TrainOptions) -> Path:
    log.quiet_libraries()
    out = Path(options.out)
    if (
        out.is_dir()
        and not (out / RUN_FILE).exists()
        and any(p.name != ".lock" for p in out.iterdir())
    ):
        raise AttribError(f"--out {out} exists and is not a run; choose another --out")
    runtime = _launch(options)
    prepared = _Prepared(options, runtime)
    writer = runtime is None or runtime.is_main  # under --fsdp, the main process writes
    created = not out.exists()
    if runtime is not None:  # every process has looked at --out before anything is written
        # A node started with another model, data or recipe is refused on every process.
        what = "run settings (model, data or recipe)"
        Execution(runtime).agree(_comparable(prepared.meta), what)
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        lock_store(out, exclusive=True)  # one writer per run folder
    try:
        return _train(prepared, out, runtime)
    except BaseException as exc:
        cut = isinstance(exc, _Diverged) or not (out / RUN_FILE).exists()
        if writer and created and cut:
            unlock_store(out)  # nothing of a run that cannot finish is left behind
            shutil.rmtree(out, ignore_errors=True)
        if isinstance(exc, _Diverged):
            raise AttribError(str(exc)) from None
        raise
    finally:
        if writer:
            unlock_store(out)


def _launch(options: TrainOptions):
    """--fsdp: this process's place in the launch (refused outside one); else None."""
    if not options.fsdp:
        return None
    from attrib import distributed
    from attrib.sharding import require_launch

    runtime = distributed.init(options.device)
    require_launch(runtime)
    return runtime


class _Diverged(Exception):
    pass


class _Prepared:
    """The model, data, batches and record of a run, before its folder is touched."""

    def __init__(self, options: TrainOptions, runtime=None):
        recipe = options.recipe
        self.options, self.runtime = options, runtime
        # A launched process's own device (cuda:RANK), where its shards go.
        self.device = runtime.device if runtime is not None else resolve_device(options.device)
        log.status(f"loading {options.model} ...")
        model_ref, dtype = options.model_ref, DTYPES[options.dtype]
        task = load_task(model_ref, options.task, dtype, options.task_options)
        if runtime is None:  # a sharded model moves to the device in pieces, below
            task.to(self.device)
        dataset = open_dataset(options.data_ref)
        data_record = dataset_info(dataset, options.data_ref)
        self.columns = task.bind_columns(dataset)
        rows = min(len(dataset), options.max_examples or len(dataset))
        check_batches_fit(rows, recipe, options.memory_gb)
        data_record["content"] = rows_fingerprint(dataset, rows, self.columns)
        self.dataset = undecoded(dataset, self.columns.get("image")).select(range(rows))
        if recipe.init == "scratch":  # seeded: every process of a launch builds the same
            InitialState(task).restore(recipe, recipe.seed)
        if runtime is not None:
            log.info(f"--fsdp: {shard_model(task.model, runtime)}")
            task.to(self.device)
        self.task, self.stepper = task, stepper_for(task, recipe.seed)
        self.batches = make_batches(rows, recipe)
        self.optimizer = Optimizer.from_recipe(recipe, len(self.batches))
        self.params = self.stepper.initial_params()
        named = dict(task.model.named_parameters())  # whole sizes, sharded or not
        state_bytes = (1 + len(self.optimizer.state_names())) * sum(
            named[n].numel() * named[n].element_size() for n in self.stepper.names
        )
        every, budget = options.snapshot_every, options.memory_gb
        snapshots = snapshot_steps(len(self.batches), every, state_bytes, budget)
        self.meta = {
            "model": model_record(task),
            "task": task.name,
            "task_options": task.options.record(),
            "columns": self.columns,
            "data": data_record,
            "rows": rows,
            "recipe": recipe.to_dict(),
            "dtype": options.dtype,
            "steps": len(self.batches),
            "snapshots": snapshots,
            "trainable": self.stepper.names,
        }


def _train(prepared: _Prepared, out: Path, runtime=None) -> Path:
    task, stepper, optimizer = prepared.task, prepared.stepper, prepared.optimizer
    meta, batches = prepared.meta, prepared.batches
    writer = runtime is None or runtime.is_main
    start, state, files = _resume(out, meta, stepper, optimizer, prepared.params)
    if runtime is not None:  # every process has read the folder before the writer changes it
        runtime.barrier()
    if start is None:
        log.info(f"{out} is already a complete run with these settings; nothing to do")
        return _finished(out, runtime)
    env = environment(prepared.device)
    if runtime is not None:
        env |= {"processes": runtime.world_size, "fsdp": True}

    def record(complete: bool, **extra) -> None:
        if writer:
            meta_now = {**meta, "environment": env, **extra, "files": files}
            write_meta(out, {**meta_now, "complete": complete})

    def keep_snapshot(step: int, current: State) -> None:
        current = _whole(stepper, current)  # gathered on every process when sharded
        if not all(bool(torch.isfinite(p).all()) for p in current.params):
            raise _Diverged(
                f"training diverged before step {step} (parameters are not finite); lower "
                "--lr (or use --dtype float64) and train again"
            )
        if writer:
            named = current.named(stepper, optimizer)
            files[snapshot_name(step)] = save_snapshot(out, step, *named)
        record(False)

    if start == 0:
        keep_snapshot(0, state)
    else:
        record(False)
        log.info(f"resuming {out} from step {start} (its latest intact snapshot)")
    source = BatchSource(task, prepared.dataset, prepared.columns, prepared.device)
    wanted = set(meta["snapshots"])
    started = time.perf_counter()
    with progress_bar(prepared.options.progress, unit="steps") as bar:
        bar_task = bar.add_task("train", total=len(batches), completed=start)

        def after_step(step: int, current: State) -> None:
            if step in wanted:
                keep_snapshot(step, current)
            bar.advance(bar_task)

        final = run_steps(
            stepper, optimizer, source, batches, state, start, len(batches), after_step=after_step
        )
    stepper.load_into_model(final.params)
    weights = whole_state_dict(task.model) if runtime is not None else None  # a collective
    if writer:
        _save_checkpoint(task, out / "model", weights)
        for file in sorted((out / "model").rglob("*")):
            if file.is_file():
                files[str(file.relative_to(out))] = file_entry(file)
        files["batches.npz"] = save_batches(out, batches)
        record(True, seconds=time.perf_counter() - started)
    snapshots = len(meta["snapshots"])
    log.info(f"wrote {out}: {len(batches)} steps, {snapshots} snapshots, model in {out / 'model'}")
    return _finished(out, runtime)


def _finished(out: Path, runtime) -> Path:
    if runtime is not None:
        runtime.finish()  # the writer's files are complete before any process returns
    return out


def _whole(stepper, state: State) -> State:
    """The state with whole tensors (gathered from every process's shards when sharded)."""
    whole = stepper.whole
    return State(
        [whole(i, p) for i, p in enumerate(state.params)],
        [[whole(i, t) for i, t in enumerate(kind)] for kind in state.opt],
        state.buffers,
    )


def _resume(out: Path, meta: dict, stepper, optimizer, params) -> tuple[int | None, State, dict]:
    """(first step to run, state before it, files already recorded); None when the run is
    already complete and intact."""
    fresh = State(params, optimizer.init_state(params), model_buffers(stepper))
    old = load_json_or_none(out / RUN_FILE)
    if old is None:
        return 0, fresh, {}
    if _comparable(old) != _comparable(meta):
        raise AttribError(f"--out {out} holds a run made with other settings; choose another --out")
    files = old.get("files") if isinstance(old.get("files"), dict) else {}
    run = Run(out, {**old, "files": files})
    if old.get("complete") is True and _intact(run, list(files)):
        return None, fresh, files
    # Snapshots count only while every one before them is intact (a resume replays from it).
    done = 0
    for step in meta["snapshots"]:
        if snapshot_name(step) not in files or not _intact(run, [snapshot_name(step)]):
            break
        done = step
    if old.get("complete") is True:
        log.warn(f"{out} is damaged; repairing it: training again from step {done}")
    kept = {k: v for k, v in files.items() if k.startswith("snapshots/")
            and int(k[len("snapshots/step-"):-len(".safetensors")]) <= done}  # fmt: skip
    if done == 0:
        return 0, fresh, {}
    return done, state_from_snapshot(run, done, stepper, optimizer), kept


def _intact(run: Run, names: list[str]) -> bool:
    try:
        for name in names:
            run.verified(name)
    except AttribError:
        return False
    return True


def _save_checkpoint(task, folder: Path, weights: dict | None = None) -> None:
    """The trained model where featurize can read it: a transformers checkpoint (with its
    processor), a PEFT adapter folder, or a diffusers pipeline with the trained UNet.
    `weights`: the whole state dict of a sharded model."""
    source = Path(task.info["source"])
    given = {} if weights is None else {"state_dict": weights}
    with atomic_dir(folder) as tmp:
        if task.name == "diffusion":
            shutil.copytree(source, tmp, dirs_exist_ok=True)
            shutil.rmtree(tmp / "unet")
            task.model.save_pretrained(tmp / "unet", **given)
        else:
            task.model.save_pretrained(tmp, **given)
            plain_processor(task.processor).save_pretrained(tmp)


def plain_processor(processor):
    """A copy of the processor without the truncation and padding state a fast tokenizer
    keeps from its last call (saved into tokenizer.json, it would make the checkpoint's
    files depend on whether a batch was tokenized before the save: a resumed run differed)."""
    backend = getattr(processor, "backend_tokenizer", None)
    if backend is None or (backend.truncation is None and backend.padding is None):
        return processor
    import copy

    plain = copy.deepcopy(processor)
    plain.backend_tokenizer.no_truncation()
    plain.backend_tokenizer.no_padding()
    return plain
