"""Training a task's model on a subset of its training data: the recipe and the loop.

Used to retrain on random subsets (LDS ground truth), for tail-patch steps and by the demo.
Initialization: `finetune` starts from the checkpoint (the adapter's LoRA weights when an
adapter is loaded, which are then the only trained parameters), `scratch` from the config with
fresh random weights (seeded).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from attrib.data import read_rows
from attrib.errors import AttribError
from attrib.recipe import Recipe
from attrib.tasks.base import Task

CACHE_LIMIT_BYTES = 2 * 2**30


def trainable_parameters(task: Task) -> list[torch.nn.Parameter]:
    if task.info.get("adapter"):
        return [p for n, p in task.model.named_parameters() if "lora_" in n]
    return list(task.model.parameters())


class InitialState:
    """Remembers the checkpoint's weights so every subset starts from the same point."""

    def __init__(self, task: Task):
        self.task = task
        self.state = {k: v.detach().clone() for k, v in task.model.state_dict().items()}

    def restore_checkpoint(self) -> None:
        self.task.model.load_state_dict(self.state)

    def restore(self, recipe: Recipe, seed: int) -> None:
        model = self.task.model
        if recipe.init == "finetune":
            self.restore_checkpoint()
            return
        if self.task.info.get("adapter"):
            raise AttribError("recipe init 'scratch' needs a model without adapter; use finetune")
        torch.manual_seed(seed)
        # diffusers models are built from their config by from_config, transformers' directly.
        build = getattr(type(model), "from_config", type(model))
        fresh = build(model.config)
        model.load_state_dict(fresh.state_dict())


class BatchSource:
    """Prepared batches for rows of a dataset; image tensors are prepared once and cached
    while they fit (they do not change between epochs or subsets)."""

    def __init__(self, task: Task, dataset, columns: dict, device: torch.device, labels=None):
        self.task, self.dataset, self.device, self.labels = task, dataset, device, labels
        self.columns = dict(columns)
        self.cache: dict[str, torch.Tensor] | None = None
        if task.cache_batches:
            self.cache = self._build_cache()

    def _prepare(self, positions: list[int]) -> dict:
        rows = read_rows(self.dataset, positions)
        batch = self.task.prepare(rows, positions, self.device, self.columns)
        if self.labels is not None:
            batch["labels"] = torch.as_tensor(self.labels[positions], device=self.device)
        return batch

    def _build_cache(self) -> dict[str, torch.Tensor] | None:
        first = self._prepare([0])
        if not all(isinstance(v, torch.Tensor) for v in first.values()):
            return None  # e.g. diffusion queries' trajectories: lists of tensors
        per_row = sum(t.numel() * t.element_size() for t in first.values())
        if per_row * len(self.dataset) > CACHE_LIMIT_BYTES:
            return None
        parts: dict[str, list] = {k: [] for k in first}
        for start in range(0, len(self.dataset), 256):
            chunk = self._prepare(list(range(start, min(start + 256, len(self.dataset)))))
            for key, value in chunk.items():
                parts[key].append(value)
        return {k: torch.cat(v) for k, v in parts.items()}

    def batch(self, positions: list[int]) -> dict:
        if self.cache is None:
            return self._prepare(positions)
        index = torch.as_tensor(positions, device=self.device)
        return {k: v[index] for k, v in self.cache.items()}


def train(
    task: Task,
    source: BatchSource,
    positions: np.ndarray,
    recipe: Recipe,
    seed: int,
    objective=None,
):
    """Train `task.model` in place on the rows at `positions`. `objective(batch, rows)` is
    the scalar each step minimizes (default: the task's training loss); `rows` are the
    batch's positions in the source."""
    model = task.model
    params = trainable_parameters(task)
    for p in params:
        p.requires_grad_(True)
    if recipe.optimizer == "adamw":
        optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        optimizer = torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    steps_per_epoch = math.ceil(len(positions) / recipe.batch_size)
    total = recipe.epochs * steps_per_epoch
    scheduler = None
    if recipe.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    rng = np.random.default_rng(seed)
    model.train()
    try:
        for _ in range(recipe.epochs):
            order = rng.permutation(positions)
            for start in range(0, len(order), recipe.batch_size):
                rows = order[start : start + recipe.batch_size]
                batch = source.batch(rows.tolist())
                loss = task.training_loss(batch) if objective is None else objective(batch, rows)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
    finally:
        model.eval()
        for p in params:
            p.requires_grad_(False)
            p.grad = None


@torch.no_grad()
def outputs(task: Task, source: BatchSource, count: int, output: str, batch_size: int = 64):
    """The output function of rows [0, count) of the source, in eval mode."""
    task.model.eval()
    values = []
    for start in range(0, count, batch_size):
        batch = source.batch(list(range(start, min(start + batch_size, count))))
        values.append(task.outputs(batch, output).values.double().cpu())
    return torch.cat(values).numpy()
