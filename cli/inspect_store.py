"""`attrib inspect STORE`: what a store holds and what made it."""

from __future__ import annotations

import json

from attrib_cli.build import format_extra, options_command
from attrib_cli.common import stdout_is_terminal
from rich.console import Console
from rich.table import Table

from attrib.store.summary import InspectOptions, store_summary

FORMATS = ("table", "json")  # a store's summary is one nested record


def inspect_store(values: dict, fmt: str | None) -> None:
    options = InspectOptions(**values)
    summary = store_summary(options.store, options.verify)
    fmt = fmt or (FORMATS[0] if stdout_is_terminal() else FORMATS[1])
    if fmt == "json":
        print(json.dumps(summary))
        return
    console = Console()
    head = Table(show_header=False, box=None)
    for key in (
        "path",
        "model",
        "revision",
        "commit",
        "adapter",
        "task",
        "output_function",
        "dataset",
        "split",
        "examples",
        "shards",
        "store_dtype",
        "feature_dim",
    ):
        head.add_row(key, str(summary[key]))
    head.add_row("projection", ", ".join(f"{k}={v}" for k, v in summary["projection"].items()))
    head.add_row("size", f"{summary['bytes'] / 2**20:,.1f} MiB")
    console.print(head)
    modules = Table(title=f"{len(summary['modules'])} modules (groups)")
    for column in ("#", "module", "kind", "gradient (out x in)", "features"):
        modules.add_column(column)
    for i, m in enumerate(summary["modules"]):
        shape = f"{m['grad_shape'][0]} x {m['grad_shape'][1]}"
        modules.add_row(str(i), m["name"], m["kind"], shape, str(m["feature_dim"]))
    console.print(modules)


inspect_store.__doc__ = InspectOptions.__doc__
OPTIONS = InspectOptions
command = options_command(InspectOptions, inspect_store, (format_extra(FORMATS),))
