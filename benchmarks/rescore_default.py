"""Two-stage scoring on featurize's default store: how many candidates to re-score, and with
which damping (issue 35's "candidates" default).

    python benchmarks/rescore_default.py [--task pydoc-finetune] [--candidates 0,100,300,1000]
                                         [--queries 64] [--subsets 64] [--keeps 0.5,0.95]

On benchmarks/magic.py's fine-tuning task (the run, its same-run ground truths, as
benchmarks/error_split.py makes them and under the same file names): the training,
validation and evaluation rows featurized with featurize's defaults (no --method, no
--proj-dim: Shampoo's store at p = 45 in int8), scored by `evaluate lds --rescore N` for
each N (0: the store alone; N >= the training rows: every row re-scored, the exact method),
each with the method's default damping (1e-3 on the store, 0.1 on the exact stage for K-FAC's
family) and with one damping for both,
chosen on the validation queries (their own same-run ground truth at keep 0.5, never the
evaluation queries) from DAMPINGS. Then magic. Every
figure through the options objects the CLI is built from. Cost: `score --rescore N`'s wall
seconds for the evaluation queries, first call (the exact factors fitted) and cached.
Tables: stdout and benchmarks/results/rescore-default-TASK-STORE.md (+ .json), STORE the
default store's method, p and dtype (e.g. shampoo-p45-int8).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, publish, record_run  # noqa: E402

from attrib.evaluate.options import LdsOptions, RetrainOptions  # noqa: E402
from attrib.evaluate.retrain import retrain  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.score.options import ScoreOptions  # noqa: E402
from attrib.score.run import run_score  # noqa: E402
from attrib.training.magic_options import MagicOptions  # noqa: E402
from attrib.training.magic_run import run_magic  # noqa: E402

DAMPINGS = (1e-3, 1e-2, 1e-1, 1.0)


def default_store(
    root: Path, run: Path, data: Path, name: str, rows: int | None, method: str | None = None
) -> Path:
    """featurize with its defaults (what a user who passes no flags gets; with `method`, only
    --method given), made once."""
    options = FeaturizeOptions(model=str(run / "model"), data=str(data), out=root / "stores",
                               max_examples=rows, method=method, device="cpu",
                               progress=False)  # fmt: skip
    # Named by the defaults featurize resolved: a cache of earlier defaults is not reused.
    resolved = f"{options.method}-p{options.proj_dim}-{options.store_dtype}"
    if options.proj_allocation != "uniform":
        resolved += f"-{options.proj_allocation}"
    out = root / "stores" / f"{name}-default-{resolved}"
    if not (out / "manifest.json").exists():
        run_featurize(replace(options, out=out))
    return out


def lds(train, queries, truth, rescore: int, damping=None, scores=(), weights="none") -> dict:
    rows = run_lds(
        LdsOptions(train=train, queries=queries, groundtruth=truth, weights=(weights,),
                   rescore=rescore, damping=damping, scores=tuple(str(s) for s in scores),
                   device="cpu")
    )  # fmt: skip
    return rows[-1] if scores else rows[0]


def seconds(train, queries, rescore: int) -> tuple[float, float]:
    """score's wall seconds: first call (exact factors fitted), then cached."""
    shutil.rmtree(train / "cache", ignore_errors=True)
    times = []
    for _ in range(2):
        start = time.perf_counter()
        run_score(ScoreOptions(train=train, queries=queries, rescore=rescore, top=10,
                               device="cpu", preview=False))  # fmt: skip
        times.append(time.perf_counter() - start)
    return times[0], times[1]


