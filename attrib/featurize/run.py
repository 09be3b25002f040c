"""`attrib featurize`: a model and a dataset in, a store of projected gradient features out."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from attrib import distributed, log
from attrib.data import batches, dataset_info, open_dataset, undecoded
from attrib.errors import AttribError
from attrib.execution import ArrayTask, Execution
from attrib.featurize.modules import select_modules
from attrib.featurize.options import FeaturizeOptions
from attrib.featurize.representation import RepresentationFeaturizer, featurizer_for
from attrib.methods import method_class
from attrib.progress import progress_bar
from attrib.store import shards
from attrib.store.factors import save_factors, shard_factor_path
from attrib.store.kinds import GRADIENTS, REPRESENTATION
from attrib.store.lock import unlock_store
from attrib.store.writer import ShardRecord, StoreWriter
from attrib.tasks.loading import DTYPES, load_task

# Quantized dtypes are written from float32 (shards.table rounds them).
NUMPY_STORE_DTYPES = {"float16": np.float16, "float32": np.float32, "int8": np.float32,
                      "int4": np.float32}  # fmt: skip


def run_featurize(config: FeaturizeOptions, model=None) -> Path:
    """Featurize a dataset with a model into the store at `config.out`. `model`: the model
    `config.model` names, already in memory (`attrib.integrations`: a Trainer's at the
    checkpoint it just saved); the caller restores its training mode and requires_grad."""
    log.quiet_libraries()
    runtime = distributed.init(config.device)
    dtype = DTYPES[config.dtype]
    if runtime.device.type == "cpu" and dtype != torch.float32:
        log.warn(f"--dtype {config.dtype} on a CPU is slow and inexact; float32 is the default")
    log.status(f"loading {config.model_ref.source} ...")  # seconds of silence otherwise
    task = load_task(config.model_ref, config.task, dtype, config.task_options, model)
    if config.fsdp:  # sharded first: each process then moves only its pieces to the device
        from attrib.sharding import shard_model

        held = shard_model(task.model, runtime)
        log.info(f"--fsdp: the model sharded over {runtime.world_size} processes ({held})")
    task.to(runtime.device)
    log.status(f"reading {config.data_ref.source} ...")
    dataset = open_dataset(config.data_ref)
    data_record = dataset_info(dataset, config.data_ref)
    columns = task.bind_columns(dataset)
    dataset = undecoded(dataset, columns.get("image"))
    num_examples = min(len(dataset), config.max_examples or len(dataset))
    if columns.get("text"):
        _check_empty_texts(dataset, columns["text"], num_examples)
    method = method_class(config.method)
    selected = []  # --no-gradients: the rows and their outputs only; repsim: hidden states
    hidden_states = method.requires.store == REPRESENTATION
    if not config.no_gradients and not hidden_states:
        selected = select_modules(
            task.model, list(config.modules) or None, list(config.exclude), bool(config.adapter)
        )
    output_function = task.output_for(method, columns)
    featurizer = featurizer_for(
        task, columns, selected, config.projection_spec, output_function, config.factors,
        representation=hidden_states,
    )  # fmt: skip

    settings = store_settings(config, task, featurizer, data_record, num_examples)
    execution = Execution(runtime, ArrayTask.parse(config.shard))
    array = execution.array.count > 1
    execution.agree(settings, "settings (model, data or options)")
    modules = [(m["spec"]["name"], m["feature_dim"]) for m in settings["modules"]]
    schema = shards.schema(modules, settings["scalars"], config.store_dtype)
    recorded = {k: v for k, v in config.record().items() if k not in ("command", "progress")}
    command = list(config.command) or sys.argv
    writer = StoreWriter(config.out, settings, schema, command, recorded)
    writer.check(config.overwrite)
    if writer.complete:
        log.info(f"{config.out} is already complete with these settings; nothing to do")
        return config.out
    runtime.barrier()
    if runtime.is_main:
        writer.create(shared=array)
    runtime.barrier()
    try:
        records = _write_my_shards(config, execution, writer, featurizer, dataset)
        writer.report(execution.worker, records)
        runtime.barrier()
        finished = runtime.is_main and _merge(writer, execution, array)
        runtime.barrier()
    except AttribError:
        if runtime.world_size == 1 and not array:
            writer.discard()
        raise
    if finished:
        log.info(f"wrote {num_examples} examples x {len(modules)} modules to {config.out}")
    execution.finish()
    return config.out


def _merge(writer: StoreWriter, execution: Execution, array: bool) -> bool:
    """The main process writes the final manifest; under an array job, only the task that
    finds every shard written (and takes the merge) does: the others leave it to the last."""
    records = writer.merged_records(execution.workers, array)
    if records is None:
        log.info(f"this task's shards are in {writer.path}; the array's other tasks write the rest")
        unlock_store(writer.path)
        return False
    if array and not execution.claim_merge(writer.path, None, merged=writer.is_complete):
        unlock_store(writer.path)
        return False
    writer.finish(records, execution.record())
    return True


def store_settings(config, task, featurizer, data_record, num_examples) -> dict:
    """The values that determine what a store holds (compared on resume and by `score`)."""
    if isinstance(featurizer, RepresentationFeaturizer):  # hidden states, never projected
        projection = featurizer.projection
        modules = [{"spec": s.to_dict(), "feature_dim": s.d_in} for s in featurizer.modules]
    else:
        spec = featurizer.projection  # with its normalizer's digest, where it has one
        projection = spec.to_dict()
        modules = [
            {"spec": s.to_dict(), "feature_dim": spec.feature_dim(s.d_out, s.d_in, s.name)}
            for s in featurizer.modules
        ]
    return {
        "kind": REPRESENTATION if isinstance(featurizer, RepresentationFeaturizer) else GRADIENTS,
        "model": task.info,
        "task": task.name,
        "task_options": task.settings(featurizer.columns),
        "output_function": featurizer.output_function,
        "projection": projection,
        "modules": modules,
        "scalars": list(task.scalar_columns),
        "store_dtype": config.store_dtype,
        "dataset": data_record,
        "num_examples": num_examples,
        "shard_size": config.shard_size,
        # Batched products differ in the last bits from unbatched ones: a resume with another
        # batch size would mix values, so it is a setting.
        "batch_size": config.batch_size,
        "factors": config.factors,
    }


def _write_my_shards(config, execution, writer, featurizer, dataset) -> list[ShardRecord]:
    runtime = execution.runtime
    records, todo = [], []
    for start, end in execution.mine(writer.ranges()):
        record = writer.resumable(start, end)
        if record is not None and config.factors:
            if not shard_factor_path(writer.path, record.file).exists():
                record = None  # a shard without its factors is redone
        if record is not None:
            records.append(record)
        else:
            todo.append((start, end))
    if records and runtime.is_main:
        log.info(f"resuming: {len(records)} complete shard(s) kept")
    total = sum(end - start for start, end in todo)
    store_dtype = NUMPY_STORE_DTYPES[config.store_dtype]
    label = (
        "featurize" if runtime.world_size == 1 else f"featurize (rank 0 of {runtime.world_size})"
    )
    padding = 0
    if config.fsdp:  # every forward is a collective: every process runs as many batches
        from attrib.featurize.sharded import lockstep_padding

        size = config.batch_size
        padding = lockstep_padding(runtime, sum(-(-(e - s) // size) for s, e in todo))
    with progress_bar(config.progress and runtime.is_main) as bar:
        bar_task = bar.add_task(label, total=total)
        for start, end in todo:
            features = {spec.name: [] for spec in featurizer.modules}
            scalars: dict[str, list] = {}
            for positions, rows in batches(dataset, start, end, config.batch_size):
                batch = featurizer(rows, positions)
                for name, matrix in batch.features.items():
                    features[name].append(_to_store(matrix, store_dtype, positions, name))
                for name, values in batch.scalars.items():
                    scalars.setdefault(name, []).append(values.cpu().numpy())
                bar.advance(bar_task, len(positions))
            if config.factors:  # written before the shard: a complete shard has its factors
                path = shard_factor_path(writer.path, writer.shard_path(start, end).name)
                save_factors(path, featurizer.capture.take_factors())
            data = shards.table(
                writer.schema,
                np.arange(start, end, dtype=np.int64),
                {k: np.concatenate(v) for k, v in scalars.items()},
                {k: np.concatenate(v) for k, v in features.items()},
            )
            records.append(writer.write_shard(start, end, data))
    if padding:  # after the last shard's factors were taken: nothing of these is kept
        first = min(config.batch_size, writer.settings["num_examples"])
        positions, rows = next(iter(batches(dataset, 0, first, config.batch_size)))
        for _ in range(padding):
            featurizer(rows, positions)
    return records


def _check_empty_texts(dataset, column: str, count: int) -> None:
    """Empty texts have no token to predict: their loss is 0 and their feature row is zero.
    A dataset of nothing but empty texts is a mistake; a few among others are said once."""
    import pyarrow.compute as pc

    values = dataset.data.column(column).slice(0, count)
    if not (pa_types_is_string(values.type)):
        return  # not text: the task names the problem when it meets a row
    empty = pc.sum(pc.equal(pc.utf8_length(values), 0)).as_py() or 0
    if empty == count:
        raise AttribError(
            f"every text in column {column!r} is empty: nothing to attribute; check --data "
            "and --text-column"
        )
    if empty:
        log.warn(f"{empty} of {count} texts are empty: their loss is 0 and their features zero")


def pa_types_is_string(kind) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _to_store(matrix: torch.Tensor, dtype, positions: range, module: str) -> np.ndarray:
    if not torch.isfinite(matrix).all():
        bad = positions[int((~torch.isfinite(matrix)).any(-1).nonzero()[0, 0])]
        raise AttribError(
            f"row {bad}: the gradient of {module} is not finite; check the input and --dtype"
        )
    values = matrix.cpu().numpy().astype(dtype)
    if not np.isfinite(values).all():
        raise AttribError(
            f"features of {module} overflow {np.dtype(dtype).name}; pass --store-dtype float32"
        )
    return values
