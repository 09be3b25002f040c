"""`attrib learn-weights`."""

from __future__ import annotations

from attrib_cli.build import options_command, quiet_extra
from attrib_cli.common import setup

from attrib.weights.options import LearnOptions


def learn_weights(values: dict, quiet: bool) -> None:
    setup(quiet)
    options = LearnOptions(**values)
    from attrib import log
    from attrib.weights.plot import plot_weights
    from attrib.weights.run import run_learn

    artifact, summary = run_learn(options)
    log.info(f"wrote {options.out}: {len(artifact.groups)} groups")
    log.info(objective_in_words(summary["loss_uniform"], summary["loss_learned"]))
    if not log.is_quiet():
        _summary_table(artifact)
    if options.plot is not None:
        title = f"{options.method}, k={options.k}, {len(artifact.groups)} groups"
        plot_weights(options.plot, artifact.groups, artifact.weights, title)
        log.info(f"wrote {options.plot}")


def objective_in_words(uniform: float, learned: float) -> str:
    """The training objective's change said plainly: which way is better, how much, and
    that it is not the test of the weights."""
    change = uniform - learned
    relative = abs(change) / max(abs(uniform), 1e-12)
    if change > 0:
        verdict = f"the learned weights fit the top-k pseudo-labels {relative:.1%} better"
    else:
        verdict = "the learned weights fit the top-k pseudo-labels no better than uniform"
    return (
        f"objective (lower is better): {uniform:.4f} uniform -> {learned:.4f} learned; "
        f"{verdict}. The test of the weights is LDS on held-out queries "
        "(`attrib evaluate lds --weights`)."
    )


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


learn_weights.__doc__ = LearnOptions.__doc__
OPTIONS = LearnOptions
command = options_command(LearnOptions, learn_weights, (quiet_extra(),))
