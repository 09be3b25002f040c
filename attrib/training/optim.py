"""The optimizers of `attrib train`, written as pure functions of tensors.

One update, `step(params, state, grads, t)`, serves three uses: training (under no_grad), the
bitwise replay of a recorded run (the same operations in the same order), and the
metagradient's reverse pass (the same function differentiated, so d(theta_t+1)/d(theta_t,
state_t, w) is exact). Semantics follow PyTorch's SGD (momentum, no dampening, weight decay
added to the gradient) and AdamW (decoupled weight decay, bias-corrected moments, eps
outside the square root).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attrib.training.recipe import Recipe

BETAS = (0.9, 0.999)
EPS = 1e-8


@dataclass(frozen=True)
class Optimizer:
    kind: str  # adamw | sgd
    lr: float
    weight_decay: float
    momentum: float
    schedule: str  # constant | cosine
    warmup: int  # steps of linear warm-up (0: none)
    total: int  # steps in the run (the cosine's period)

    @classmethod
    def from_recipe(cls, recipe: Recipe, total: int) -> Optimizer:
        return cls(
            recipe.optimizer,
            recipe.lr,
            recipe.weight_decay,
            recipe.momentum,
            recipe.schedule,
            getattr(recipe, "warmup", 0),
            total,
        )

    def state_names(self) -> tuple[str, ...]:
        """Per-parameter state tensors, in order."""
        return ("m", "v") if self.kind == "adamw" else ("buf",)

    def init_state(self, params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        return [[torch.zeros_like(p) for p in params] for _ in self.state_names()]

    def lr_at(self, t: int) -> float:
        """Learning rate of step t (0-based): linear warm-up, then constant or cosine
        (PyTorch's CosineAnnealingLR stepped once per step: lr * (1 + cos(pi t / T)) / 2)."""
        if self.warmup and t < self.warmup:
            return self.lr * (t + 1) / self.warmup
        if self.schedule == "cosine":
            span = max(self.total - self.warmup, 1)
            return self.lr * 0.5 * (1 + math.cos(math.pi * (t - self.warmup) / span))
        return self.lr

    def step(
        self,
        params: list[torch.Tensor],
        state: list[list[torch.Tensor]],
        grads: list[torch.Tensor],
        t: int,
    ) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        """(params, state) after step t with these gradients; differentiable in all inputs."""
        lr = self.lr_at(t)
        if self.kind == "sgd":
            (bufs,) = state
            new_bufs, new_params = [], []
            for p, buf, g in zip(params, bufs, grads):
                d = g + self.weight_decay * p if self.weight_decay else g
                buf = self.momentum * buf + d
                new_bufs.append(buf)
                new_params.append(p - lr * buf)
            return new_params, [new_bufs]
        m_state, v_state = state
        b1, b2 = BETAS
        correction1, correction2 = 1 - b1 ** (t + 1), 1 - b2 ** (t + 1)
        new_params, new_m, new_v = [], [], []
        for p, m, v, g in zip(params, m_state, v_state, grads):
            decayed = p * (1 - lr * self.weight_decay) if self.weight_decay else p
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            denom = safe_sqrt(v / correction2) + EPS
            new_params.append(decayed - lr * (m / correction1) / denom)
            new_m.append(m)
            new_v.append(v)
        return new_params, [new_m, new_v]


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """sqrt whose derivative at 0 is 0 instead of inf (a parameter that never had a gradient
    has v = 0: its update is 0 whatever v does, and the reverse pass must not make NaN)."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, torch.ones_like(x)).sqrt(), 0.0)
