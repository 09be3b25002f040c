"""`attrib learn-weights`' options, defined once (the CLI is built from this class)."""

from __future__ import annotations

from pathlib import Path

from attrib.methods import (
    STORE_DEFAULT_HELP,
    default_for_store,
    method_class,
    method_names,
    require_features,
)  # fmt: skip
from attrib.option_groups import OnDevice, Rescaled, WithMemory
from attrib.options import Options, at_least, device_option, existing_store, option, positive
from attrib.weights.groups import groups_help

PRIORS = ("auto", "uniform", "balanced")
INITS = ("random", "uniform")
# --weight-decay by prior: a calibrated kernel's own weighting is already good, and the top-k
# objective pulls away from LDS's optimum, so its weights are held closer to it (on
# featurize's default store the validation queries prefer 3 to 1 by 1.1 points on
# pydoc-finetune and 0.3 on digits-finetune; docs/weights.md). Uncalibrated methods (TracIn,
# K-FAC) gain most from moving, and keep 1.
DECAY_BY_PRIOR = {"uniform": 3.0, "balanced": 1.0}


def prior_kind(method: str, requested: str) -> str:
    """`auto`: uniform for methods whose kernel is fit to the training features' own second
    moments (trak, trak-block, ekfac), balanced for the others (tracin, cosine, kfac).

    A calibrated kernel already weighs each group by its curvature, so the method's own
    (uniform) weighting is the reference to stay near. Without one, a group's raw scale is an
    accident of parametrization (TracIn's groups differ 100x on the digits task, K-FAC's
    uncorrected eigenvalues likewise), and equal-sized contributions are the better start.
    With a global kernel, moreover, group j's contribution g_j(q) . [K g(n)]_j mixes in every
    other group through K's off-diagonal blocks: it is not a separate measurement, so
    rescaling it has no meaning. Measurements behind this are in docs/quality.md.
    """
    if requested != "auto":
        return requested
    return "uniform" if method_class(method).calibrated else "balanced"


class LearnOptions(Rescaled, WithMemory, OnDevice, Options):
    """Learn one non-negative weight per parameter group, self-supervised from the top-k of a
    base method (the paper's Algorithm 1). The weights apply to any method on the same model:
    `attrib score --weights W.safetensors`."""

    train: Path = option(help="Training store.", short="-t")
    queries: Path = option(
        help="Weight-learning query store. Keep it disjoint from the queries you evaluate on "
        "(and from the model's training data): weights tuned on evaluation queries overstate "
        "their quality."
    )
    out: Path = option(
        help="Weights file to write (.safetensors).", output="file", suffixes=(".safetensors",)
    )
    method: str | None = option(
        None,
        help="Base method whose top-k supervises the weights " + STORE_DEFAULT_HELP + ".",
        choices=method_names,
    )
    k: int = option(
        10,
        help="Pseudo-positives per query: the top-k of the weighted scores (the paper searches "
        "1..5000; 10 was best or tied on our validation queries).",
    )
    lr: float = option(0.01, help="AdamW learning rate.")
    epochs: int = option(10, help="Passes over the weight-learning queries.")
    weight_decay: float | None = option(
        None,
        help="The paper's lambda': AdamW weight decay on the raw weights, pulling the weights "
        "toward --prior (0: plain Algorithm 1) (default: 3 toward the uniform prior, 1 toward "
        "the balanced one).",
    )
    seed: int = option(0, help="Seed of the random initialization.")
    init: str = option(
        "random",
        help="random (the paper's Algorithm 1) or uniform (start at the prior).",
        choices=INITS,
    )
    prior: str = option(
        "auto",
        help="Where weight decay pulls the weights: uniform (the method's own score), balanced "
        "(each group's contributions scaled to equal size), or auto (uniform for methods whose "
        "kernel is fit to the features' second moments: trak, trak-block, ekfac, shampoo and the "
        "diffusion TRAKs; balanced for tracin, cosine, kfac).",
        choices=PRIORS,
    )
    groups: str = option("module", help=groups_help())
    depth: int = option(3, help="Path components that name a block (--groups block).")
    damping: float | None = option(
        None, flag="--lambda", help="Relative kernel damping (default: the method's own)."
    )
    device: str = device_option("the contributions (queries x training rows x groups products)")
    plot: Path | None = option(
        None, help="Write a bar plot of the weights (PNG).", output="file", suffixes=(".png",)
    )

    def check(self) -> None:
        existing_store(self.train, "--train")
        existing_store(self.queries, "--queries")
        if self.method is None:
            object.__setattr__(self, "method", default_for_store(self.train))
        super().check()
        if self.weight_decay is None and self.method in method_names():
            decay = DECAY_BY_PRIOR[prior_kind(self.method, self.prior)]
            object.__setattr__(self, "weight_decay", decay)
        require_features(self.method, "learn-weights")
        at_least(self.k, 1, "--k")
        at_least(self.epochs, 1, "--epochs")
        at_least(self.depth, 1, "--depth")
        at_least(self.weight_decay, 0, "--weight-decay")
        at_least(self.damping, 0, "--lambda")
        positive(self.lr, "--lr")
