"""`attrib learn-weights` as a library call: stores in, a weights artifact out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from attrib import __version__, log
from attrib.errors import AttribError
from attrib.methods import METHODS, get_method
from attrib.score import queries as query_features
from attrib.store import Store
from attrib.weights.artifact import WeightsArtifact, save_weights
from attrib.weights.contributions import DEFAULT_BUDGET_BYTES, Contributions, group_columns
from attrib.weights.groups import group_modules
from attrib.weights.learn import LearnOptions, balanced_prior, learn, mean_loss


@dataclass
class LearnRequest:
    train: Path
    queries: Path
    out: Path
    method: str = "trak-block"
    options: LearnOptions = field(default_factory=LearnOptions)
    groups: str = "module"
    depth: int = 3
    damping: float | None = None
    budget_bytes: int = DEFAULT_BUDGET_BYTES

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise AttribError(f"unknown --method {self.method!r}; choose {', '.join(METHODS)}")


def prior_kind(method: str, requested: str) -> str:
    """`auto`: uniform for methods whose kernel is fit to the training features' own second
    moments (trak, trak-block, ekfac), balanced for the others (tracin, cosine, kfac).

    A calibrated kernel already weighs each group by its curvature, so the method's own
    (uniform) weighting is the reference to stay near. Without one, a group's raw scale is an
    accident of parametrization (TracIn's groups differ 100x on the digits task, K-FAC's
    uncorrected eigenvalues likewise), and equal-sized contributions are the better start.
    With a global kernel, moreover, group j's contribution g_j(q) . [K g(n)]_j mixes in every
    other group through K's off-diagonal blocks: it is not a separate measurement, so
    rescaling it has no meaning. Measurements behind this are in the README.
    """
    if requested != "auto":
        return requested
    return "uniform" if METHODS[method].calibrated else "balanced"


def run_learn(request: LearnRequest) -> tuple[WeightsArtifact, dict]:
    train, queries = Store(request.train), Store(request.queries)
    chosen = query_features.from_store(train, queries)
    groups, mapping = group_modules(train.module_names, request.groups, request.depth)
    method = get_method(request.method, train, request.damping).prepare()
    columns = group_columns(train, mapping, groups)
    contributions = Contributions(train, method, chosen.features, columns, request.budget_bytes)
    if not contributions.in_memory:
        log.info(
            f"contributions of {contributions.count} queries do not fit the memory budget: "
            f"computing them in chunks of {contributions.chunk} on every epoch"
        )
    prior = prior_kind(request.method, request.options.prior)
    if prior == "balanced":
        prior_weights = balanced_prior(contributions)
    else:
        prior_weights = torch.full((len(groups),), 1.0 / len(groups), dtype=torch.float64)
    learned = learn(contributions, request.options, prior_weights)
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
        "prior": prior,
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
