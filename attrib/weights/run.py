"""`attrib learn-weights` as a library call: stores in, a weights artifact out."""

from __future__ import annotations

import numpy as np
import torch

from attrib import __version__, log
from attrib.distributed import resolve_device
from attrib.errors import AttribError
from attrib.memory import Budget, plan_streaming
from attrib.methods import get_method
from attrib.score import queries as query_features
from attrib.store import Store
from attrib.weights.artifact import WeightsArtifact, save_weights
from attrib.weights.contributions import STREAM_SHARE, Contributions, group_columns
from attrib.weights.groups import group_modules
from attrib.weights.learn import balanced_prior, learn, mean_loss
from attrib.weights.options import LearnOptions, prior_kind


def _warn_overlap(train: Store, queries: Store) -> None:
    """Weight-learning queries drawn from the training rows make the top-k trivially the query
    itself: say so (the rows are compared by dataset fingerprint and row index)."""
    same_data = (
        train.settings["dataset"].get("fingerprint")
        == queries.settings["dataset"].get("fingerprint")
        and train.settings["dataset"].get("fingerprint") is not None
    )
    if not same_data:
        return
    shared = np.intersect1d(train.column("index"), queries.column("index")).size
    if shared:
        log.warn(
            f"{shared} of {queries.num_examples} weight-learning queries are rows of the "
            "training store: each finds itself at the top; use queries disjoint from the "
            "training data (and from your evaluation queries)"
        )


def run_learn(options: LearnOptions) -> tuple[WeightsArtifact, dict]:
    """Learn per-group weights and write them to `options.out`; returns the artifact and a
    summary (objective under uniform and learned weights, per-epoch losses)."""
    train, queries = Store(options.train), Store(options.queries)
    if options.k >= train.num_examples:
        raise AttribError(
            f"--k {options.k} must be smaller than the training store ({train.num_examples} "
            "examples): the top-k would be every example"
        )
    _warn_overlap(train, queries)
    method = get_method(options.method, train, options.damping, options.rif)
    groups, mapping = group_modules(train.module_names, options.groups, options.depth)
    budget = Budget(options.memory_gb)
    per_query_row = 2 * len(groups) * 4  # a block's contributions and their batched product
    plan_streaming(
        budget,
        train,
        method,
        queries.num_examples,
        per_query_row,
        STREAM_SHARE,
        "learn from fewer weight-learning queries",
    )
    chosen = query_features.from_store(train, queries)
    method.prepare()
    if not method.linear:
        log.info(f"{options.method} is not linear in the query: weights learn from its linear part")
    columns = group_columns(train, mapping, groups)
    device = resolve_device(options.device)
    contributions = Contributions(train, method, chosen.features, columns, budget, device)
    if not contributions.in_memory:
        log.info(
            f"contributions of {contributions.count} queries do not fit the memory budget: "
            f"computing them in chunks of {contributions.chunk} on every epoch"
        )
    prior = prior_kind(options.method, options.prior)
    if prior == "balanced":
        prior_weights = balanced_prior(contributions)
    else:
        prior_weights = torch.full((len(groups),), 1.0 / len(groups), dtype=torch.float64)
    learned = learn(contributions, options, prior_weights)
    uniform = torch.full((len(groups),), 1.0 / len(groups))
    summary = {
        "loss_uniform": mean_loss(contributions, uniform, options.k),
        "loss_learned": mean_loss(contributions, learned.weights, options.k),
        "epoch_losses": learned.epoch_losses,
    }
    # Stored with mean 1: all-ones is the unweighted score (rankings are unaffected by scale).
    weights = learned.weights.numpy() * len(groups)
    recorded = options.record()
    for path_field in ("train", "queries", "out", "plot"):  # machine-specific, not settings
        recorded.pop(path_field)
    info = {
        **recorded,
        "lambda": method.damping,  # the damping used (the method's default when not given)
        "prior": prior,  # what `auto` resolved to
        "model": train.settings["model"]["source"],
        "model_fingerprint": train.settings["model"]["fingerprint"],
        "store_fingerprint": train.fingerprint(),
        "queries_fingerprint": queries.fingerprint(),
        "queries": queries.num_examples,
        "attrib_version": __version__,
        **{k_: v for k_, v in summary.items() if k_ != "epoch_losses"},
    }
    artifact = WeightsArtifact(np.asarray(weights, np.float32), groups, mapping, info)
    save_weights(options.out, artifact)
    return artifact, summary
