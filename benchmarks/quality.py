"""Attribution quality on tasks we can retrain on this CPU: LDS with and without learned weights.

    python benchmarks/quality.py [--tasks digits,pydoc] [--subsets 50] [--k-grid 5,20,50]

For each task (scikit-learn digits + ResNet; Python docs + GPT-2) and method (tracin, cosine,
trak, trak-block, kfac, ekfac; and the baselines: repsim, and bm25 on text): LDS (%) with 95%
CI on the evaluation queries, unweighted, with weights
learned at k = 20, and with weights learned at the k of `--k-grid` that is best on the separate
validation queries (never the evaluation queries). Weights are learned on the weight-learning
queries with the library defaults. Plus mislabeled-data detection on digits with 10% of the
training labels flipped (ROC AUC of normalized self-influence, norm k = 10).

Everything built is cached under $ATTRIB_BENCH_CACHE (default ~/.cache/attrib-bench). The
table is printed and written to benchmarks/results/quality.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))

from quality_tasks import CACHE, TASKS  # noqa: E402

from attrib import log  # noqa: E402
from attrib.evaluate.lds import evaluate_lds  # noqa: E402
from attrib.score.run import weight_vector  # noqa: E402
from attrib.weights.options import LearnOptions  # noqa: E402
from attrib.weights.run import run_learn  # noqa: E402

METHODS = ("tracin", "cosine", "trak", "trak-block", "kfac", "ekfac", "shampoo", "repsim", "bm25")
BASELINES = ("repsim", "bm25")  # measured alone: no groups to weight
# A similarity's self-score is 1 for every row: self-influence ranks nothing.
SELF_INFLUENCE_METHODS = tuple(m for m in METHODS if m not in BASELINES)
FEATURES = {
    "repsim": "repsim",  # the model's own hidden states (the baseline)
    "shampoo": "shampoo",  # loss gradients, no factors
    "tracin": "tracin",
    "cosine": "tracin",
    "trak": "trak",
    "trak-block": "trak",
    "kfac": "ekfac",
    "ekfac": "ekfac",
    # Diffusion (benchmarks/quality_diffusion.py): each method's own output function; a pair
    # is (training side, query side): Journey-TRAK's queries carry their trajectories.
    "dtrak": "dtrak",
    "das": "das",
    "jtrak": ("trak", "jtrak"),
}
# Projection per method: p = 16 factored, or exact per-example gradients (None) for the
# K-FAC family, whose per-module eigenbases lose most when projected (see docs/quality.md).
PROJ = {"kfac": None, "ekfac": None}
DEFAULT_K = LearnOptions.default("k")
RESULTS = Path(__file__).parent / "results"


def _store(task, role, method):
    task.proj_dim = PROJ.get(method, 16)
    features = FEATURES[method]
    if isinstance(features, tuple):
        features = features[0] if role == "train" else features[1]
    return task.store(role, features)


def lds(task, truth, method, role, weights=None):
    train = _store(task, "train", method)
    queries = _store(task, role, method)
    result = evaluate_lds(train, queries, truth[role], method, None, weight_vector(train, weights))
    return result.lds, result.ci


def learn(task, method, k, role="learn"):
    train = _store(task, "train", method)
    learn_store = _store(task, role, method)
    # The library's (and so the CLI's) defaults otherwise; the file is named after them.
    defaults = {f: LearnOptions.default(f) for f in ("weight_decay", "prior", "init")}
    proj = PROJ.get(method, 16) or "full"
    name = f"{method}-p{proj}-k{k}-wd{defaults['weight_decay']:g}-{defaults['prior']}"
    name += f"-{defaults['init']}" + ("" if role == "learn" else f"-{role}")
    out = task.root / "weights" / f"{name}.safetensors"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        run_learn(
            LearnOptions(train=train.path, queries=learn_store.path, out=out, method=method, k=k)
        )
    return out


def quality_rows(name, subsets, k_grid, methods=METHODS):
    task = TASKS[name]()
    truth = task.groundtruth(subsets)
    rows = []
    for method in methods:
        if method == "bm25" and _store(task, "train", "tracin").settings["task"] != "causal-lm":
            continue  # words: text tasks only
        if method in BASELINES:
            rows.append(_baseline_row(task, name, truth, method, subsets))
            continue
        plain = lds(task, truth, method, "eval")
        at20 = lds(task, truth, method, "eval", learn(task, method, 20))
        default = lds(task, truth, method, "eval", learn(task, method, DEFAULT_K))
        on_val = {k: lds(task, truth, method, "val", learn(task, method, k))[0] for k in k_grid}
        best = max(k_grid, key=lambda k: on_val[k])
        tuned = lds(task, truth, method, "eval", learn(task, method, best))
        rows.append(
            {
                "task": name,
                "method": method,
                "proj": PROJ.get(method, 16) or "full",
                "subsets": subsets,
                "queries": _store(task, "eval", method).num_examples,
                "lds": plain,
                "lds_w20": at20,
                "lds_wdefault": default,
                "best_k": best,
                "lds_wbest": tuned,
            }
        )
    return rows


def _baseline_row(task, name, truth, method, subsets) -> dict:
    """A baseline's row: its LDS alone (one group, or no features: nothing to weight)."""
    from attrib.evaluate.lds import lds_of_dense
    from attrib.score.lexical import dense_scores, store_texts

    if method == "bm25":
        train, queries = _store(task, "train", "tracin"), _store(task, "eval", "tracin")
        result = lds_of_dense(method, dense_scores(train, store_texts(queries)), truth["eval"])
        plain = (result.lds, result.ci)
    else:
        plain = lds(task, truth, method, "eval")
    queries = _store(task, "eval", "tracin" if method == "bm25" else method).num_examples
    return {
        "task": name,
        "method": method,
        "proj": "-",
        "subsets": subsets,
        "queries": queries,
        "lds": plain,
        "lds_w20": None,
        "lds_wdefault": None,
        "best_k": "-",
        "lds_wbest": None,
    }


