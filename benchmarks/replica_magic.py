"""How much of magic's lead is the run's own batch order: magic on a replica run (the same
base model, data and recipe, another seed) against the same-run ground truth of the run a
user holds.

    python benchmarks/replica_magic.py [--task digits-finetune] [--replicas 2] [--queries 64]
                                       [--subsets 64] [--keeps 0.5,0.95]

Issue 35 asks the default pipeline to come within 3 LDS points of magic from a checkpoint
alone. A checkpoint holds the weights, not the order of the batches, the dropout and noise
draws, nor the optimizer's path. This measures what knowing everything but those is worth:
`attrib train` records R replicas of benchmarks/magic.py's fine-tuning run from the same
start with seeds recipe.seed + 1..R (another batch order), `attrib magic` scores the held
run's evaluation queries on each, and each replica's scores (and their mean) are judged
against the held run's same-run ground truth, beside magic on the held run itself and the
CLI's default (featurize, score: Shampoo at p = 45 in int8) on the held checkpoint. LDS %
(95% CI with the subsets' luck) at keep 0.5 and 0.95, paired to the default's row, through
the options objects the CLI is built from, with their defaults. Tables: stdout and
benchmarks/results/replica-magic-TASK.md (+ .json).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, publish, record_run, same_run_setup  # noqa: E402

from attrib.evaluate.options import LdsOptions  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.training.magic_options import MagicOptions  # noqa: E402
from attrib.training.magic_run import run_magic  # noqa: E402


def default_store(model: Path, data: Path, out: Path, rows: int | None = None) -> Path:
    """featurize with its defaults (what a user's first command writes)."""
    if not (out / "manifest.json").exists():
        run_featurize(
            FeaturizeOptions(model=str(model), data=str(data), out=out, max_examples=rows,
                             device="cpu", progress=False)
        )  # fmt: skip
    return out


def magic_scores(run: Path, queries: Path, out: Path) -> Path:
    if not out.exists():
        run_magic(MagicOptions(run=run, queries=queries, out=out, device="cpu", progress=False))
    return out


def run(args) -> dict:
    root, held, data, truths = same_run_setup(args.task, args.queries, args.subsets, args.keeps)
    _, task = build(args.task)
    train = default_store(held / "model", data["train"], root / "stores" / "default-train")
    queries = default_store(
        held / "model", data["eval"], root / "stores" / "default-eval", args.queries
    )
    scores = {"magic, the held run": magic_scores(held, queries, root / "magic-default-eval.npy")}
    replicas = []
    for r in range(1, args.replicas + 1):
        recipe = replace(task["recipe"], seed=task["recipe"].seed + r)
        replica_root = root / f"replica-{r}"
        replica, _ = record_run(replica_root, {**task, "recipe": recipe})
        # magic wants its queries featurized from the run it replays: the same rows
        own = replica_root / "queries"
        if not (own / "manifest.json").exists():
            run_featurize(
                FeaturizeOptions(model=str(replica / "model"), data=str(data["eval"]), out=own,
                                 max_examples=args.queries, no_gradients=True, device="cpu",
                                 progress=False)
            )  # fmt: skip
        replicas.append(magic_scores(replica, own, replica_root / "magic-eval.npy"))
        scores[f"magic, replica {r} (seed +{r})"] = replicas[-1]
    if len(replicas) > 1:
        mean = root / f"magic-replica-mean-{len(replicas)}.npy"
        np.save(mean, np.mean([np.load(p) for p in replicas], axis=0))
        scores[f"magic, mean of {len(replicas)} replicas"] = mean
    table = {}
    for keep, truth in truths.items():
        rows = run_lds(
            LdsOptions(train=train, queries=queries, groundtruth=truth, methods=("shampoo",),
                       scores=tuple(str(p) for p in scores.values()), device="cpu")
        )  # fmt: skip
        names = ["the CLI's default (shampoo, p = 45 int8)", *scores]
        table[f"keep {keep:g}"] = [{**row, "name": n} for row, n in zip(rows, names, strict=True)]
    return {"task": args.task, "replicas": args.replicas, "lds": table}


def markdown(result: dict) -> str:
    lines = [
        f"### {result['task']}: magic on {result['replicas']} replica runs (another seed) "
        "against the held run's same-run ground truth",
        "",
        "| ground truth | scores | LDS % | ± CI+subsets | minus the default ± paired |",
        "|---|---|---|---|---|",
    ]
    for truth, rows in result["lds"].items():
        for row in rows:
            diff = row.get("vs_first")
            paired = f"{100 * diff:+.2f} ± {100 * row['vs_first_ci']:.2f}" if diff else ""
            lines.append(
                f"| {truth} | {row['name']} | {100 * row['lds']:.2f} | "
                f"{100 * row['ci_subsets']:.2f} | {paired} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits-finetune")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    parser.add_argument("--keeps", default="0.5,0.95")
    args = parser.parse_args()
    args.keeps = tuple(float(k) for k in args.keeps.split(","))
    result = run(args)
    text = markdown(result)
    print(text)
    publish(f"replica-magic-{args.task}", text, [result])


if __name__ == "__main__":
    main()