def run(args) -> dict:
    root, task = build(args.task)
    run_dir, _ = record_run(root, task) if not (root / "run/model").exists() else (root / "run", 0)
    data = task["data"]
    roles = {"train": None, "val": args.queries, "eval": args.queries}
    stores = {
        role: default_store(root, run_dir, data[role], role, rows) for role, rows in roles.items()
    }
    truths = {"val": root / f"same-run-val-{args.subsets}-0.5.npz"}
    truths |= {keep: root / f"same-run-{args.subsets}-{keep:g}.npz" for keep in args.keeps}
    for key, path in truths.items():
        if path.exists():  # made from the rows, not the features: any store's serve
            continue
        retrain(
            RetrainOptions(train=stores["train"], queries=stores["val" if key == "val" else "eval"],
                           out=path, subsets=args.subsets, alpha=0.5 if key == "val" else key,
                           same_run=run_dir, device="cpu", progress=False)
        )  # fmt: skip
    magic = root / f"magic-{args.queries}.npy"
    if args.magic and not magic.exists():
        run_magic(MagicOptions(run=run_dir, queries=stores["eval"], out=magic, device="cpu",
                               progress=False))  # fmt: skip
    rows = []
    for n in args.candidates:
        val = {c: lds(stores["train"], stores["val"], truths["val"], n, c)["lds"] for c in DAMPINGS}
        chosen = max(val, key=val.get)
        row = {"candidates": n, "damping": chosen}
        row["val"] = {f"{c:g}": 100 * v for c, v in val.items()}
        for keep in args.keeps:
            plain = lds(stores["train"], stores["eval"], truths[keep], n)
            tuned = lds(stores["train"], stores["eval"], truths[keep], n, chosen)
            row[f"{keep:g}"] = [
                100 * plain["lds"],
                100 * plain["ci_subsets"],
                100 * tuned["lds"],
                100 * tuned["ci_subsets"],
            ]
        row["seconds"] = seconds(stores["train"], stores["eval"], n) if n else None
        rows.append(row)
        print(row, flush=True)
    magic_row = {}
    if magic.exists():
        magic_row = {f"{k:g}": lds(stores["train"], stores["eval"], truths[k], 0, scores=(magic,))
                     for k in args.keeps}  # fmt: skip
        magic_row = {k: [100 * r["lds"], 100 * r["ci_subsets"]] for k, r in magic_row.items()}
    keeps = [f"{k:g}" for k in args.keeps]
    # The default store's resolved method, p and dtype: the published table is named by them.
    store = stores["train"].name.removeprefix("train-default-")
    return {"task": args.task, "queries": args.queries, "keeps": keeps, "rows": rows,
            "magic": magic_row, "store": store}  # fmt: skip


def markdown(result: dict) -> str:
    keeps = result["keeps"]
    lines = [
        f"{result['task']}: featurize's default store, `--rescore N`; "
        "LDS % ± 95% CI with the subsets' luck, the default damping (K-FAC's family: 1e-3 on the "
        "store, 0.1 on the re-scored candidates) / one damping for both, chosen on the "
        "validation queries",
        "",
        "| candidates re-scored | damping chosen on val | "
        + " | ".join(f"keep {k}" for k in keeps)
        + " | score s (first / cached) |",
        "|---|---|" + "---|" * len(keeps) + "---|",
    ]
    for row in result["rows"]:
        cells = " | ".join(
            f"{row[k][0]:.1f} ± {row[k][1]:.1f} / {row[k][2]:.1f} ± {row[k][3]:.1f}" for k in keeps
        )
        cost = "-" if row["seconds"] is None else "{:.1f} / {:.1f}".format(*row["seconds"])
        name = "none (the store alone)" if row["candidates"] == 0 else row["candidates"]
        lines.append(f"| {name} | {row['damping']:g} | {cells} | {cost} |")
    if result["magic"]:
        cells = " | ".join(f"{result['magic'][k][0]:.1f} ± {result['magic'][k][1]:.1f}"
                           for k in keeps)  # fmt: skip
        lines.append(f"| magic (needs the recorded run) | - | {cells} | - |")
    lines += ["", "Validation LDS by damping: " + "; ".join(
        f"N = {r['candidates']}: " + ", ".join(f"{c} {v:.1f}" for c, v in r["val"].items())
        for r in result["rows"])]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pydoc-finetune")
    parser.add_argument("--candidates", default="0,100,300,1000")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    parser.add_argument("--keeps", default="0.5,0.95")
    parser.add_argument("--magic", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    args.candidates = [int(c) for c in args.candidates.split(",")]
    args.keeps = [float(k) for k in args.keeps.split(",")]
    result = run(args)
    text = markdown(result)
    print(text)
    # Named by the default store, so a later default does not overwrite the tables the docs
    # cite for an earlier one.
    publish(f"rescore-default-{args.task}-{result['store']}", text, [result])


if __name__ == "__main__":
    main()