def mislabel_rows(seed=0):
    from quality_tasks import Task

    from attrib.evaluate.mislabel import evaluate_mislabel, load_mislabeled
    from attrib.examples import digits
    from attrib.methods import get_method

    root = CACHE / f"digits-flip10-{seed}"
    if not (root / "model").exists():
        digits.build(root, seed, flip=0.1)
    paths = {r: root / "data" / f"{r}.parquet" for r in ("train", "learn", "val", "eval")}
    task = Task("digits-flip10", root, root / "model", paths, digits.RECIPE)
    rows = []
    for method in SELF_INFLUENCE_METHODS:
        train = _store(task, "train", method)
        mask = load_mislabeled(root / "data" / "mislabeled.npy", train)
        weights = learn(task, method, DEFAULT_K)
        prepared = get_method(method, train).prepare()
        plain = evaluate_mislabel(train, prepared, mask, None, 10).auc
        weighted = evaluate_mislabel(train, prepared, mask, weight_vector(train, weights), 10).auc
        rows.append(
            {
                "method": method,
                "auc": plain,
                "auc_w": weighted,
                "mislabeled": int(mask.sum()),
                "examples": len(mask),
            }
        )
    return rows


def _with_earlier_rows(rows):
    """Rows not measured by this run (--methods, --tasks) kept from the last results, in the
    table's order (task, then METHODS)."""
    earlier = RESULTS / "quality.json"
    if not earlier.is_file():
        return rows
    fresh = {(r["task"], r["method"]) for r in rows}
    kept = [r for r in json.loads(earlier.read_text())["rows"]
            if (r["task"], r["method"]) not in fresh]  # fmt: skip
    order = {m: i for i, m in enumerate(METHODS)}
    return sorted(kept + rows, key=lambda r: (r["task"], order.get(r["method"], 99)))


def _earlier_mislabel() -> list:
    """--no-mislabel: the last run's mislabeled-data rows, kept in the results."""
    earlier = RESULTS / "quality.json"
    return json.loads(earlier.read_text()).get("mislabel", []) if earlier.is_file() else []


def pct(pair) -> str:
    if pair is None:
        return "-"
    return f"{100 * pair[0]:.2f} ± {100 * pair[1]:.2f}"


def markdown(rows, mislabel, command) -> str:
    lines = [
        f"Command: `{command}`",
        "",
        f"| task | method | p | LDS % | weighted, k=20 | weighted, k={DEFAULT_K} (default) "
        "| best k (val) | weighted, best k |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['method']} | {r['proj']} | {pct(r['lds'])} "
            f"| {pct(r['lds_w20'])} | {pct(r['lds_wdefault'])} | {r['best_k']} "
            f"| {pct(r['lds_wbest'])} |"
        )
    if mislabel:
        lines += [
            "",
            "Mislabeled-data detection, digits with 10% flipped labels (ROC AUC):",
            "",
            f"| method | AUC | weighted, k={DEFAULT_K} |",
            "|---|---|---|",
        ]
        for r in mislabel:
            lines.append(f"| {r['method']} | {r['auc']:.3f} | {r['auc_w']:.3f} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,pydoc")
    parser.add_argument("--subsets", type=int, default=50)
    parser.add_argument("--k-grid", default="5,10,20,50")
    parser.add_argument("--no-mislabel", action="store_true")
    parser.add_argument(
        "--methods", default=",".join(METHODS),
        help="measure these; the other rows are kept from the last run that measured them",
    )  # fmt: skip
    args = parser.parse_args()
    log.set_quiet(True)
    start = time.time()
    k_grid = [int(k) for k in args.k_grid.split(",")]
    methods = args.methods.split(",")
    tasks = args.tasks.split(",")
    rows = [r for name in tasks for r in quality_rows(name, args.subsets, k_grid, methods)]
    rows = _with_earlier_rows(rows)
    mislabel = _earlier_mislabel() if args.no_mislabel else mislabel_rows()
    table = Table(title=f"LDS (%) ± 95% CI, {args.subsets} retrained models per task")
    for column in (
        "task",
        "method",
        "p",
        "LDS",
        "w, k=20",
        f"w, k={DEFAULT_K}",
        "best k",
        "w, best k",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["task"],
            r["method"],
            str(r["proj"]),
            pct(r["lds"]),
            pct(r["lds_w20"]),
            pct(r["lds_wdefault"]),
            str(r["best_k"]),
            pct(r["lds_wbest"]),
        )
    console = Console()
    console.print(table)
    if mislabel:
        auc = Table(title="mislabeled-data detection, digits, 10% flipped (ROC AUC)")
        for column in ("method", "AUC", f"weighted k={DEFAULT_K}"):
            auc.add_column(column, justify="right")
        for r in mislabel:
            auc.add_row(r["method"], f"{r['auc']:.3f}", f"{r['auc_w']:.3f}")
        console.print(auc)
    command = "python benchmarks/quality.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality.md").write_text(markdown(rows, mislabel, command.strip()))
    (RESULTS / "quality.json").write_text(
        json.dumps({"rows": rows, "mislabel": mislabel, "seconds": time.time() - start}, indent=1)
    )
    console.print(f"written to {RESULTS / 'quality.md'} in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
