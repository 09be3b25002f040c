"""`attrib evaluate ...`: attribution quality."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from attrib_cli.common import QUIET, setup
from attrib_cli.output import choose_format

app = typer.Typer(
    help="Measure attribution quality: LDS, retraining ground truth, mislabel AUC, tail-patch, "
    "recall@k, per-group strength.",
    no_args_is_help=True,
)


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def print_rows(rows: list[dict], fmt: str, columns: list[tuple[str, str]], title: str) -> None:
    """One JSON record per row on a pipe; a rich table on a terminal."""
    import json

    if fmt in ("jsonl", "csv"):
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for _, header in columns:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*[_cell(row[key], key) for key, _ in columns])
    Console().print(table)


def _cell(value, key: str) -> str:
    if key in ("lds", "ci", "tail_patch", "recall"):
        return f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@app.command("lds")
def lds_command(
    train: Path = typer.Option(..., "--train", "-t", help="Training store."),
    queries: Path = typer.Option(..., help="Query store (evaluation queries)."),
    groundtruth: Path = typer.Option(..., help="Ground truth .npz from `evaluate retrain`."),
    method: str = typer.Option(
        "trak-block", help="Methods, comma-separated (trak-block,trak,tracin,ekfac,...)."
    ),
    weights: str = typer.Option(
        "none", help="Weights files, comma-separated; 'none' for unweighted."
    ),
    damping: float = typer.Option(None, "--lambda", help="Relative kernel damping."),
    fmt: str = typer.Option(None, "--format", help="table or jsonl (default: by terminal)."),
    quiet: bool = QUIET,
) -> None:
    """Linear datamodeling score: Spearman between retrained outputs and summed scores."""
    setup(quiet)
    from attrib.evaluate.groundtruth import load_groundtruth
    from attrib.evaluate.lds import evaluate_lds, weights_label
    from attrib.methods import METHODS
    from attrib.score.run import weight_vector
    from attrib.store import Store

    fmt = choose_format(fmt)
    methods = _split(method)
    for name in methods:
        if name not in METHODS:
            from attrib.errors import AttribError

            raise AttribError(f"unknown --method {name!r}; choose {', '.join(METHODS)}")
    train_store, query_store = Store(train), Store(queries)
    truth = load_groundtruth(groundtruth)
    truth.check(train_store.num_examples, query_store.num_examples, f"--groundtruth {groundtruth}")
    paths = [None if w == "none" else Path(w) for w in _split(weights)]
    vectors = {p: weight_vector(train_store, p) for p in paths}
    rows = []
    for name in methods:
        for path in paths:
            result = evaluate_lds(
                train_store, query_store, truth, name, damping, vectors[path], weights_label(path)
            )
            rows.append(result.record())
    columns = [
        ("method", "method"),
        ("weights", "weights"),
        ("lds", "LDS %"),
        ("ci", "± 95% CI"),
        ("subsets", "subsets"),
        ("queries", "queries"),
    ]
    print_rows(rows, fmt, columns, "LDS")


@app.command("retrain")
def retrain_command(
    train: Path = typer.Option(..., "--train", "-t", help="Training store (model and data)."),
    queries: Path = typer.Option(..., help="Query store whose outputs are recorded."),
    out: Path = typer.Option(..., help="Ground truth .npz to write."),
    subsets: int = typer.Option(50, help="Number of random subsets M."),
    alpha: float = typer.Option(0.5, help="Fraction of training examples in each subset."),
    seed: int = typer.Option(0, help="Seed for subsets and training."),
    recipe: Path = typer.Option(None, help="JSON recipe file; flags below override it."),
    init: str = typer.Option(None, help="finetune (from the checkpoint) or scratch (config)."),
    epochs: int = typer.Option(None, help="Epochs per subset (default 5)."),
    lr: float = typer.Option(None, help="Learning rate (default 1e-3)."),
    batch_size: int = typer.Option(None, help="Batch size (default 32)."),
    optimizer: str = typer.Option(None, help="adamw or sgd (default adamw)."),
    weight_decay: float = typer.Option(None, help="Weight decay (default 0)."),
    schedule: str = typer.Option(None, help="constant or cosine (default constant)."),
    output: str = typer.Option(
        None, help="Output recorded: margin (classifier default, higher = better) or loss."
    ),
    shard: str = typer.Option("0/1", help="Do subsets i, i+n, ... of i/n (resumable, mergeable)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    quiet: bool = QUIET,
) -> None:
    """Retrain on random subsets and record each query's output: the LDS ground truth."""
    setup(quiet)
    from attrib.errors import AttribError
    from attrib.evaluate.retrain import RetrainConfig, retrain
    from attrib.train import Recipe

    overrides = dict(
        init=init,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        optimizer=optimizer,
        weight_decay=weight_decay,
        schedule=schedule,
        seed=seed,
    )
    if recipe is not None:
        chosen = Recipe.from_file(recipe, **overrides)
    else:
        chosen = Recipe(**{k: v for k, v in overrides.items() if v is not None})
    try:
        index, count = (int(x) for x in shard.split("/"))
    except ValueError:
        raise AttribError(f"--shard must look like i/n, got {shard!r}") from None
    config = RetrainConfig(
        train,
        queries,
        out,
        subsets,
        alpha,
        seed,
        chosen,
        output,
        (index, count),
        device,
        progress=not quiet,
    )
    retrain(config)
