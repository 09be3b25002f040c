"""The baselines on a fine-tuning task's same-run ground truth, beside the default method.

    python benchmarks/baselines.py [--task digits-finetune] [--queries 64] [--subsets 64]

benchmarks/magic.py's fine-tuning task (its recorded run and same-run ground truths, the same
files magic.py makes, made here when missing): representation similarity (`--method repsim`, the
run's model's own pooled hidden states), BM25 on text tasks, and the CLI's default method
(trak-block, p = 16) for scale, each with the store featurize makes for it, through the
options objects the CLI is built from with their defaults. LDS % (95% CI with the subsets'
luck) at keep 0.5 and 0.95. Tables: stdout and benchmarks/results/baselines-TASK.md (+ .json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, publish, record_run, same_run_truth, store  # noqa: E402

from attrib.evaluate.options import LdsOptions  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.methods import DEFAULT_METHOD  # noqa: E402

# method -> the featurize method of its store (bm25 reads any text store's rows)
STORES = {DEFAULT_METHOD: "trak", "repsim": "repsim", "bm25": "trak"}


def run(args) -> dict:
    root, task = build(args.task)
    run_dir, _ = record_run(root, task)
    data = task["data"]
    rows = []
    default = STORES[DEFAULT_METHOD]  # the ground truth's queries: magic.py's evaluation store
    truths = {
        keep: same_run_truth(
            root, run_dir, store(root, run_dir, data["train"], default, "train"),
            store(root, run_dir, data["eval"], default, "eval", args.queries), args.subsets, keep,
        )
        for keep in (0.5, 0.95)
    }  # fmt: skip
    for method, kind in STORES.items():
        train = store(root, run_dir, data["train"], kind, "train")
        queries = store(root, run_dir, data["eval"], kind, "eval", args.queries)
        if method == "bm25" and "causal" not in (train / "manifest.json").read_text():
            continue  # words: text tasks only
        cells = {}
        for keep in (0.5, 0.95):
            truth = truths[keep]
            (row,) = run_lds(
                LdsOptions(train=train, queries=queries, groundtruth=truth, methods=(method,),
                           device="cpu")
            )  # fmt: skip
            cells[str(keep)] = {"lds": 100 * row["lds"], "ci": 100 * row["ci_subsets"]}
        rows.append({"method": method, **cells})
        print(method, cells, flush=True)
    return {"task": args.task, "rows": rows}


def markdown(result: dict) -> str:
    lines = [
        f"Baselines on {result['task']} (same-run ground truth; LDS % ± CI with the subsets' luck)",
        "",
        "| method | keep 0.5 | keep 0.95 |",
        "|---|---|---|",
    ]
    for row in result["rows"]:
        cells = [f"{row[k]['lds']:.1f} ± {row[k]['ci']:.1f}" for k in ("0.5", "0.95")]
        lines.append(f"| {row['method']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits-finetune")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    args = parser.parse_args()
    result = run(args)
    text = markdown(result)
    print(text)
    publish(f"baselines-{args.task}", text, [result])


if __name__ == "__main__":
    main()
