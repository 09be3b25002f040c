"""`attrib evaluate mislabel | recall | groups | tail-patch`."""

from __future__ import annotations

from pathlib import Path

import typer
from attrib_cli.common import QUIET, setup
from attrib_cli.evaluate_cmd import app, print_rows
from attrib_cli.output import choose_format

TRAIN = typer.Option(..., "--train", "-t", help="Training store.")
METHOD = typer.Option("trak-block", help="Methods, comma-separated.")
WEIGHTS = typer.Option("none", help="Weights files, comma-separated; 'none' for unweighted.")
DAMPING = typer.Option(None, "--lambda", help="Relative kernel damping.")
FORMAT = typer.Option(None, "--format", help="table or jsonl (default: by terminal).")


def _combinations(store, method: str, weights: str, damping):
    """(prepared method, weight vector or None, weights label) for every combination."""
    from attrib.errors import AttribError
    from attrib.evaluate.lds import weights_label
    from attrib.methods import METHODS, get_method
    from attrib.score.run import weight_vector

    methods = [m.strip() for m in method.split(",") if m.strip()]
    for name in methods:
        if name not in METHODS:
            raise AttribError(f"unknown --method {name!r}; choose {', '.join(METHODS)}")
    paths = [None if w.strip() == "none" else Path(w.strip()) for w in weights.split(",")]
    vectors = {p: weight_vector(store, p) for p in paths}
    for name in methods:
        prepared = get_method(name, store, damping).prepare()
        for path in paths:
            yield prepared, vectors[path], weights_label(path)


@app.command("mislabel")
def mislabel_command(
    train: Path = TRAIN,
    mislabeled: Path = typer.Option(..., help=".npy of the mislabeled rows (row in the split)."),
    method: str = METHOD,
    weights: str = WEIGHTS,
    norm_k: int = typer.Option(10, help="Normalize by the sum of the row's top-k (0: raw)."),
    damping: float = DAMPING,
    fmt: str = FORMAT,
    quiet: bool = QUIET,
) -> None:
    """Mislabeled-data detection: ROC AUC of normalized self-influence."""
    setup(quiet)
    from attrib.evaluate.mislabel import evaluate_mislabel, load_mislabeled
    from attrib.store import Store

    fmt = choose_format(fmt)
    store = Store(train)
    mask = load_mislabeled(mislabeled, store)
    rows = [
        evaluate_mislabel(store, m, mask, w, norm_k, label).record()
        for m, w, label in _combinations(store, method, weights, damping)
    ]
    columns = [
        ("method", "method"),
        ("weights", "weights"),
        ("auc", "AUC"),
        ("norm_k", "norm k"),
        ("examples", "examples"),
        ("mislabeled", "mislabeled"),
    ]
    print_rows(rows, fmt, columns, "mislabeled-data detection")


@app.command("recall")
def recall_command(
    train: Path = TRAIN,
    queries: Path = typer.Option(..., help="Query store."),
    contributors: Path = typer.Option(
        ..., help="JSON {query row: [training rows]} of each query's known contributors."
    ),
    k: int = typer.Option(10, help="Top-k to check."),
    method: str = METHOD,
    weights: str = WEIGHTS,
    damping: float = DAMPING,
    fmt: str = FORMAT,
    quiet: bool = QUIET,
) -> None:
    """Fine-grained recall@k of known contributor sets."""
    setup(quiet)
    from attrib.evaluate.recall import evaluate_recall, load_contributors
    from attrib.score import queries as query_features
    from attrib.store import Store

    fmt = choose_format(fmt)
    store, query_store = Store(train), Store(queries)
    sets = load_contributors(contributors, query_store)
    features = query_features.from_store(store, query_store).features
    rows = [
        evaluate_recall(store, m, features, sets, k, w, label).record()
        for m, w, label in _combinations(store, method, weights, damping)
    ]
    columns = [
        ("method", "method"),
        ("weights", "weights"),
        ("k", "k"),
        ("recall", "recall@k"),
        ("ci", "± 95% CI"),
        ("queries", "queries"),
    ]
    print_rows(rows, fmt, columns, "recall@k")


