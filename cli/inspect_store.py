"""`attrib inspect STORE`: what a store holds and what made it."""

from __future__ import annotations

import json

from attrib_cli.build import format_extra, options_command
from attrib_cli.common import stdout_is_terminal
from rich.console import Console
from rich.table import Table

from attrib.summary import InspectOptions, summary

FORMATS = ("table", "json")  # a store's summary is one nested record


def inspect_store(values: dict, fmt: str | None) -> None:
    options = InspectOptions(**values)
    described = summary(options.store, options.verify)
    fmt = fmt or (FORMATS[0] if stdout_is_terminal() else FORMATS[1])
    if fmt == "json":
        print(json.dumps(described))
        return
    if described["kind"] == "store":
        _print_store(described)
    else:
        _print_file(described)


def _print_file(described: dict) -> None:
    """A weights file or a ground truth: its scalar fields, then its weights if any."""
    console = Console()
    head = Table(show_header=False, box=None)
    for key, value in described.items():
        if key == "weights":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        head.add_row(key, str(value))
    console.print(head)
    if "weights" in described:
        table = Table(title=f"{len(described['weights'])} group weights (1 = uniform)")
        table.add_column("group")
        table.add_column("weight", justify="right")
        for group, weight in described["weights"].items():
            table.add_row(group, f"{weight:.3f}")
        console.print(table)


def _print_store(summary: dict) -> None:
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
    head.add_row("featurized for", f"--method {summary['featurized_for'] or '(not recorded)'}")
    head.add_row("serves", ", ".join(summary["serves"]))
    projection = dict(summary["projection"])
    normalizer = projection.pop("normalizer", None)
    head.add_row("projection", ", ".join(f"{k}={v}" for k, v in projection.items()))
    if normalizer:  # featurize --optimizer-state (TrackStar)
        head.add_row("divided by", f"sqrt(second moments) of {normalizer['source']}")
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
