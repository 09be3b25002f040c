"""Query-side solves against exact Gauss-Newton products (`score --rescore N --solver ...`)
beside EK-FAC's own eigenbases, on the same-run ground truth of a fine-tuning task.

    python benchmarks/solvers.py [--task digits-finetune] [--candidates 100]
                                 [--solvers cg] [--curvature-rows 256] [--subsets 64]

On benchmarks/magic.py's task (the run `attrib train` recorded, its default stores and its
same-run ground truths, as benchmarks/rescore.py and error_split.py use): `score --method
ekfac --rescore N --out X.npy` for each solver ("none": the eigenbases alone), with the
options' defaults otherwise (damping 1e-3, 20 iterations, tolerance 1e-3), then `evaluate lds
--scores X.npy` at keep 0.5 and 0.95. Each score call is timed (the exact eigenbases are
fitted by the first call and cached). Everything through the options objects the CLI is
built from. Tables: stdout and benchmarks/results/solvers-TASK.md (+ .json).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import publish, same_run_setup, store  # noqa: E402

from attrib.evaluate.options import LdsOptions  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.score.options import ScoreOptions  # noqa: E402
from attrib.score.run import run_score  # noqa: E402


def _scores(train, queries, out: Path, candidates, solver, rows, iterations, damping) -> float:
    """Writes the dense answer to `out`; returns the call's wall seconds. With `iterations`,
    the solve stops there whatever its residual (early-stopped: --tolerance 0)."""
    start = time.perf_counter()
    stop = {} if iterations is None else {"iterations": iterations, "tolerance": 0.0}
    run_score(
        ScoreOptions(
            train=train, queries=queries, method="ekfac", rescore=candidates, solver=solver,
            curvature_rows=rows, out=out, top=10, device="cpu", preview=False, damping=damping,
            **stop,
        )
    )  # fmt: skip
    return time.perf_counter() - start


def _lds(train, queries, truth, scores: Path) -> dict:
    (row,) = run_lds(
        LdsOptions(train=train, queries=queries, groundtruth=truth, scores=(str(scores),),
                   only_scores=True, device="cpu")
    )  # fmt: skip
    return row


def run(args) -> dict:
    root, run_dir, data, truths = same_run_setup(args.task, args.queries, args.subsets)
    train = store(root, run_dir, data["train"], "ekfac", "train")
    queries = store(root, run_dir, data["eval"], "ekfac", "eval", args.queries)
    rows = []
    runs = [(0, "none", None), (args.candidates, "none", None)]
    runs += [(args.candidates, s, k) for s in args.solvers for k in args.iterations or [None]]
    for candidates, solver, iterations in runs:
        out = root / (
            f"solver-{solver}-{candidates}-{iterations}-{args.damping}-{args.curvature_rows}.npy"
        )
        seconds = _scores(
            train, queries, out, candidates, solver, args.curvature_rows, iterations, args.damping
        )
        lds = {keep: _lds(train, queries, truth, out) for keep, truth in truths.items()}
        rows.append({
            "solver": solver, "candidates": candidates, "seconds": seconds,
            "curvature_rows": None if solver == "none" else args.curvature_rows,
            "iterations": iterations, "damping": args.damping,
            **{f"lds_{k:g}": 100 * lds[k]["lds"] for k in truths},
            **{f"ci_{k:g}": 100 * lds[k]["ci_subsets"] for k in truths},
        })  # fmt: skip
        print(rows[-1], flush=True)
    return {"task": args.task, "queries": args.queries, "damping": args.damping, "rows": rows}


def markdown(result: dict) -> str:
    lines = [
        f"{result['task']}, EK-FAC (--lambda {result['damping'] or 'default'}), default store "
        "(same-run ground truth, "
        f"{result['queries']} queries; LDS % ± 95% CI with the subsets' luck)",
        "",
        "| query side | candidates re-scored | G averaged over | keep 0.5 | keep 0.95 | "
        "score s (all queries) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        side = "store alone" if not row["candidates"] else (
            "EK-FAC eigenbases" if row["solver"] == "none" else f"--solver {row['solver']}"
        )  # fmt: skip
        if row.get("iterations"):
            side += f", stopped after {row['iterations']} iterations"
        over = "-" if row["curvature_rows"] is None else f"{row['curvature_rows'] or 'all'} rows"
        lines.append(
            f"| {side} | {row['candidates'] or '-'} | {over} "
            f"| {row['lds_0.5']:.1f} ± {row['ci_0.5']:.1f} "
            f"| {row['lds_0.95']:.1f} ± {row['ci_0.95']:.1f} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits-finetune")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--solvers", default="cg")
    parser.add_argument("--damping", type=float, default=None, help="--lambda (default: EK-FAC's)")
    parser.add_argument(
        "--iterations", default="", help="stop each solve after these many iterations (1,3,10)"
    )
    parser.add_argument("--curvature-rows", type=int, default=256)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    args = parser.parse_args()
    args.solvers = args.solvers.split(",")
    args.iterations = [int(k) for k in args.iterations.split(",") if k]
    result = run(args)
    text = markdown(result)
    print(text)
    suffix = "" if args.damping is None else f"-lambda{args.damping:g}"
    suffix += "" if args.curvature_rows == 256 else f"-rows{args.curvature_rows}"
    publish(f"solvers-{args.task}{suffix}", text, [result])


if __name__ == "__main__":
    main()
