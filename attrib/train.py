"""Training a task's model on a subset of its training data: the recipe and the loop.

Used to retrain on random subsets (LDS ground truth), for tail-patch steps and by the demo.
Initialization: `finetune` starts from the checkpoint (the adapter's LoRA weights when an
adapter is loaded, which are then the only trained parameters), `scratch` from the config with
fresh random weights (seeded).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from attrib.errors import AttribError
from attrib.tasks import Task

CACHE_LIMIT_BYTES = 2 * 2**30


@dataclass(frozen=True)
class Recipe:
    init: str = "finetune"  # finetune | scratch
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw | sgd
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: str = "constant"  # constant | cosine
    seed: int = 0

    def __post_init__(self) -> None:
        if self.init not in ("finetune", "scratch"):
            raise AttribError("recipe init must be finetune or scratch")
        if self.optimizer not in ("adamw", "sgd"):
            raise AttribError("recipe optimizer must be adamw or sgd")
        if self.schedule not in ("constant", "cosine"):
            raise AttribError("recipe schedule must be constant or cosine")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise AttribError("recipe epochs, batch_size and lr must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_file(cls, path: Path, **overrides) -> Recipe:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise AttribError(f"--recipe {path}: cannot read it as JSON ({exc})") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AttribError(f"--recipe {path}: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**{**data, **{k: v for k, v in overrides.items() if v is not None}})


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
        fresh = type(model)(model.config)
        model.load_state_dict(fresh.state_dict())


class BatchSource:
    """Prepared batches for rows of a dataset; image tensors are prepared once and cached
    while they fit (they do not change between epochs or subsets)."""

    def __init__(self, task: Task, dataset, columns: dict, device: torch.device, labels=None):
        self.task, self.dataset, self.device, self.labels = task, dataset, device, labels
        self.columns = dict(columns)
        self.cache: dict[str, torch.Tensor] | None = None
        if task.name == "image-classification":
            self.cache = self._build_cache()

    def _prepare(self, positions: list[int]) -> dict:
        self.task.columns = self.columns  # the task reads this source's columns
        batch = self.task.prepare(self.dataset[positions], positions, self.device)
        if self.labels is not None:
            batch["labels"] = torch.as_tensor(self.labels[positions], device=self.device)
        return batch

    def _build_cache(self) -> dict[str, torch.Tensor] | None:
        first = self._prepare([0])
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


def train(task: Task, source: BatchSource, positions: np.ndarray, recipe: Recipe, seed: int):
    """Train `task.model` in place on the rows at `positions`."""
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
                batch = source.batch(order[start : start + recipe.batch_size].tolist())
                loss = task.training_loss(batch)
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
