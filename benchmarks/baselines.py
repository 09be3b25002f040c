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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import same_run_setup, store, task_main  # noqa: E402

from attrib.evaluate.options import LdsOptions  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.methods import DEFAULT_METHOD  # noqa: E402

# method -> the featurize method of its store (bm25 reads any text store's rows)
STORES = {DEFAULT_METHOD: "trak", "repsim": "repsim", "bm25": "trak"}


def run(args) -> dict:
    root, run_dir, data, truths = same_run_setup(args.task, args.queries, args.subsets)
    rows = []
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


if __name__ == "__main__":
    task_main("baselines", "digits-finetune", run, markdown)
