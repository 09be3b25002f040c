"""Training a task's model on a subset of its training data, on the functional steps of
`attrib train` (stepper.py, optim.py, engine.py): there is one optimizer loop in attrib.

Used to retrain on random subsets (LDS ground truth), for tail-patch steps and by the demo.
Initialization: `finetune` starts from the checkpoint (the adapter's LoRA weights when an
adapter is loaded, which are then the only trained parameters), `scratch` from the config with
fresh random weights (seeded).
"""

from __future__ import annotations

import numpy as np
import torch

from attrib.data import read_rows
from attrib.errors import AttribError
from attrib.progress import progress_bar
from attrib.tasks.base import Task
from attrib.training.batches import epoch_batches
from attrib.training.engine import State, model_buffers, run_steps, set_buffers
from attrib.training.optim import Optimizer
from attrib.training.recipe import Recipe
from attrib.training.sharded import stepper_for
from attrib.training.stepper import Stepper, trainable_names

CACHE_LIMIT_BYTES = 2 * 2**30


def trainable_parameters(task: Task) -> list[torch.nn.Parameter]:
    named = dict(task.model.named_parameters())
    return [named[n] for n in trainable_names(task)]


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
    progress: bool = False,
):
    """Train `task.model` in place on the rows at `positions` with the recipe (its optimizer,
    schedule and warm-up), through the same functional steps `attrib train` records and
    magic differentiates. `objective` (a PerturbedObjective) is what each step minimizes
    (default: the task's training loss; stepper.py).
    `progress`: a bar over the steps (the demo's checkpoint takes a minute to train)."""
    batches = epoch_batches(positions, recipe, seed)
    optimizer = Optimizer.from_recipe(recipe, len(batches))
    stepper = stepper_for(task, seed, objective)
    with progress_bar(progress, unit="steps") as bar:
        phase = bar.add_task("training", total=len(batches))
        advance = (lambda step, state: bar.advance(phase)) if progress else None
        run_steps_from_model(task, stepper, optimizer, source, batches, advance)


def run_steps_from_model(
    task, stepper: Stepper, optimizer: Optimizer, source, batches, after_step=None
) -> None:
    """Every step from the model's current weights; the model holds the result."""
    params = stepper.initial_params()
    state = State(params, optimizer.init_state(params), model_buffers(stepper))
    try:
        state = run_steps(
            stepper, optimizer, source, batches, state, 0, len(batches), after_step=after_step
        )
        stepper.load_into_model(state.params)
        set_buffers(stepper, state.buffers)
    finally:
        task.model.eval()


def one_step(task: Task, source: BatchSource, rows: list[int], kind: str, lr: float) -> None:
    """One optimizer step (sgd or adamw at `lr`, PyTorch's defaults otherwise: AdamW's weight
    decay 0.01) on `rows`, from the model's weights: tail-patch's probe."""
    weight_decay = 0.01 if kind == "adamw" else 0.0
    optimizer = Optimizer(kind, lr, weight_decay, 0.0, "constant", 0, 1)
    run_steps_from_model(task, stepper_for(task, 0), optimizer, source, [np.asarray(rows)])


@torch.no_grad()
def outputs(task: Task, source: BatchSource, count: int, output: str, batch_size: int = 64):
    """The output function of rows [0, count) of the source, in eval mode."""
    task.model.eval()
    values = []
    for start in range(0, count, batch_size):
        batch = source.batch(list(range(start, min(start + batch_size, count))))
        values.append(task.outputs(batch, output).values.double().cpu())
    return torch.cat(values).numpy()
