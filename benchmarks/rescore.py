"""Two-stage scoring (`--rescore N`) against the projected store alone and the exact store.

    python benchmarks/rescore.py [--task digits-finetune] [--dim 16] [--candidates 30,100,300]
                                 [--queries 64] [--subsets 64]

On benchmarks/magic.py's fine-tuning task (the same run, stores and same-run ground truths
as benchmarks/error_split.py): EK-FAC and TracIn at p = --dim, with each number of
candidates re-scored on exact gradients, and on `--proj-dim full` stores (the exact method,
33x the store on digits). For each: LDS % (95% CI with the subsets' luck) at keep 0.5 and
0.95, the share of the exact method's top 10 found in the listed top 10, and `score`'s wall
seconds per query (the exact factors fitted on the first call, cached after: both given).
Everything through the options objects the CLI is built from, with their defaults (EK-FAC's
damping 1e-3). Tables: stdout and benchmarks/results/rescore-TASK.md (+ .json).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, publish, record_run, store  # noqa: E402

from attrib.evaluate.options import LdsOptions, RetrainOptions  # noqa: E402
from attrib.evaluate.retrain import retrain  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.score.options import ScoreOptions  # noqa: E402
from attrib.score.run import run_score  # noqa: E402

METHODS = ("ekfac", "tracin")


def _lds(train, queries, truth, rescore: int) -> dict:
    rows = run_lds(
        LdsOptions(train=train, queries=queries, groundtruth=truth, methods=METHODS,
                   rescore=rescore, device="cpu")
    )  # fmt: skip
    return {row["method"].split("+")[0]: row for row in rows}


def _top10(train, queries, method: str, rescore: int = 0) -> tuple[dict, float]:
    """Each query's listed top 10, and the wall seconds of the call."""
    start = time.perf_counter()
    records = run_score(
        ScoreOptions(train=train, queries=queries, method=method, rescore=rescore, top=10,
                     device="cpu", preview=False)
    )  # fmt: skip
    seconds = time.perf_counter() - start
    found: dict = {}
    for record in records:
        found.setdefault(record["query"], set()).add(record["index"])
    return found, seconds


def run(args) -> dict:
    root, task = build(args.task)
    run_dir, _ = record_run(root, task)
    data = task["data"]
    roles = {"train": None, "eval": args.queries}
    stores = {
        dim: {
            role: store(root, run_dir, data[role], "ekfac", role, rows, proj_dim=dim)
            for role, rows in roles.items()
        }  # fmt: skip
        for dim in (args.dim, "full")
    }
    truths = {}
    for keep in (0.5, 0.95):
        truths[keep] = root / f"same-run-{args.subsets}-{keep:g}.npz"
        retrain(
            RetrainOptions(train=stores[args.dim]["train"], queries=stores[args.dim]["eval"],
                           out=truths[keep], subsets=args.subsets, alpha=keep, same_run=run_dir,
                           device="cpu", progress=False)
        )  # fmt: skip
    rows = []
    exact_top = {m: _top10(stores["full"]["train"], stores["full"]["eval"], m) for m in METHODS}
    for candidates in [0, *args.candidates, "full"]:
        at = stores["full" if candidates == "full" else args.dim]
        rescore = 0 if candidates == "full" else candidates
        lds = {keep: _lds(at["train"], at["eval"], truths[keep], rescore) for keep in truths}
        for method in METHODS:
            if rescore:  # the first call fits the exact factors; the second finds them cached
                shutil.rmtree(at["train"] / "cache", ignore_errors=True)
                _, fit_seconds = _top10(at["train"], at["eval"], method, rescore)
            found, seconds = _top10(at["train"], at["eval"], method, rescore)
            want = exact_top[method][0]
            agreement = sum(len(found[q] & want[q]) for q in want) / (10 * len(want))
            rows.append({
                "method": method, "candidates": candidates, "agreement": agreement,
                "seconds_per_query": seconds / args.queries,
                "fit_seconds": fit_seconds if rescore else None,
                **{f"lds_{k:g}": 100 * lds[k][method]["lds"] for k in truths},
                **{f"ci_{k:g}": 100 * lds[k][method]["ci_subsets"] for k in truths},
            })  # fmt: skip
    return {"task": args.task, "dim": args.dim, "rows": rows}


def markdown(result: dict) -> str:
    lines = [
        f"{result['task']}, p = {result['dim']} (same-run ground truth; LDS % ± 95% CI)",
        "",
        "| method | candidates re-scored | keep 0.5 | keep 0.95 | top-10 = exact's | "
        "s per query (first call) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        first = "" if row["fit_seconds"] is None else f" ({row['fit_seconds']:.1f} s in all)"
        what = {0: "none (the store alone)", "full": "exact store (--proj-dim full)"}
        lines.append(
            f"| {row['method']} | {what.get(row['candidates'], row['candidates'])} "
            f"| {row['lds_0.5']:.1f} ± {row['ci_0.5']:.1f} "
            f"| {row['lds_0.95']:.1f} ± {row['ci_0.95']:.1f} | {row['agreement']:.2f} "
            f"| {row['seconds_per_query']:.3f}{first} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits-finetune")
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--candidates", default="30,100,300")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    args = parser.parse_args()
    args.candidates = [int(c) for c in args.candidates.split(",")]
    result = run(args)
    text = markdown(result)
    print(text)
    publish(f"rescore-{args.task}", text, [result])


if __name__ == "__main__":
    main()
