"""The paper's Algorithm 1: self-supervised parameter-group weights.

For each weight-learning query q (one AdamW step per query, queries in order, `epochs` passes):
    w = softmax(w_raw + log p);  S = C_q w;  S <- S / ||S||_2;  loss = -mean(top-k of S)
with the top-k set recomputed at every step, a cosine learning-rate schedule over all steps,
and AdamW's decoupled weight decay on w_raw (the paper's lambda'), which pulls w_raw toward 0
and so the weights toward the prior p. Following Algorithm 1, w_raw starts random (uniform in
[0, 1), seeded); `init="uniform"` starts at w_raw = 0 (the prior).

The prior p is the paper's uniform weighting, or `balanced`: p_j proportional to 1 / RMS of
group j's contributions. Under the paper's Appendix A model (a_j = alpha_j I + eps_j, optimum
w_j ~ alpha_j / sigma_j^2) these are the optimal weights when every group has the same
signal-to-noise ratio, so learning only has to find the differences in quality; without it,
TracIn's groups differ in raw scale by 100x and the weight decay would fight the rescaling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from attrib.weights.contributions import Contributions
from attrib.weights.options import LearnOptions


@dataclass
class Learned:
    weights: torch.Tensor  # (M,) softmax weights, summing to 1
    epoch_losses: list[float] = field(default_factory=list)  # mean loss over queries per epoch


def step_loss(contrib: torch.Tensor, weights: torch.Tensor, k: int) -> torch.Tensor:
    """-mean(top-k(S / ||S||)) for one query's contributions (N x M)."""
    scores = contrib @ weights
    scores = scores / scores.norm().clamp(min=1e-30)
    return -scores.topk(min(k, len(scores))).values.mean()


def balanced_prior(contributions: Contributions) -> torch.Tensor:
    """p_j ~ 1 / RMS of group j's contributions over all queries and examples, sum 1."""
    squares = torch.zeros(contributions.m, dtype=torch.float64)
    for _, chunk in contributions.chunks():
        squares += chunk.double().pow(2).sum(dim=(0, 1))
    rms = (squares / (contributions.count * contributions.n)).sqrt()
    inverse = 1.0 / rms.clamp(min=rms.max() * 1e-12 + 1e-300)
    return inverse / inverse.sum()


def learn(contributions: Contributions, options: LearnOptions, prior: torch.Tensor) -> Learned:
    """Run Algorithm 1; `prior` (M,) sums to 1 and is where weight decay pulls the weights."""
    generator = torch.Generator().manual_seed(options.seed)
    m = contributions.m
    log_prior = prior.double().log()
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
                weights = torch.softmax(raw + log_prior, 0).float()
                loss = step_loss(contrib, weights, options.k)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                epoch_loss += loss.item()
        result.epoch_losses.append(epoch_loss / contributions.count)
    result.weights = torch.softmax(raw.detach() + log_prior, 0)
    return result


def mean_loss(contributions: Contributions, weights: torch.Tensor, k: int) -> float:
    """The objective averaged over all queries for fixed weights (for reporting)."""
    total = 0.0
    with torch.no_grad():
        for _, chunk in contributions.chunks():
            for contrib in chunk:
                total += step_loss(contrib, weights.float(), k).item()
    return total / contributions.count
