"""Model families: one module each; `load_task` detects which from the checkpoint's config."""

from __future__ import annotations

import torch
from transformers import AutoConfig

from attrib import hub
from attrib.errors import AttribError
from attrib.tasks.base import ModelRef, Task, TaskOptions, TaskOutput
from attrib.tasks.causal_lm import CausalLMTask
from attrib.tasks.diffusion import DiffusionTask, is_pipeline
from attrib.tasks.image_classifier import ImageClassifierTask

TASKS: dict[str, type[Task]] = {
    CausalLMTask.name: CausalLMTask,
    ImageClassifierTask.name: ImageClassifierTask,
    DiffusionTask.name: DiffusionTask,
}

__all__ = ["TASKS", "ModelRef", "Task", "TaskOptions", "TaskOutput", "detect_task", "load_task"]


def detect_task(ref: ModelRef) -> str:
    hub.check_source(ref.source, "--model")
    if is_pipeline(ref):
        return DiffusionTask.name
    try:
        config = AutoConfig.from_pretrained(
            ref.source, revision=ref.revision, trust_remote_code=ref.trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise hub.load_error("model", ref.source, ref.revision, exc) from None
    for architecture in getattr(config, "architectures", None) or []:
        if architecture.endswith(("ForCausalLM", "LMHeadModel")):
            return CausalLMTask.name
        if architecture.endswith("ForImageClassification"):
            return ImageClassifierTask.name
    raise AttribError(
        f"cannot tell the task of {ref.source!r} from its config "
        f"(architectures: {getattr(config, 'architectures', None)}); pass --task "
        f"({', '.join(TASKS)})"
    )


def load_task(ref: ModelRef, task: str | None, dtype: torch.dtype, options: TaskOptions) -> Task:
    from attrib import log

    log.quiet_libraries()
    name = task or detect_task(ref)
    if name not in TASKS:
        raise AttribError(f"unknown --task {name!r}; choose one of {', '.join(TASKS)}")
    loaded = TASKS[name].load(ref, dtype, options)
    loaded.model.requires_grad_(False)
    loaded.model.eval()
    return loaded


def load_task_from_settings(settings: dict, trust_remote_code: bool = False) -> Task:
    """The task that made a store, reloaded from its manifest settings (model, revision,
    adapter, dtype, task options), refusing weights that changed since."""
    from attrib.featurize.run import DTYPES

    model = settings["model"]
    adapter = model.get("adapter") or {}
    ref = ModelRef(
        model["source"],
        model.get("revision"),
        adapter.get("source"),
        adapter.get("revision"),
        trust_remote_code,
    )
    recorded = settings["task_options"]
    options = TaskOptions(
        max_length=recorded.get("max_length"),
        timesteps=len(recorded.get("timesteps", [])) or TaskOptions.timesteps,
        noise_seed=recorded.get("noise_seed", TaskOptions.noise_seed),
    )
    task = load_task(ref, settings["task"], DTYPES[model["dtype"]], options)
    if task.info["fingerprint"] != model["fingerprint"]:
        raise AttribError(
            f"the model at {model['source']} changed since the store was made "
            "(its weights' fingerprint differs); featurize again"
        )
    return task
