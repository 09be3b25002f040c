"""`attrib demo`."""

from __future__ import annotations

import json
import sys

from attrib_cli.build import options_command, quiet_extra
from attrib_cli.common import setup

from attrib.demo.options import DemoOptions


def demo(values: dict, quiet: bool) -> None:
    setup(quiet)
    options = DemoOptions(**values)
    subsets = options.subsets
    from rich.console import Console
    from rich.table import Table

    from attrib.demo.run import run_demo

    result = run_demo(options)
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


demo.__doc__ = DemoOptions.__doc__
OPTIONS = DemoOptions
command = options_command(DemoOptions, demo, (quiet_extra(),))
