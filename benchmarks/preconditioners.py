"""The preconditioners side by side on a fine-tuning task's same-run ground truth.

    python benchmarks/preconditioners.py [--task pydoc-finetune] [--queries 64] [--subsets 64]

benchmarks/magic.py's task (its recorded run and same-run ground truths, the same files
magic.py and baselines.py use, made here when missing). Each method with the store featurize
makes for it at the default projection (p = 16) and its default damping, unweighted and with
weights learned by `learn-weights` with its defaults on the task's weight-learning rows (never
the evaluation queries): tracin (no curvature), trak-block (Gram per module, the CLI's
default), kfac and ekfac (featurize's Kronecker factors), shampoo (eigenvalue-corrected
Shampoo from the stored loss gradients alone, no factors), trackstar (gradients over the
run's last AdamW second moments, whitened cosine). `--methods a,b` runs those alone (and
trak-block, the paired reference). Through the options
objects the CLI is built from. LDS % (95% CI with the subsets' luck) at keep 0.5 and 0.95, and
the kernel's fit time. Tables: stdout and benchmarks/results/preconditioners-TASK.md (+ .json).
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import same_run_setup, store, task_main  # noqa: E402

from attrib.evaluate.options import LdsOptions  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.methods import get_method  # noqa: E402
from attrib.score.options import ScoreOptions  # noqa: E402
from attrib.score.run import run_score  # noqa: E402
from attrib.store import Store  # noqa: E402
from attrib.weights.options import LearnOptions  # noqa: E402
from attrib.weights.run import run_learn  # noqa: E402

# method -> the featurize method of its store (trak's is the default store: margin gradients
# for a classifier, the loss's for a language model; shampoo's holds loss gradients and no
# factors)
STORES = {
    "tracin": "trak",
    "trak-block": "trak",
    "kfac": "ekfac",
    "ekfac": "ekfac",
    "shampoo": "shampoo",
    "trackstar": "trackstar",  # featurized with the run's last optimizer state
}


def fit_seconds(train: Path, method: str) -> float:
    """The kernel's fit from an empty cache (then left cached for the LDS runs)."""
    shutil.rmtree(train / "cache", ignore_errors=True)
    start = time.perf_counter()
    get_method(method, Store(train)).prepare()
    return time.perf_counter() - start


def run(args) -> dict:
    root, run_dir, data, truths = same_run_setup(args.task, args.queries, args.subsets)
    rows = []
    chosen = args.methods.split(",") if args.methods else list(STORES)
    if "trak-block" not in chosen:  # the paired differences need the default's row
        chosen.insert(0, "trak-block")
    for method, kind in ((m, STORES[m]) for m in chosen):
        train = store(root, run_dir, data["train"], kind, "train")
        queries = store(root, run_dir, data["eval"], kind, "eval", args.queries)
        learn = store(root, run_dir, data["learn"], kind, "learn")
        seconds = fit_seconds(train, method)
        weights = root / f"weights-{method}.safetensors"
        if not weights.exists():
            run_learn(LearnOptions(train=train, queries=learn, out=weights, method=method))
        cells = {}
        for keep in (0.5, 0.95):
            found = run_lds(
                LdsOptions(train=train, queries=queries, groundtruth=truths[keep],
                           methods=(method,), weights=("none", str(weights)), device="cpu")
            )  # fmt: skip
            for row in found:
                label = "none" if row["weights"] in (None, "none") else "weights"
                cells[f"{keep:g} {label}"] = {
                    "lds": 100 * row["lds"],
                    "ci": 100 * row["ci_subsets"],
                }
        rows.append({"method": method, "store": kind, "fit_seconds": seconds, **cells})
        print(method, cells, flush=True)
    _paired_to_default(root, run_dir, data, args, truths, rows)
    return {"task": args.task, "rows": rows}


def _paired_to_default(root, run_dir, data, args, truths, rows) -> None:
    """Each method minus the default (unweighted), on the same resamples of queries and
    subsets: its dense scores (`score --out`) evaluated beside the default's."""
    train = store(root, run_dir, data["train"], STORES["trak-block"], "train")
    queries = store(root, run_dir, data["eval"], STORES["trak-block"], "eval", args.queries)
    scores = {}
    for row in rows:
        kind = STORES[row["method"]]
        scores[row["method"]] = root / f"scores-{row['method']}.npy"
        run_score(
            ScoreOptions(train=store(root, run_dir, data["train"], kind, "train"),
                         queries=store(root, run_dir, data["eval"], kind, "eval", args.queries),
                         method=row["method"], out=scores[row["method"]], top=1, device="cpu",
                         progress=False)
        )  # fmt: skip
    for keep in (0.5, 0.95):
        found = run_lds(
            LdsOptions(train=train, queries=queries, groundtruth=truths[keep],
                       methods=("trak-block",), weights=("none",),
                       scores=tuple(str(scores[r["method"]]) for r in rows), device="cpu")
        )  # fmt: skip
        for row, paired in zip(rows, found[1:]):
            row[f"{keep:g} vs default"] = {
                "lds": 100 * paired["vs_first"],
                "ci": 100 * paired["vs_first_ci"],
            }


def markdown(result: dict) -> str:
    columns = ["0.5 none", "0.5 weights", "0.95 none", "0.95 weights"]
    lines = [
        f"Preconditioners on {result['task']} (same-run ground truth, p = 16, default damping; "
        "LDS % ± CI with the subsets' luck)",
        "",
        "| method | store | keep 0.5 | weighted | minus trak-block (paired) | keep 0.95 "
        "| weighted | minus trak-block (paired) | kernel fit (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        cells = [f"{row[c]['lds']:.1f} ± {row[c]['ci']:.1f}" for c in columns]
        for at, column in ((2, "0.5 vs default"), (5, "0.95 vs default")):
            cells.insert(at, f"{row[column]['lds']:+.1f} ± {row[column]['ci']:.1f}")
        lines.append(
            f"| {row['method']} | {row['store']} | " + " | ".join(cells)
            + f" | {row['fit_seconds']:.1f} |"
        )  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    task_main("preconditioners", "pydoc-finetune", run, markdown)
