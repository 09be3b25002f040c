"""Which method featurize and score default to (issue 35's "method" default).

    python benchmarks/default_method.py [--task pydoc-finetune] [--methods ekfac,shampoo,kfac]
                                        [--queries 64] [--subsets 64] [--keeps 0.5,0.95]

On benchmarks/magic.py's fine-tuning task (the run and its same-run ground truths, under
benchmarks/rescore_default.py's file names): for each method, the training, validation,
evaluation and weight-learning rows featurized with featurize's defaults but `--method M`
(K-FAC's family: p = 45 in int8), weights learned with learn-weights' defaults, and the
method scored by `evaluate lds` at its default damping and at the damping chosen on the
validation queries (keep 0.5, never the evaluation queries), without and with the weights;
and each method minus the first, both at their default dampings and unweighted, on the same
resamples of queries and subsets (the stores of K-FAC's family hold the same features, so
that pair is scored on the first's store). Every figure through the options objects the CLI is
built from. Tables: stdout and benchmarks/results/default-method-TASK.md (+ .json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, publish, record_run  # noqa: E402
from rescore_default import DAMPINGS, default_store  # noqa: E402

from attrib.evaluate.options import LdsOptions, RetrainOptions  # noqa: E402
from attrib.evaluate.retrain import retrain  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.weights.options import LearnOptions  # noqa: E402
from attrib.weights.run import run_learn  # noqa: E402


def lds(train, queries, truth, methods, damping=None, weights="none") -> list[dict]:
    """One row a method; each row after the first also carries its difference from the
    first on the same resamples of queries and subsets (vs_first, vs_first_ci)."""
    return run_lds(
        LdsOptions(train=train, queries=queries, groundtruth=truth, methods=tuple(methods),
                   weights=(weights,), damping=damping, device="cpu")
    )  # fmt: skip


def run(args) -> dict:
    root, task = build(args.task)
    run_dir, _ = record_run(root, task) if not (root / "run/model").exists() else (root / "run", 0)
    data = task["data"]
    roles = {"train": None, "val": args.queries, "eval": args.queries, "learn": None}
    stores, weights = {}, {}
    for method in args.methods:
        stores[method] = {
            role: default_store(root, run_dir, data[role], role, rows, method)
            for role, rows in roles.items()
        }
        weights[method] = root / f"weights-{stores[method]['train'].name}.safetensors"
        if not weights[method].exists():
            run_learn(LearnOptions(train=stores[method]["train"], queries=stores[method]["learn"],
                                   out=weights[method]))  # fmt: skip
    truths = {"val": root / f"same-run-val-{args.subsets}-0.5.npz"}
    truths |= {keep: root / f"same-run-{args.subsets}-{keep:g}.npz" for keep in args.keeps}
    for key, path in truths.items():
        if not path.exists():
            first = stores[args.methods[0]]
            retrain(
                RetrainOptions(train=first["train"], queries=first["val" if key == "val"
                               else "eval"], out=path, subsets=args.subsets,
                               alpha=0.5 if key == "val" else key, same_run=run_dir,
                               device="cpu", progress=False)
            )  # fmt: skip
    rows = {m: {"method": m} for m in args.methods}
    for method, row in rows.items():  # damping chosen on the validation queries
        own = stores[method]
        val = {c: lds(own["train"], own["val"], truths["val"], [method], c)[0]["lds"]
               for c in DAMPINGS}  # fmt: skip
        row["damping"] = max(val, key=val.get)
        row["val"] = {f"{c:g}": 100 * v for c, v in val.items()}
    first = stores[args.methods[0]]
    for keep in args.keeps:
        # Unweighted, every method beside the first in one call on the first's store (the
        # same features): the difference on the same resamples.
        paired = lds(first["train"], first["eval"], truths[keep], args.methods)
        for record, (method, row) in zip(paired, rows.items()):
            row[f"{keep:g} minus first"] = [100 * record.get("vs_first", 0.0),
                                            100 * record.get("vs_first_ci", 0.0)]  # fmt: skip
            for label, weight in (("", "none"), (" weighted", str(weights[method]))):
                own = stores[method]
                cells = [lds(own["train"], own["eval"], truths[keep], [method], damping,
                             weight)[0] for damping in (None, row["damping"])]  # fmt: skip
                row[f"{keep:g}{label}"] = [
                    100 * x for c in cells for x in (c["lds"], c["ci_subsets"])
                ]
    for row in rows.values():
        print(row, flush=True)
    rows = list(rows.values())
    return {"task": args.task, "keeps": [f"{k:g}" for k in args.keeps], "rows": rows}


DAMPING_TEXT = [f"{c:g}" for c in DAMPINGS]


def markdown(result: dict) -> str:
    keeps = result["keeps"]
    cols = [f"{k}{label}" for k in keeps for label in ("", " weighted")]
    lines = [
        f"{result['task']}: featurize's store for each method (its defaults but --method); LDS "
        "% ± 95% CI with the subsets' luck, the method's default damping / the damping chosen "
        "on the validation queries; minus the first method: both at their default damping, "
        "unweighted, paired",
        "",
        "| method | damping chosen on val | val LDS at " + ", ".join(DAMPING_TEXT) + " | "
        + " | ".join(f"keep {c}" for c in cols) + " | "
        + " | ".join(f"keep {k}, minus first" for k in keeps) + " |",
        "|---|---|---|" + "---|" * (len(cols) + len(keeps)),
    ]  # fmt: skip
    for row in result["rows"]:
        val = " / ".join(f"{v:.1f}" for v in row["val"].values())
        cells = " | ".join("{:.1f} ± {:.1f} / {:.1f} ± {:.1f}".format(*row[c]) for c in cols)
        minus = " | ".join("{:+.1f} ± {:.1f}".format(*row[f"{k} minus first"]) for k in keeps)
        lines.append(f"| {row['method']} | {row['damping']:g} | {val} | {cells} | {minus} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pydoc-finetune")
    parser.add_argument("--methods", default="ekfac,shampoo,kfac")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    parser.add_argument("--keeps", default="0.5,0.95")
    args = parser.parse_args()
    args.keeps = [float(k) for k in args.keeps.split(",")]
    args.methods = args.methods.split(",")
    result = run(args)
    text = markdown(result)
    print(text)
    publish(f"default-method-{args.task}", text, [result])


if __name__ == "__main__":
    main()
