"""Loading a task: detect the model family from the checkpoint (each task's `matches`), load
it, or reload the one that made a store from its manifest."""

from __future__ import annotations

import pickle

import torch

from attrib import hub
from attrib.errors import AttribError
from attrib.tasks.base import Task
from attrib.tasks.options import ModelRef, TaskOptions
from attrib.tasks.registry import task_class, task_names

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,  # `attrib train --dtype float64` (exact metagradient checks)
}


def describe_checkpoint(ref: ModelRef) -> dict:
    """What tasks detect from: a diffusers pipeline's model_index.json, else a transformers
    config (`{"model_index": dict | None, "config": PretrainedConfig | None}`)."""
    from attrib.tasks.diffusion import pipeline_index

    hub.check_source(ref.source, "--model")
    index = pipeline_index(ref)
    if index is not None:
        return {"model_index": index, "config": None}
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(
            ref.source, revision=ref.revision, trust_remote_code=ref.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise hub.load_error("model", ref.source, ref.revision, exc) from None
    return {"model_index": None, "config": config}


def detect_task(ref: ModelRef) -> str:
    checkpoint = describe_checkpoint(ref)
    for name in task_names():
        if task_class(name).matches(checkpoint):
            return name
    config = checkpoint["config"]
    raise AttribError(
        f"cannot tell the task of {ref.source!r} from its config "
        f"(architectures: {getattr(config, 'architectures', None)}); pass --task "
        f"({', '.join(task_names())})"
    )


def load_task(
    ref: ModelRef, task: str | None, dtype: torch.dtype, options: TaskOptions, model=None
) -> Task:
    """`model`: a model already in memory with the weights `ref` names (a Trainer's, at the
    checkpoint it just saved): used as it is, only the processor and the record are read."""
    from attrib import log

    log.quiet_libraries()
    name = task or detect_task(ref)
    if name not in task_names():
        raise AttribError(f"unknown --task {name!r}; choose one of {', '.join(task_names())}")
    try:
        in_memory = {} if model is None else {"model": model}
        loaded = task_class(name).load(ref, dtype, options, **in_memory)
    except pickle.UnpicklingError:
        # Pickle checkpoints (pytorch_model.bin) are only ever opened through torch's
        # weights_only loader, which allows plain tensors and nothing that runs code.
        raise AttribError(
            f"{ref.source}: its pickle weights (pytorch_model.bin) hold objects other than "
            "tensors and were refused unread; use a safetensors checkpoint you trust"
        ) from None
    loaded.model.requires_grad_(False)
    loaded.model.eval()
    return loaded


def load_task_from_settings(settings: dict, trust_remote_code: bool = False) -> Task:
    """The task that made a store, reloaded from its manifest settings (model, revision,
    adapter, dtype, task options), refusing weights that changed since."""
    model = settings["model"]
    adapter = model.get("adapter") or {}
    ref = ModelRef(
        model["source"],
        model.get("revision"),
        adapter.get("source"),
        adapter.get("revision"),
        trust_remote_code,
    )
    options = recorded_options(settings["task_options"])
    task = load_task(ref, settings["task"], DTYPES[model["dtype"]], options)
    if task.info["fingerprint"] != model["fingerprint"]:
        raise AttribError(
            f"the model at {model['source']} changed since the store was made "
            "(its weights' fingerprint differs); featurize again"
        )
    return task


def recorded_options(recorded: dict) -> TaskOptions:
    """The TaskOptions a store was made with; stores from before options were recorded whole
    kept only the values below."""
    if "options" in recorded:
        return TaskOptions.from_record(recorded["options"])
    return TaskOptions(
        max_length=recorded.get("max_length"),
        timesteps=len(recorded.get("timesteps", [])) or TaskOptions.timesteps,
        noise_seed=recorded.get("noise_seed", TaskOptions.noise_seed),
    )
