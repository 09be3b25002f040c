"""`attrib demo`: the answer first (one query and its top proponents, as soon as they are
known), then how good it is (LDS with and without the learned weights), then what to run on
one's own data."""

from __future__ import annotations

import json
import sys

from attrib_cli.build import options_command, quiet_extra
from attrib_cli.common import setup

from attrib.demo.options import DemoOptions

# Every line within 80 columns (a wrapped command cannot be pasted): long ones continue
# with a backslash. Printed with soft_wrap, so a narrower terminal folds, rich never splits.
NEXT = """next, on your own model and data (learn weights on one query set, evaluate on
another):
  attrib featurize --model MODEL --data TRAIN.parquet --out stores/train
  attrib featurize --model MODEL --data LEARN.parquet --out stores/learn
  attrib featurize --model MODEL --data EVAL.parquet --out stores/eval
  attrib learn-weights --train stores/train --queries stores/learn \\
      --out weights.safetensors
  attrib score --train stores/train --query QUERY_FILE \\
      --weights weights.safetensors
  attrib evaluate retrain --train stores/train --queries stores/eval \\
      --out gt.npz
  attrib evaluate lds --train stores/train --queries stores/eval \\
      --groundtruth gt.npz --weights none,weights.safetensors"""


def demo(values: dict, quiet: bool) -> None:
    setup(quiet)
    options = DemoOptions(**values)
    from attrib.demo.run import run_demo

    if not sys.stdout.isatty():
        result = run_demo(options)
        record = {
            "query": result.query,
            "method": result.method,
            # In percent, labelled, like `evaluate lds` output.
            "validation": {m: 100 * value for m, value in result.validation.items()},
            "proponents": result.records,
            "opponents": result.opponents,
            "lds": {
                name: {"lds": 100 * value, "ci": 100 * ci}
                for name, (value, ci) in result.lds.items()
            },
            "weights_effect": {"lds": 100 * result.change[0], "ci": 100 * result.change[1]},
            "report": str(result.report),
            "grid": str(result.grid) if result.grid else None,
            "weights": str(result.weights),
        }
        print(json.dumps(record))
        return
    from rich.console import Console

    console = Console()
    shipped = options.retrained_subsets is None
    result = run_demo(options, on_answer=lambda answer: _answer(console, answer, shipped))
    _quality(console, result)
    _where(console, result, options)
    console.print(NEXT, markup=False, highlight=False, soft_wrap=True)


def _where(console, result, options) -> None:
    """Where everything is, so a user can point featurize at the same checkpoint and data."""
    data = result.data or {}
    console.print(
        f"the task's checkpoint: {result.model}\n"
        f"its data: {', '.join(str(p) for p in data.values())}\n"
        "(cached under $XDG_CACHE_HOME/attrib/demo, default ~/.cache: set XDG_CACHE_HOME "
        f"to move it)\nthe demo's outputs: {options.out.resolve()}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def _answer(console, result, shipped: bool) -> None:
    from rich.table import Table

    if result.validation:
        from attrib.demo.run import store_words

        shown = ", ".join(
            f"{m} on {store_words(m)} {100 * v:.2f}" for m, v in result.validation.items()
        )
        console.print(
            f"the method, chosen on the validation queries (LDS %: {shown}): {result.method}"
        )
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
    what = "its tokens as a heat map" if result.grid is None else "its most harmful rows too"
    console.print(f"the report, with {what}: {result.report}", markup=False, highlight=False)
    if result.retraining:
        how = "against the models retrained in this run, cached for later runs"
    else:
        how = "against the shipped ground truth" if shipped else "against the cached ground truth"
    console.print(f"now measuring how good such rankings are ({how})")


def _image(record: dict) -> str:
    label = record.get("label")
    return f"an image of a {label}" if label is not None else "an image"


def _quality(console, result) -> None:
    from rich.table import Table

    table = Table(title=f"LDS on the evaluation queries ({result.groundtruth})")
    for column in ("weights", "LDS %", "± 95% CI (queries, subsets)"):
        table.add_column(column, justify="right")
    for name, (value, ci) in result.lds.items():
        table.add_row(name, f"{100 * value:.2f}", f"{100 * ci:.2f}")
    console.print(table)
    change, paired = (100 * v for v in result.change)
    verdict = (
        "within the noise of this ground truth"
        if abs(change) < paired
        else ("the learned weights helped" if change > 0 else "the learned weights hurt")
    )
    console.print(
        "LDS: how well the summed scores of each random half of the training set predict the "
        f"model retrained on it (CIs resample queries and subsets). Learned weights changed "
        f"{result.method}'s LDS by {change:+.2f} ± {paired:.2f} points (paired 95% CI): "
        f"{verdict}."
    )
    console.print(f"weights: {result.weights}")


demo.__doc__ = DemoOptions.__doc__
OPTIONS = DemoOptions
command = options_command(DemoOptions, demo, (quiet_extra(),))
