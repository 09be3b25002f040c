"""`attrib demo`: the answer first (one query and its top proponents, as soon as they are
known), then how good it is (LDS with and without the learned weights), then what to run on
one's own data."""

from __future__ import annotations

import json
import sys

from attrib_cli.build import options_command, quiet_extra
from attrib_cli.common import setup

from attrib.demo.options import DemoOptions

NEXT = """next, on your own model and data:
  attrib featurize --model MODEL --data TRAIN.parquet --out stores/train
  attrib featurize --model MODEL --data QUERIES.parquet --out stores/queries
  attrib learn-weights --train stores/train --queries stores/queries --out weights.safetensors
  attrib score --train stores/train --query QUERY_FILE_OR_TEXT --weights weights.safetensors"""


def demo(values: dict, quiet: bool) -> None:
    setup(quiet)
    options = DemoOptions(**values)
    from attrib.demo.run import run_demo

    if not sys.stdout.isatty():
        result = run_demo(options)
        record = {
            "query": result.query,
            "proponents": result.records,
            "lds": result.lds,
            "grid": str(result.grid) if result.grid else None,
            "weights": str(result.weights),
        }
        print(json.dumps(record))
        return
    from rich.console import Console

    console = Console()
    retrains = options.retrained_subsets is not None
    result = run_demo(options, on_answer=lambda answer: _answer(console, answer, retrains))
    _quality(console, result)
    console.print(NEXT)


def _answer(console, result, retrains: bool) -> None:
    from rich.table import Table

    query = result.query
    shown = query.get("text") or _image(query)
    console.print(f"\nthe query (index {query['index']} of the evaluation set): {shown}")
    title = f"the training examples that helped it most ({result.method}, learned weights)"
    table = Table(title=title)
    for column in ("rank", "index", "score", "what it is"):
        table.add_column(column)
    for r in result.records:
        preview = r.get("text") or _image(r)
        table.add_row(str(r["rank"]), str(r["index"]), f"{r['score']:.4g}", preview)
    console.print(table)
    if result.grid:
        console.print(f"the query and these images, side by side: {result.grid}")
    how = "retraining; cached after this run" if retrains else "against the shipped ground truth"
    console.print(f"now measuring how good such rankings are ({how})")


def _image(record: dict) -> str:
    label = record.get("label")
    return f"an image of a {label}" if label is not None else "an image"


def _quality(console, result) -> None:
    from rich.table import Table

    table = Table(title=f"LDS on the evaluation queries ({result.groundtruth})")
    for column in ("weights", "LDS %", "± 95% CI"):
        table.add_column(column, justify="right")
    for name, (value, ci) in result.lds.items():
        table.add_row(name, f"{100 * value:.2f}", f"{100 * ci:.2f}")
    console.print(table)
    (plain, plain_ci), (weighted, weighted_ci) = result.lds["unweighted"], result.lds["weighted"]
    change = 100 * (weighted - plain)
    noise = 100 * max(plain_ci, weighted_ci)
    verdict = (
        "within the noise of this small ground truth"
        if abs(change) < noise
        else ("the learned weights helped" if change > 0 else "the learned weights hurt")
    )
    console.print(
        "LDS: how well the summed scores of each random half of the training set predict the "
        f"model retrained on it. Learned weights changed it by {change:+.2f} points: {verdict}."
    )
    console.print(f"weights: {result.weights}")


demo.__doc__ = DemoOptions.__doc__
OPTIONS = DemoOptions
command = options_command(DemoOptions, demo, (quiet_extra(),))
