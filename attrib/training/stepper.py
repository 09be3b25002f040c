"""One training step of a recorded run, as a function of the trainable parameters and the
per-example loss weights w: loss = sum_i w_i l_i / batch size (w = 1 in a normal run).

The model is called with the parameters passed in (`torch.func.functional_call`), so the same
code trains (under no_grad around the update), replays a run bitwise, and builds the step's
graph for the metagradient (create_graph=True: d(grad)/d(theta, w) are exact). Everything
random inside a step (dropout, diffusion's timesteps and noise) is drawn from a generator
seeded by (run seed, step), so a step recomputed later draws the same values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch.func import functional_call

from attrib.tasks.base import Task


def step_seed(seed: int, step: int) -> int:
    digest = hashlib.sha256(f"attrib-run:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def trainable_names(task: Task) -> list[str]:
    """The parameters a run trains: an adapter's LoRA weights when one is loaded, else all."""
    names = [n for n, _ in task.model.named_parameters()]
    if task.info.get("adapter"):
        return [n for n in names if "lora_" in n]
    return names


def exact_attention():
    """Attention through PyTorch's math kernel in every step of a run: the fused kernels have
    no double backward (the metagradient needs one), and training, replay and the reverse
    pass must run the same kernel to stay bitwise equal."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


class _Call(torch.nn.Module):
    """A module whose only child is the model, calling any function of the task, so
    functional_call can substitute the model's parameters while it runs."""

    def __init__(self, task: Task):
        super().__init__()
        self.model = task.model

    def forward(self, function, *args):
        return function(*args)


class Stepper:
    """One process computes each step whole here: `replicas` counts the processes that each
    compute the same step (gathered.py), `batched_backward` whether vectorized backward
    passes may run through the step's graph.

    `objective`, when given, is what each step minimizes in place of the weighted
    training loss (Daunce's perturbed objectives, attrib/perturb/objective.py): its
    `terms(batch, rows)` are a part through the model and a constant G, the objective being
    part - G . theta over the trainable parameters, in `names` order."""

    replicas = 1
    batched_backward = True

    def __init__(self, task: Task, seed: int, objective: Callable | None = None):
        self.task, self.seed, self.objective = task, seed, objective
        self.names = trainable_names(task)
        self.call_module = _Call(task)

    def _call(self, params: list[torch.Tensor], step: int, function, *args):
        torch.manual_seed(step_seed(self.seed, step))
        return self.call(params, function, *args)

    def call(self, params: list[torch.Tensor], function, *args):
        """`function(*args)` with the model's trainable parameters replaced by `params`."""
        substituted = {f"model.{n}": p for n, p in zip(self.names, params)}
        with exact_attention():
            return functional_call(self.call_module, substituted, (function, *args), strict=False)

    def share(self, value: torch.Tensor) -> torch.Tensor:
        """The part of a scalar this process differentiates: all of it (see `replicas`)."""
        return value

    def initial_params(self) -> list[torch.Tensor]:
        named = dict(self.task.model.named_parameters())
        return [named[n].detach().clone() for n in self.names]

    def own_part(self, index: int, full: torch.Tensor) -> torch.Tensor:
        """The part of a whole tensor of trainable parameter `index` this process steps: all
        of it (a sharded model's stepper keeps its shard)."""
        return full

    def whole(self, index: int, part: torch.Tensor) -> torch.Tensor:
        """The whole tensor of trainable parameter `index` from this process's part (a
        sharded model's stepper gathers the shards: a collective)."""
        return part

    def per_example_losses(self, params: list[torch.Tensor], batch: dict, step: int):
        return self._call(params, step, self.task.training_losses, batch)

    def gradient(
        self,
        params: list[torch.Tensor],
        batch: dict,
        weights: torch.Tensor,
        step: int,
        create_graph: bool = False,
        rows=None,
    ) -> list[torch.Tensor]:
        """d/dtheta of sum_i w_i l_i / B at `params` (leaves that require grad), or of the
        objective's value; `rows` are the batch's positions in its source."""
        self.task.model.train()
        constant = None
        if self.objective is not None:  # base - G . theta: its gradient is grad(base) - G
            loss, constant = self._call(params, step, self.objective.terms, batch, rows)
        else:
            losses = self.per_example_losses(params, batch, step)
            loss = (weights.to(losses.dtype) * losses).sum() / len(losses)
        grads = self._differentiate(self.share(loss), params, create_graph)
        if constant is not None:  # added last, as a sharded model's stepper must (sharded.py)
            grads = [g + (-c) for g, c in zip(grads, constant)]
        return grads

    def _differentiate(self, loss, params: list[torch.Tensor], create_graph: bool) -> list:
        """d loss / d params (zeros for a parameter the loss does not reach)."""
        grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    def load_into_model(self, params: list[torch.Tensor]) -> None:
        named = dict(self.task.model.named_parameters())
        with torch.no_grad():
            for n, p in zip(self.names, params):
                named[n].copy_(p)
