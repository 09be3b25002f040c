"""`attrib demo`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from attrib_cli.common import QUIET, setup


def demo_command(
    task: str = typer.Option("image", help="image (digits, ResNet) or text (Python docs, GPT-2)."),
    out: Path = typer.Option(Path("attrib-demo"), help="Folder for the demo's outputs."),
    subsets: int = typer.Option(20, help="Retrained models for the LDS ground truth."),
    quiet: bool = QUIET,
) -> None:
    """Run the whole job offline in minutes: build a small task from data shipped with
    installed packages, featurize, learn weights, explain a query, measure LDS with and
    without the weights. Built artifacts are cached and reused on later runs."""
    setup(quiet)
    from rich.console import Console
    from rich.table import Table

    from attrib.demo import run_demo

    result = run_demo(task, out, subsets)
    if not sys.stdout.isatty():
        print(
            json.dumps(
                {
                    "proponents": result.records,
                    "lds": result.lds,
                    "grid": str(result.grid) if result.grid else None,
                    "weights": str(result.weights),
                }
            )
        )
        return
    console = Console()
    table = Table(title="top proponents of evaluation query 0 (trak-block, learned weights)")
    for column in ("rank", "training row", "score", "preview"):
        table.add_column(column)
    for r in result.records:
        preview = r.get("text") or f"label {r.get('label')}"
        table.add_row(str(r["rank"]), str(r["index"]), f"{r['score']:.4g}", preview)
    console.print(table)
    if result.grid:
        console.print(f"query and proponents: {result.grid}")
    lds = Table(title=f"LDS on the evaluation queries ({subsets} retrained models)")
    for column in ("weights", "LDS %", "± 95% CI"):
        lds.add_column(column, justify="right")
    for name, (value, ci) in result.lds.items():
        lds.add_row(name, f"{100 * value:.2f}", f"{100 * ci:.2f}")
    console.print(lds)
    console.print(f"weights: {result.weights}")
