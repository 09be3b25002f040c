"""learn-weights' defaults on featurize's default store: --k and --weight-decay, chosen on
the validation queries.

    python benchmarks/weights_defaults.py [--task pydoc-finetune] [--ks 3,10,30,100]
                                          [--decays 1,0.1] [--queries 64] [--subsets 64]

On benchmarks/magic.py's fine-tuning task (the run and its same-run ground truths, under
benchmarks/rescore_default.py's file names): the training, validation, evaluation and
weight-learning rows featurized with featurize's defaults, weights learned on the
weight-learning rows for each (k, weight decay) with learn-weights' other defaults, and
scored by `evaluate lds` with the store's method at its default damping: validation LDS for
every pair, evaluation LDS (keep 0.5, ± 95% CI with the subsets' luck) for the unweighted
store, learn-weights' defaults and the pair the validation queries choose. Every figure
through the options objects the CLI is built from.
Tables: stdout and benchmarks/results/weights-defaults-TASK.md (+ .json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, publish, record_run  # noqa: E402
from rescore_default import default_store, lds  # noqa: E402

from attrib.weights.options import LearnOptions  # noqa: E402
from attrib.weights.run import run_learn  # noqa: E402


def run(args) -> dict:
    root, task = build(args.task)
    run_dir, _ = record_run(root, task) if not (root / "run/model").exists() else (root / "run", 0)
    roles = {"train": None, "val": args.queries, "eval": args.queries, "learn": None}
    stores = {r: default_store(root, run_dir, task["data"][r], r, n, args.method)
              for r, n in roles.items()}  # fmt: skip
    truths = {"val": root / f"same-run-val-{args.subsets}-0.5.npz"}
    truths["eval"] = root / f"same-run-{args.subsets}-0.5.npz"
    missing = [str(p) for p in truths.values() if not p.exists()]
    if missing:
        raise SystemExit(f"run benchmarks/rescore_default.py first: {', '.join(missing)}")
    unused = root / "unused.safetensors"  # only the defaults are read, nothing is written
    defaults = LearnOptions(train=stores["train"], queries=stores["learn"], out=unused)
    pairs = [(k, d) for k in args.ks for d in args.decays]
    paths = {}
    for k, decay in pairs:
        out = root / f"weights-{stores['train'].name}-k{k}-wd{decay:g}.safetensors"
        if not out.exists():
            run_learn(LearnOptions(train=stores["train"], queries=stores["learn"], out=out,
                                   k=k, weight_decay=decay))  # fmt: skip
        paths[(k, decay)] = out
    val = {p: lds(stores["train"], stores["val"], truths["val"], 0, None, (), str(w))["lds"]
           for p, w in paths.items()}  # fmt: skip
    chosen = max(val, key=val.get)
    rows = {"none": lds(stores["train"], stores["eval"], truths["eval"], 0)}
    for label, pair in (("defaults", (defaults.k, defaults.weight_decay)), ("chosen", chosen)):
        if pair in paths:
            rows[label] = lds(
                stores["train"], stores["eval"], truths["eval"], 0, None, (), str(paths[pair])
            )
    return {
        "task": args.task, "store": stores["train"].name,
        "val": [{"k": k, "weight_decay": d, "lds": 100 * val[(k, d)]} for k, d in pairs],
        "chosen": {"k": chosen[0], "weight_decay": chosen[1]},
        "eval": {n: [100 * r["lds"], 100 * r["ci_subsets"]] for n, r in rows.items()},
        "defaults": {"k": defaults.k, "weight_decay": defaults.weight_decay},
    }  # fmt: skip


def markdown(result: dict) -> str:
    decays = sorted({r["weight_decay"] for r in result["val"]}, reverse=True)
    ks = sorted({r["k"] for r in result["val"]})
    cell = {(r["k"], r["weight_decay"]): r["lds"] for r in result["val"]}
    lines = [
        f"{result['task']} ({result['store']}): validation LDS % (keep 0.5) of the weights "
        "learned with each --k (rows) and --weight-decay (columns)",
        "",
        "| k | " + " | ".join(f"weight decay {d:g}" for d in decays) + " |",
        "|---|" + "---|" * len(decays),
    ]
    for k in ks:
        lines.append(f"| {k} | " + " | ".join(f"{cell[(k, d)]:.1f}" for d in decays) + " |")
    c, d = result["chosen"], result["defaults"]
    lines += [
        "",
        f"Evaluation LDS % (keep 0.5, ± 95% CI with the subsets' luck): unweighted "
        f"{result['eval']['none'][0]:.1f} ± {result['eval']['none'][1]:.1f}",
    ]
    for label, pair in (("defaults", d), ("chosen on val", c)):
        key = "defaults" if label == "defaults" else "chosen"
        if key in result["eval"]:
            value, ci = result["eval"][key]
            lines[-1] += f"; {label} (k {pair['k']}, decay {pair['weight_decay']:g}) "
            lines[-1] += f"{value:.1f} ± {ci:.1f}"
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pydoc-finetune")
    parser.add_argument("--ks", default="3,10,30,100")
    parser.add_argument("--decays", default="1,0.1")
    parser.add_argument("--method", default=None, help="featurize --method (default: its own)")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    args = parser.parse_args()
    args.ks = [int(k) for k in args.ks.split(",")]
    args.decays = [float(d) for d in args.decays.split(",")]
    result = run(args)
    text = markdown(result)
    print(text)
    suffix = f"-{args.method}" if args.method else ""
    publish(f"weights-defaults-{args.task}{suffix}", text, [result])


if __name__ == "__main__":
    main()
