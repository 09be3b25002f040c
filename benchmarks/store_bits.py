"""Bits for dimensions: at a fixed store size, a larger projection kept in fewer bits.

    python benchmarks/store_bits.py [--task pydoc-finetune] [--queries 64] [--subsets 64]
                                    [--configs 32:float16,45:int8,64:int4,64:float16]

On benchmarks/magic.py's fine-tuning task (the run and its same-run ground truths, as
benchmarks/rescore_default.py makes them and under the same file names): the training,
validation and evaluation rows featurized with featurize's defaults except `--proj-dim P
--store-dtype D` for each P:D (queries with the same flags, as a user passes them; P:D/Q
featurizes the query stores, validation, evaluation and weight-learning rows, in dtype Q),
scored by `evaluate lds` with the store's method (featurize's default: Shampoo; EK-FAC for
the tables of its earlier default) at its default damping and at the damping chosen on the
validation queries (keep 0.5, never the evaluation queries) from DAMPINGS. Bytes a row: the
training store's shards over its rows. Score seconds: `score` of the evaluation queries
(eigenbases cached). Every figure through the options objects the CLI is built from.
Tables: stdout and benchmarks/results/store-bits-TASK-METHOD.md (+ .json); EK-FAC's tables
keep the bare store-bits-TASK.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, publish, record_run  # noqa: E402
from rescore_default import lds  # noqa: E402

from attrib.evaluate.options import RetrainOptions  # noqa: E402
from attrib.evaluate.retrain import retrain  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.score.options import ScoreOptions  # noqa: E402
from attrib.score.run import run_score  # noqa: E402
from attrib.store import Store  # noqa: E402
from attrib.weights.options import LearnOptions  # noqa: E402
from attrib.weights.run import run_learn  # noqa: E402

DAMPINGS = (1e-3, 1e-2, 1e-1)


def store(root: Path, run: Path, data: Path, name: str, rows, dim: int, dtype: str) -> Path:
    options = FeaturizeOptions(model=str(run / "model"), data=str(data), out=root / "stores",
                               max_examples=rows, proj_dim=dim, store_dtype=dtype, device="cpu",
                               progress=False)  # fmt: skip
    # Named by the method featurize resolved too: a cache made under an earlier default
    # method (ekfac, named without it) is not taken for this one.
    method = "" if options.method == "ekfac" else f"{options.method}-"
    out = root / "stores" / f"{name}-{method}p{dim}-{dtype}"
    if options.proj_allocation != "uniform":  # likewise a store of p x p a module
        out = out.with_name(f"{out.name}-{options.proj_allocation}")
    if not (out / "manifest.json").exists():
        run_featurize(replace(options, out=out))
    return out


def run(args) -> dict:
    root, task = build(args.task)
    run_dir, _ = record_run(root, task) if not (root / "run/model").exists() else (root / "run", 0)
    truths = {"val": root / f"same-run-val-{args.subsets}-0.5.npz"}
    truths |= {keep: root / f"same-run-{args.subsets}-{keep:g}.npz" for keep in args.keeps}
    rows = []
    for dim, dtype, query_dtype in args.configs:
        dtypes = {"train": dtype, "val": query_dtype, "eval": query_dtype}
        sizes = {"train": None, "val": args.queries, "eval": args.queries}
        stores = {
            r: store(root, run_dir, task["data"][r], r, sizes[r], dim, dtypes[r]) for r in sizes
        }
        weights = None
        if args.weights:  # learn-weights with its defaults, on the weight-learning rows
            learn = store(root, run_dir, task["data"]["learn"], "learn", None, dim, query_dtype)
            suffix = "" if query_dtype == dtype else f"-{query_dtype}-queries"
            weights = root / f"weights-{stores['train'].name[len('train-') :]}{suffix}.safetensors"
            if not weights.exists():
                run_learn(LearnOptions(train=stores["train"], queries=learn, out=weights))
        for key, path in truths.items():  # made once (from the rows, not the features)
            if path.exists():
                continue
            queries = stores["val" if key == "val" else "eval"]
            retrain(
                RetrainOptions(train=stores["train"], queries=queries,
                               out=path, subsets=args.subsets, alpha=0.5 if key == "val" else key,
                               same_run=run_dir, device="cpu", progress=False)
            )  # fmt: skip
        val = {c: lds(stores["train"], stores["val"], truths["val"], 0, c)["lds"] for c in DAMPINGS}
        chosen = max(val, key=val.get)
        train = Store(stores["train"])
        method = train.manifest["options"]["method"]
        allocation = train.settings["projection"].get("allocation", "uniform")
        row = {"p": dim, "dtype": dtype, "query_dtype": query_dtype, "damping": chosen,
               "allocation": allocation,
               "bytes_per_row": train.size_bytes() / train.num_examples,
               "val": {f"{c:g}": 100 * v for c, v in val.items()}}  # fmt: skip
        for keep in args.keeps:
            plain = lds(stores["train"], stores["eval"], truths[keep], 0)
            tuned = lds(stores["train"], stores["eval"], truths[keep], 0, chosen)
            row[f"{keep:g}"] = [100 * plain["lds"], 100 * plain["ci_subsets"],
                                100 * tuned["lds"], 100 * tuned["ci_subsets"]]  # fmt: skip
            if weights is not None:
                learned = lds(
                    stores["train"], stores["eval"], truths[keep], 0, weights=str(weights)
                )
                row[f"{keep:g} weighted"] = [100 * learned["lds"], 100 * learned["ci_subsets"]]
        start = time.perf_counter()
        run_score(ScoreOptions(train=stores["train"], queries=stores["eval"], top=10,
                               device="cpu", preview=False))  # fmt: skip
        row["score_s"] = time.perf_counter() - start
        rows.append(row)
        print(row, flush=True)
    return {"task": args.task, "method": method, "keeps": [f"{k:g}" for k in args.keeps],
            "rows": rows}  # fmt: skip


def _config(text: str) -> tuple[int, str, str]:
    """P:D or P:D/Q -> (p, training store dtype, query stores' dtype)."""
    dim, dtypes = text.split(":")
    dtype, _, query_dtype = dtypes.partition("/")
    return int(dim), dtype, query_dtype or dtype


def markdown(result: dict) -> str:
    keeps = result["keeps"]
    lines = [
        f"{result['task']}: stores of one size in other shapes, scored by "
        f"{result.get('method', 'ekfac')}; LDS % ± 95% CI with the subsets' luck, its default "
        "damping / the damping chosen on the validation queries",
        "",
        "| p | store dtype | bytes a row | damping chosen on val | "
        + " | ".join(f"keep {k}" for k in keeps)
        + " | " + " | ".join(f"keep {k}, learned weights" for k in keeps) + " | score s |",
        "|---|---|---|---|" + "---|" * (2 * len(keeps)) + "---|",
    ]  # fmt: skip
    for row in result["rows"]:
        cells = " | ".join(
            f"{row[k][0]:.1f} ± {row[k][1]:.1f} / {row[k][2]:.1f} ± {row[k][3]:.1f}" for k in keeps
        )
        learned = " | ".join(
            "{:.1f} ± {:.1f}".format(*row[f"{k} weighted"]) if f"{k} weighted" in row else "-"
            for k in keeps
        )
        dtypes = (
            row["dtype"]
            if row["query_dtype"] == row["dtype"]
            else (f"{row['dtype']}, queries {row['query_dtype']}")
        )
        head = f"| {row['p']} | {dtypes} | {row['bytes_per_row']:,.0f} | {row['damping']:g}"
        lines.append(f"{head} | {cells} | {learned} | {row['score_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pydoc-finetune")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    parser.add_argument("--keeps", default="0.5,0.95")
    parser.add_argument(
        "--configs", default="32:float16,45:int8,45:int8/float16,64:int4,64:int4/float16,64:float16"
    )
    parser.add_argument("--weights", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    args.keeps = [float(k) for k in args.keeps.split(",")]
    args.configs = [_config(c) for c in args.configs.split(",")]
    result = run(args)
    text = markdown(result)
    print(text)
    # Named by the method scoring the stores (EK-FAC's tables, the first, keep the bare name),
    # so a later default does not overwrite the tables the docs cite for an earlier one.
    method = "" if result["method"] == "ekfac" else f"-{result['method']}"
    allocations = {row["allocation"] for row in result["rows"]}
    method += "".join(sorted(f"-{a}" for a in allocations if a != "uniform"))
    publish(f"store-bits-{args.task}{method}", text, [result])


if __name__ == "__main__":
    main()
