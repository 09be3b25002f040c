"""`attrib perturb` as a library call: K perturbed copies, their outputs, their stores.

OUT/
  meta.json                      what makes the copies these copies (refused if it differs)
  copies/copy-00007/model/       the copy's weights (Hugging Face layout; adapter only for PEFT)
  copies/copy-00007/outputs/     train.npy and one .npy per query store (by its fingerprint)
  train/, <query store name>/    stores of the outputs (rows x K), written when all are done

A copy is done when its train.npy exists (written last, atomically): a killed run redoes only
unfinished copies. Copies are units of the execution layer (attrib/execution.py): under
`accelerate launch` / `torchrun` the processes share them, and the first process writes the
stores once all copies are done.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from attrib import log
from attrib.atomic import atomic_dir, atomic_path, check_or_write_meta
from attrib.errors import AttribError
from attrib.execution import start_execution
from attrib.perturb.objective import Perturbation, PerturbedObjective, copy_seed
from attrib.perturb.options import PerturbOptions
from attrib.perturb.stores import write_output_store
from attrib.progress import progress_bar
from attrib.score.queries import check_compatible
from attrib.sharding import is_sharded, load_state, shard_model, whole_state_dict
from attrib.store import Store
from attrib.tasks import load_task_from_settings
from attrib.training.loop import InitialState, outputs, train
from attrib.training.sources import fixed_query_labels, store_source


def copy_dir(out: Path, copy: int) -> Path:
    return Path(out) / "copies" / f"copy-{copy:05d}"


def _outputs_file(out: Path, copy: int, store: Store | None) -> Path:
    name = "train" if store is None else f"queries-{store.fingerprint()}"
    return copy_dir(out, copy) / "outputs" / f"{name}.npy"


def _save(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.asarray(values, np.float64))


def run_perturb(options: PerturbOptions) -> list[Path]:
    """Train the missing copies, record the missing outputs; returns the stores written
    (empty on processes other than the first, or while other processes' copies are due)."""
    execution = start_execution(options.device, sharded=options.fsdp)
    runtime = execution.runtime
    train_store = Store(options.train)
    query_stores = [Store(path) for path in options.queries]
    for store in query_stores:
        check_compatible(train_store, store.settings, f"query store {store.path}")
    out = Path(options.out)
    meta = {"train": train_store.fingerprint(), **options.copy_settings()}
    execution.agree(meta, "perturbation settings")
    execution.first_then_rest(lambda: check_or_write_meta(out, meta, "copies"))
    task = load_task_from_settings(train_store.settings)
    if options.recorded not in task.output_functions:
        raise AttribError(
            f"--objective {options.objective} needs a {options.recorded} output, which "
            f"{task.name} models do not have; use --objective hessian or fisher"
        )
    task = _placed(task, options.fsdp, runtime)
    frozen = None
    if not options.black_box:
        frozen = _placed(load_task_from_settings(train_store.settings), options.fsdp, runtime)
    sources = {None: store_source(task, train_store, runtime.device)}
    for store in query_stores:  # label-less queries: the checkpoint's predicted class
        labels = fixed_query_labels(task, store, runtime.device)
        sources[store] = store_source(task, store, runtime.device, labels)
    initial = InitialState(task)
    todo = execution.pending(  # sharded: the main process reads the disk, all run in step
        execution.mine(range(options.copies)),
        lambda k: all(_outputs_file(out, k, s).exists() for s in sources),
    )
    with progress_bar(options.progress and execution.is_writer, unit="copies") as bar:
        bar_task = bar.add_task("perturb", total=len(todo))
        for k in todo:
            _one_copy(options, out, k, task, frozen, initial, sources, train_store, execution)
            bar.advance(bar_task)
    runtime.barrier()
    if not runtime.is_main:
        return []
    done = [k for k in range(options.copies) if _outputs_file(out, k, None).exists()]
    if len(done) < options.copies:
        log.info(f"{len(done)} of {options.copies} copies done in {out}; the rest are due")
        return []
    written = []
    for store in [None, *query_stores]:
        values = np.stack(
            [np.load(_outputs_file(out, k, store)) for k in range(options.copies)], axis=1
        )
        source = train_store if store is None else store
        name = "train" if store is None else source.path.name
        made_by = execution.record()
        written.append(write_output_store(out / name, source, values, options, meta, made_by))
    return written


def _placed(task, fsdp: bool, runtime):
    """The task on this process's device; with --fsdp sharded first, so that each process
    moves only its pieces there."""
    if fsdp:
        log.info(f"--fsdp: {shard_model(task.model, runtime)}")
    return task.to(runtime.device)


def _one_copy(options, out, k, task, frozen, initial, sources, train_store, execution) -> None:
    """Train copy k if its training outputs are missing (else reload it), then record every
    missing output. Sharded, every process runs each forward (a collective) and the main
    process, which alone reads and writes the files, decides what is missing."""
    seed = copy_seed(options.seed, k)
    folder = copy_dir(out, k)
    stores = list(sources)
    missing = [
        stores[i]
        for i in execution.pending(
            range(len(stores)), lambda i: _outputs_file(out, k, stores[i]).exists()
        )
    ]
    kept = (folder / "model").exists()
    if execution.sharded:  # what the main process sees
        kept = execution.runtime.broadcast(kept)
    if None in missing:
        initial.restore(options.recipe, seed)  # the checkpoint, or a fresh seeded init
        draw = Perturbation.draw(train_store.num_examples, options.ratio, seed)
        objective = PerturbedObjective(task, frozen, options.objective, draw.xi, options.black_box)
        torch.manual_seed(seed)
        train(task, sources[None], draw.rows, options.recipe, seed, objective)
        if options.keep_models:
            _save_copy(task, folder / "model", execution)
    elif kept:
        _load_copy(task, folder / "model")
    else:
        raise AttribError(
            f"copy {k} in {out} kept no model (--no-keep-models), so outputs for new "
            "--queries cannot be recorded; rerun with another --out"
        )
    # The training rows' outputs last: their file marks the copy done.
    for store in [s for s in missing if s is not None] + [s for s in missing if s is None]:
        source = sources[store]
        count = train_store.num_examples if store is None else store.num_examples
        values = outputs(task, source, count, options.recorded)
        if execution.saves_units:
            _save(_outputs_file(out, k, store), values)


def _save_copy(task, folder: Path, execution) -> None:
    """The copy's weights as a checkpoint (gathered from every process when sharded: a
    collective; the main process writes)."""
    weights = whole_state_dict(task.model) if execution.sharded else None
    if not execution.saves_units:
        return
    given = {} if weights is None else {"state_dict": weights}
    with atomic_dir(folder) as tmp:
        task.model.save_pretrained(tmp, **given)
        # With its processor or tokenizer, the copy is a checkpoint featurize can read.
        if hasattr(task.processor, "save_pretrained"):
            task.processor.save_pretrained(tmp)


def _load_copy(task, folder: Path) -> None:
    from safetensors.torch import load_file

    if task.info.get("adapter"):
        saved = load_file(str(folder / "adapter_model.safetensors"))
        if not is_sharded(task.model):
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(task.model, saved)
            return
        _load_sharded_adapter(task.model, saved, folder)
        return
    state = load_file(str(folder / "model.safetensors"))
    # A sharded model keeps its pieces of each whole tensor (every process reads the file).
    missing, unexpected = load_state(task.model, state, strict=False)
    tied = {name for name in missing if _is_tied(task.model, name)}
    if unexpected or set(missing) - tied:
        raise AttribError(f"{folder} does not hold this model's weights; choose another --out")


def _load_sharded_adapter(model, saved: dict, folder: Path) -> None:
    """An adapter file into a sharded PEFT model (peft's own loader writes whole tensors into
    the parameters): peft saves each key without the adapter's name, which the model's own
    keys hold (`...lora_A.default.weight` saved as `...lora_A.weight`)."""
    name = f".{model.active_adapter}."
    state = {}
    for key in model.state_dict():
        plain = key.replace(name, ".")
        if plain in saved:
            state[key] = saved[plain]
    if len(state) != len(saved):
        raise AttribError(f"{folder} does not hold this adapter's weights; choose another --out")
    load_state(model, state, strict=False)


def _is_tied(model, name: str) -> bool:
    """A parameter left out of a saved checkpoint because it shares storage with another."""
    params = dict(model.named_parameters(remove_duplicate=False))
    if name not in params:
        return False
    target = params[name]
    if is_sharded(model):  # FSDP keeps one parameter object for tied names
        return any(p is target and n != name for n, p in params.items())
    pointer = target.data_ptr()
    return any(p.data_ptr() == pointer and n != name for n, p in params.items())
