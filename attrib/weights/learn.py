"""The paper's Algorithm 1: self-supervised parameter-group weights.

For each weight-learning query q (one AdamW step per query, queries in order, `epochs` passes):
    w = softmax(w_raw);  S = C_q w;  S <- S / ||S||_2;  loss = -mean(top-k of S)
with the top-k set recomputed at every step, a cosine learning-rate schedule over all steps,
and AdamW's decoupled weight decay on w_raw (the paper's lambda'), which pulls w_raw toward 0
and so the weights toward uniform. Following the paper's Algorithm 1, w_raw starts random
(uniform in [0, 1), seeded); `init="uniform"` starts at uniform weights instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import AttribError
from .contributions import Contributions


@dataclass(frozen=True)
class LearnOptions:
    k: int = 20
    lr: float = 0.01
    epochs: int = 10
    weight_decay: float = 0.0
    seed: int = 0
    init: str = "random"  # random | uniform

    def __post_init__(self) -> None:
        if self.k < 1:
            raise AttribError("--k must be at least 1")
        if self.lr <= 0 or self.epochs < 1 or self.weight_decay < 0:
            raise AttribError("--lr and --epochs must be positive, --weight-decay at least 0")
        if self.init not in ("random", "uniform"):
            raise AttribError("--init must be random or uniform")


@dataclass
class Learned:
    weights: torch.Tensor  # (M,) softmax weights, summing to 1
    epoch_losses: list[float] = field(default_factory=list)  # mean loss over queries per epoch


def step_loss(contrib: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
    """-mean(top-k(S / ||S||)) for one query's contributions (N x M)."""
    scores = contrib @ weights
    scores = scores / scores.norm().clamp(min=1e-30)
    return -scores.topk(min(k, len(scores))).values.mean()


def learn(contributions: Contributions, options: LearnOptions) -> Learned:
    generator = torch.Generator().manual_seed(options.seed)
    m = contributions.m
    if options.init == "random":
        raw = torch.rand(m, generator=generator, dtype=torch.float64)
    else:
        raw = torch.zeros(m, dtype=torch.float64)
    raw.requires_grad_(True)
    optimizer = torch.optim.AdamW([raw], lr=options.lr, weight_decay=options.weight_decay)
    total = options.epochs * contributions.count
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    result = Learned(torch.empty(0))
    for _ in range(options.epochs):
        epoch_loss = 0.0
        for _, chunk in contributions.chunks():
            for contrib in chunk:
                loss = step_loss(contrib, torch.softmax(raw, 0).float(), options.k)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                epoch_loss += loss.item()
        result.epoch_losses.append(epoch_loss / contributions.count)
    result.weights = torch.softmax(raw.detach(), 0)
    return result


def mean_loss(contributions: Contributions, weights: torch.Tensor, k: int) -> float:
    """The objective averaged over all queries for fixed weights (for reporting)."""
    total = 0.0
    with torch.no_grad():
        for _, chunk in contributions.chunks():
            for contrib in chunk:
                total += step_loss(contrib, weights.float(), k).item()
    return total / contributions.count
