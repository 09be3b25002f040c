"""`attrib index ...`: one module per sub-command, registered here."""

from __future__ import annotations

import typer
from attrib_cli.index import build

app = typer.Typer(
    help="FAISS indexes of a store for instant top-k (`attrib score --index KIND`).",
    no_args_is_help=True,
)
SUBCOMMANDS = (("build", build, "Build a FAISS index of a store for one method."),)
for name, module, summary in SUBCOMMANDS:
    app.command(name, short_help=summary)(module.command)
