"""`attrib learn-weights`."""

from __future__ import annotations

from pathlib import Path

import typer
from attrib_cli.common import QUIET, setup


def learn_weights_command(
    train: Path = typer.Option(..., "--train", "-t", help="Training store."),
    queries: Path = typer.Option(
        ...,
        help="Weight-learning query store. Keep it disjoint from the queries you evaluate on "
        "(and from the model's training data): weights tuned on evaluation queries overstate "
        "their quality.",
    ),
    out: Path = typer.Option(..., help="Weights file to write (.safetensors)."),
    method: str = typer.Option(
        "trak-block", help="Base method whose top-k supervises the weights."
    ),
    k: int = typer.Option(
        10,
        help="Pseudo-positives per query: the top-k of the weighted scores (the paper "
        "searches 1..5000; 10 was best or tied on our validation queries).",
    ),
    lr: float = typer.Option(0.01, help="AdamW learning rate."),
    epochs: int = typer.Option(10, help="Passes over the weight-learning queries."),
    weight_decay: float = typer.Option(
        0.0,
        help="The paper's lambda': AdamW weight decay on the raw weights (pulls toward uniform).",
    ),
    seed: int = typer.Option(0, help="Seed of the random initialization."),
    init: str = typer.Option("random", help="random (the paper's Algorithm 1) or uniform."),
    groups: str = typer.Option(
        "module",
        help="module, block (by path prefix, --depth), consecutive:N, or a JSON file "
        "of {glob: group}.",
    ),
    depth: int = typer.Option(3, help="Path components that name a block (--groups block)."),
    damping: float = typer.Option(None, "--lambda", help="Relative kernel damping (trak*)."),
    prior: str = typer.Option(
        "auto",
        help="Where weight decay pulls the weights: uniform (the method's own score), balanced "
        "(each group's contributions scaled to equal size), or auto (uniform for trak's global "
        "kernel, balanced otherwise).",
    ),
    memory_gb: float = typer.Option(6.0, help="Memory budget for contributions, GiB."),
    plot: Path = typer.Option(None, help="Write a bar plot of the weights (PNG)."),
    quiet: bool = QUIET,
) -> None:
    """Learn one non-negative weight per parameter group, self-supervised from the top-k of a
    base method (the paper's Algorithm 1). The weights apply to any method on the same model:
    `attrib score --weights W.safetensors`."""
    setup(quiet)
    from attrib import log
    from attrib.weights.learn import LearnOptions
    from attrib.weights.plot import plot_weights
    from attrib.weights.run import LearnRequest, run_learn

    options = LearnOptions(k, lr, epochs, weight_decay, seed, init, prior)
    request = LearnRequest(
        train,
        queries,
        out,
        method,
        options,
        groups,
        depth,
        damping,
        int(memory_gb * 2**30),
    )
    artifact, summary = run_learn(request)
    log.info(
        f"wrote {out}: {len(artifact.groups)} groups; objective {summary['loss_uniform']:.4f} "
        f"(uniform) -> {summary['loss_learned']:.4f} (learned)"
    )
    if not log.is_quiet():
        _summary_table(artifact)
    if plot is not None:
        title = f"{method}, k={k}, {len(artifact.groups)} groups"
        plot_weights(plot, artifact.groups, artifact.weights, title)
        log.info(f"wrote {plot}")


def _summary_table(artifact, top: int = 10) -> None:
    from rich.table import Table

    from attrib import log

    order = sorted(range(len(artifact.groups)), key=lambda i: -artifact.weights[i])
    table = Table(title=f"top {min(top, len(order))} groups (weight 1 = uniform)")
    table.add_column("group")
    table.add_column("weight", justify="right")
    for i in order[:top]:
        table.add_row(artifact.groups[i], f"{artifact.weights[i]:.3f}")
    log.console().print(table)
