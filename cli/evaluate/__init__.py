"""`attrib evaluate ...`: one module per sub-command, registered here."""

from __future__ import annotations

import typer
from attrib_cli.evaluate import filter as filtering
from attrib_cli.evaluate import groups, lds, mislabel, recall, retrain, tail_patch

app = typer.Typer(
    help="Measure attribution quality: LDS, retraining ground truth, mislabel AUC, tail-patch, "
    "recall@k and MRR, finding planted rows, per-group strength.",
    no_args_is_help=True,
)
SUBCOMMANDS = (
    ("lds", lds),
    ("retrain", retrain),
    ("mislabel", mislabel),
    ("recall", recall),
    ("filter", filtering),
    ("groups", groups),
    ("tail-patch", tail_patch),
)
for name, module in SUBCOMMANDS:
    app.command(name)(module.command)
