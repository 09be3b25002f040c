"""`attrib inspect STORE`: what a store holds and what made it."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from attrib_cli.common import stdout_is_terminal
from rich.console import Console
from rich.table import Table


def _summary(store) -> dict:
    settings = store.settings
    model = settings["model"]
    return {
        "path": str(store.path),
        "model": model["source"],
        "revision": model.get("revision"),
        "commit": model.get("commit"),
        "adapter": (model.get("adapter") or {}).get("source"),
        "task": settings["task"],
        "output_function": settings["output_function"],
        "projection": settings["projection"],
        "dataset": settings["dataset"]["source"],
        "split": settings["dataset"]["split"],
        "examples": store.num_examples,
        "shards": len(store.shards),
        "bytes": store.size_bytes(),
        "store_dtype": settings["store_dtype"],
        "modules": [
            {
                "name": m.name,
                "kind": m.kind,
                "grad_shape": [m.d_out, m.d_in],
                "feature_dim": store.feature_dims[m.name],
            }
            for m in store.modules
        ],
        "feature_dim": sum(store.feature_dims.values()),
        "command": " ".join(store.manifest.get("command", [])),
    }


def inspect_command(
    store: Path = typer.Argument(..., help="A store folder written by `attrib featurize`."),
    format: str = typer.Option(
        None, "--format", help="table or json (default: table on a terminal, json on a pipe)."
    ),
) -> None:
    """Print a store's summary: model, task, method, groups with dims, examples, shards, size."""
    from attrib.errors import AttribError
    from attrib.store import Store

    opened = Store(store)
    summary = _summary(opened)
    fmt = format or ("table" if stdout_is_terminal() else "json")
    if fmt == "json":
        print(json.dumps(summary))
        return
    if fmt != "table":
        raise AttribError("--format must be table or json")
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
