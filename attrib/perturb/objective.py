"""Daunce's perturbed objectives (its Tables 1 and 2), one copy at a time.

Copy k trains on a random subset D^k (a fraction `ratio` of the rows) with per-example random
weights xi_i ~ U(0, 1), minimizing per batch B (means over B):
  hessian:  L_i(theta) - 2 xi_i grad L_i(theta0) . (theta - theta0)
  fisher:   1/2 (L_i(theta) - L_i(theta0))^2 - (2 xi_i - 1) grad L_i(theta0) . (theta - theta0)
  trak:     1/2 (f_i(theta) - f_i(theta0))^2 - (2 xi_i - 1) grad f_i(theta0) . (theta - theta0)
with f the margin. The first-order term's gradient is the constant G = sum_i c_i grad out_i
(theta0), taken by autograd on a frozen copy of the checkpoint each step (exact, and it works
for any model, hooked or not); the term itself is then -G . theta (theta0's part is constant).
Black-box (Table 2) drops the first-order term: L_i, 1/2 L_i^2 and 1/2 f_i^2 on the subset,
nothing but the outputs and fine-tuning.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from attrib.sharding import is_sharded
from attrib.training.loop import trainable_parameters
from attrib.training.sharded import sharded_gradients


def copy_seed(seed: int, copy: int) -> int:
    digest = hashlib.sha256(f"perturb:{seed}:{copy}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class Perturbation:
    """Copy k's draw: the rows it trains on and every row's random weight."""

    rows: np.ndarray  # positions in the training store, sorted
    xi: np.ndarray  # (N,) uniform in [0, 1), one per training row

    @classmethod
    def draw(cls, num_rows: int, ratio: float, seed: int) -> Perturbation:
        rng = np.random.default_rng(seed)
        keep = max(1, round(ratio * num_rows))
        rows = np.sort(rng.permutation(num_rows)[:keep])
        return cls(rows, rng.random(num_rows))


class PerturbedObjective:
    """The scalar one training step minimizes, for `task` (being trained) next to `frozen`
    (the same model, held at the checkpoint; None for black-box objectives). Either model may
    be sharded over a launch's processes (`perturb --fsdp`): then `terms` gives this process's
    shards of the first-order constant."""

    def __init__(self, task, frozen, objective: str, xi: np.ndarray, black_box: bool):
        self.task, self.frozen, self.kind, self.black_box = task, frozen, objective, black_box
        self.xi = torch.from_numpy(xi)
        self.output = "margin" if objective == "trak" else "loss"
        self.frozen_params = None if frozen is None else trainable_parameters(frozen)
        self.sharded = frozen is not None and is_sharded(frozen.model)
        if self.sharded:  # set once: FSDP fixes at its first forward which parameters train
            for p in self.frozen_params:
                p.requires_grad_(True)

    def __call__(self, batch: dict, rows: np.ndarray, params: list) -> torch.Tensor:
        """The objective at `params` (the trainable parameters being trained, in
        `trainable_parameters` order; the model's forward uses them)."""
        base, constant = self.terms(batch, rows)
        if constant is None:
            return base
        return base - sum((g * p).sum() for g, p in zip(constant, params))

    def terms(self, batch: dict, rows: np.ndarray):
        """(the part through the model's forward, the first-order term's constant G): the
        objective is base - G . theta, so its gradient is grad(base) - G. G is None for
        black-box objectives. The trained model runs first, then the frozen one (the order
        of their random draws)."""
        values = self.task.outputs(batch, self.output).values.float()
        if self.black_box:
            return (values.mean() if self.kind == "hessian" else 0.5 * values.pow(2).mean()), None
        xi = self.xi[torch.as_tensor(rows)].to(values.device, values.dtype)
        coefficient = 2 * xi if self.kind == "hessian" else 2 * xi - 1
        start, gradient = self._at_checkpoint(batch, coefficient / len(rows))
        if self.kind == "hessian":
            return values.mean(), gradient
        return 0.5 * (values - start).pow(2).mean(), gradient

    def _at_checkpoint(self, batch: dict, weights: torch.Tensor):
        """(out_i(theta0) per example, grad of sum_i weights_i out_i(theta0))."""
        if self.sharded:
            return self._at_sharded_checkpoint(batch, weights)
        for p in self.frozen_params:
            p.requires_grad_(True)
        try:
            with torch.enable_grad():
                start = self.frozen.outputs(batch, self.output).values.float()
                gradient = torch.autograd.grad((weights * start).sum(), self.frozen_params)
        finally:
            for p in self.frozen_params:
                p.requires_grad_(False)
        return start.detach(), [g.detach() for g in gradient]

    def _at_sharded_checkpoint(self, batch: dict, weights: torch.Tensor):
        """The same through FSDP's backward: this process's shard of each gradient."""
        with torch.enable_grad():
            start = self.frozen.outputs(batch, self.output).values.float()
            gradient = sharded_gradients((weights * start).sum(), self.frozen_params)
        return start.detach(), gradient
