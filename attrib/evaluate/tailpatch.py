"""Tail-patch (the paper's Appendix B.2.3, after TrackStar): for each query, one training step
on its top-k proponents from the final checkpoint; how much does the query's probability rise?

The score of one query is the relative increase of its probability, exp(log p_after -
log p_before) - 1, where p is the probability of the target sequence (language models: the
product over target tokens) or of the label (classifiers). Random proponents (k training
examples drawn per query, seeded) give the floor, measured in the same run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attrib.errors import AttribError
from attrib.evaluate.metrics import mean_ci
from attrib.training.loop import InitialState, one_step


@dataclass
class PatchStep:
    k: int = 128
    lr: float = 0.01
    optimizer: str = "sgd"  # sgd | adamw

    def __post_init__(self) -> None:
        if self.k < 1 or self.lr <= 0:
            raise AttribError("--k and --lr must be positive")
        if self.optimizer not in ("sgd", "adamw"):
            raise AttribError("--optimizer must be sgd or adamw")


@dataclass
class TailPatchResult:
    method: str
    weights: str
    tail_patch: float  # mean relative increase, fraction
    ci: float
    k: int
    queries: int

    def record(self) -> dict:
        return dict(self.__dict__)


def log_probability(task, batch) -> torch.Tensor:
    out = task.outputs(batch, "loss")
    return -(out.values * out.scalars.get("tokens", 1.0))


def relative_increases(task, train_source, query_source, proponents: np.ndarray, step: PatchStep):
    """(Q,) relative probability increase of each query after one step on its proponents."""
    initial = InitialState(task)
    increases = []
    for q, rows in enumerate(proponents):
        initial.restore_checkpoint()
        query = query_source.batch([q])
        task.model.eval()
        with torch.no_grad():
            before = log_probability(task, query).double()
        one_step(task, train_source, [int(r) for r in rows], step.optimizer, step.lr)
        with torch.no_grad():
            after = log_probability(task, query).double()
        increases.append(float(torch.expm1(after - before)))
    initial.restore_checkpoint()
    return np.array(increases)


def summarize(name: str, weights: str, values: np.ndarray, k: int) -> TailPatchResult:
    mean, ci = mean_ci(values)
    return TailPatchResult(name, weights, mean, ci, k, len(values))
