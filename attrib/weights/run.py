"""`attrib learn-weights` as a library call: stores in, a weights artifact out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__, log
from .. import queries as query_features
from ..errors import AttribError
from ..methods import METHODS, get_method
from ..store import Store
from .artifact import WeightsArtifact, save_weights
from .contributions import DEFAULT_BUDGET_BYTES, Contributions, group_columns
from .groups import group_modules
from .learn import LearnOptions, learn, mean_loss

CONTRIBUTION_KERNELS = ("auto", "method", "block")


@dataclass
class LearnRequest:
    train: Path
    queries: Path
    out: Path
    method: str = "trak"
    options: LearnOptions = field(default_factory=LearnOptions)
    groups: str = "module"
    depth: int = 3
    damping: float | None = None
    contributions: str = "auto"
    budget_bytes: int = DEFAULT_BUDGET_BYTES

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise AttribError(f"unknown --method {self.method!r}; choose {', '.join(METHODS)}")
        if self.contributions not in CONTRIBUTION_KERNELS:
            raise AttribError(f"--contributions must be one of {', '.join(CONTRIBUTION_KERNELS)}")


def contribution_kernel(method: str, requested: str) -> str:
    """Which kernel the per-group contributions use.

    `method`: the method's own kernel (the paper's C[n, j] = g_j(q) . [K g(n)]_j).
    `block`: each module's own block of the kernel. With a global kernel a group's slice of
    K g(n) mixes in every other group's gradient, so it is not that group's own signal; `auto`
    therefore uses `block` for `trak` (see the README for the measurements behind this).
    """
    if requested != "auto":
        return requested
    return "block" if method == "trak" else "method"


def run_learn(request: LearnRequest) -> tuple[WeightsArtifact, dict]:
    train, queries = Store(request.train), Store(request.queries)
    chosen = query_features.from_store(train, queries)
    groups, mapping = group_modules(train.module_names, request.groups, request.depth)
    kernel = contribution_kernel(request.method, request.contributions)
    method = get_method(request.method, train, request.damping)
    method.prepare(("block",) if kernel == "block" else None)
    contributions = Contributions(
        train,
        method,
        chosen.features,
        group_columns(train, mapping, groups),
        kernel,
        request.budget_bytes,
    )
    if not contributions.in_memory:
        log.info(
            f"contributions of {contributions.count} queries do not fit the memory budget: "
            f"computing them in chunks of {contributions.chunk} on every epoch"
        )
    learned = learn(contributions, request.options)
    uniform = torch.full((len(groups),), 1.0 / len(groups))
    k = request.options.k
    summary = {
        "loss_uniform": mean_loss(contributions, uniform, k),
        "loss_learned": mean_loss(contributions, learned.weights, k),
        "epoch_losses": learned.epoch_losses,
    }
    # Stored with mean 1: all-ones is the unweighted score (rankings are unaffected by scale).
    weights = learned.weights.numpy() * len(groups)
    info = {
        "method": request.method,
        "k": k,
        "lambda": method.damping,
        "contributions": kernel,
        "lr": request.options.lr,
        "epochs": request.options.epochs,
        "weight_decay": request.options.weight_decay,
        "init": request.options.init,
        "seed": request.options.seed,
        "groups": request.groups,
        "model": train.settings["model"]["source"],
        "model_fingerprint": train.settings["model"]["fingerprint"],
        "store_fingerprint": train.fingerprint(),
        "queries_fingerprint": queries.fingerprint(),
        "queries": queries.num_examples,
        "attrib_version": __version__,
        **{k_: v for k_, v in summary.items() if k_ != "epoch_losses"},
    }
    artifact = WeightsArtifact(np.asarray(weights, np.float32), groups, mapping, info)
    save_weights(request.out, artifact)
    return artifact, summary