@app.command("groups")
def groups_command(
    train: Path = TRAIN,
    queries: Path = typer.Option(..., help="Query store (evaluation queries)."),
    groundtruth: Path = typer.Option(..., help="Ground truth .npz from `evaluate retrain`."),
    method: str = typer.Option("trak-block", help="Method whose per-group scores are measured."),
    groups: str = typer.Option("module", help="module, block, consecutive:N or a JSON file."),
    depth: int = typer.Option(3, help="Path components that name a block (--groups block)."),
    damping: float = DAMPING,
    plot: Path = typer.Option(None, help="Write a bar plot (PNG)."),
    fmt: str = FORMAT,
    quiet: bool = QUIET,
) -> None:
    """Per-group attribution strength: LDS from each group's features alone."""
    setup(quiet)
    from attrib.evaluate.groundtruth import load_groundtruth
    from attrib.evaluate.groups import group_strength, plot_strength
    from attrib.methods import get_method
    from attrib.score import queries as query_features
    from attrib.store import Store
    from attrib.weights.contributions import group_columns
    from attrib.weights.groups import group_modules

    fmt = choose_format(fmt)
    store, query_store = Store(train), Store(queries)
    truth = load_groundtruth(groundtruth)
    truth.check(store.num_examples, query_store.num_examples, f"--groundtruth {groundtruth}")
    names, mapping = group_modules(store.module_names, groups, depth)
    prepared = get_method(method, store, damping).prepare()
    features = query_features.from_store(store, query_store).features
    values = group_strength(store, prepared, features, group_columns(store, mapping, names), truth)
    rows = [{"group": g, "method": method, "lds": v, "ci": c} for g, (v, c) in zip(names, values)]
    columns = [("group", "group"), ("lds", "LDS %"), ("ci", "± 95% CI")]
    print_rows(rows, fmt, columns, f"per-group LDS ({method})")
    if plot is not None:
        plot_strength(plot, names, values, f"{method}: LDS of each group alone")


@app.command("tail-patch")
def tail_patch_command(
    train: Path = TRAIN,
    queries: Path = typer.Option(..., help="Query store."),
    method: str = METHOD,
    weights: str = WEIGHTS,
    k: int = typer.Option(128, help="Proponents per query: one training batch."),
    lr: float = typer.Option(0.01, help="Learning rate of the tail-patch step."),
    optimizer: str = typer.Option("sgd", help="sgd or adamw."),
    seed: int = typer.Option(0, help="Seed of the random-proponents baseline."),
    damping: float = DAMPING,
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    fmt: str = FORMAT,
    quiet: bool = QUIET,
) -> None:
    """One training step on each query's top-k proponents: the query's probability increase,
    next to random proponents."""
    setup(quiet)
    import numpy as np

    from attrib.distributed import resolve_device
    from attrib.evaluate.sources import fixed_query_labels, store_source
    from attrib.evaluate.tailpatch import PatchStep, relative_increases, summarize
    from attrib.score import queries as query_features
    from attrib.score.stream import score
    from attrib.store import Store
    from attrib.tasks import load_task_from_settings

    fmt = choose_format(fmt)
    step = PatchStep(k, lr, optimizer)
    store, query_store = Store(train), Store(queries)
    features = query_features.from_store(store, query_store).features
    task = load_task_from_settings(store.settings)
    target = resolve_device(device)
    task.to(target)
    train_source = store_source(task, store, target)
    labels = fixed_query_labels(task, query_store, target)
    query_source = store_source(task, query_store, target, labels)
    rng = np.random.default_rng(seed)
    count = min(k, store.num_examples)
    random_rows = np.stack(
        [
            rng.choice(store.num_examples, count, replace=False)
            for _ in range(query_store.num_examples)
        ]
    )
    results = [
        summarize(
            "random",
            "none",
            relative_increases(task, train_source, query_source, random_rows, step),
            count,
        )
    ]
    for prepared, vector, label in _combinations(store, method, weights, damping):
        top = score(store, prepared, features, count, vector)
        values = relative_increases(task, train_source, query_source, top.positions.numpy(), step)
        results.append(summarize(prepared.name, label, values, count))
    columns = [
        ("method", "method"),
        ("weights", "weights"),
        ("tail_patch", "increase %"),
        ("ci", "± 95% CI"),
        ("k", "k"),
        ("queries", "queries"),
    ]
    print_rows([r.record() for r in results], fmt, columns, "tail-patch")
