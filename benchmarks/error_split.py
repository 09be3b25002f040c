"""Where the store's answer loses to magic, split in three: projection, the inverse-Hessian
approximation and linearization, against the same-run ground truth (issue 35's first table).

    python benchmarks/error_split.py [--tasks digits-finetune,pydoc-finetune]
                                     [--dims 16,32,64,full] [--queries 64] [--subsets 64]

Per task (benchmarks/magic.py's: the example's run, fine-tuned by `attrib train`): stores of
the training and evaluation rows at each projection size (`--proj-dim`, `full`: the exact
per-example gradients), for trak-block (the CLI's default method) and EK-FAC; TRAK's global
kernel on the exact gradients, which is the exact damped Gauss-Newton solve
(Phi^T Phi + lambda I)^-1 on them (from the N x N dual); and magic. Then:
- projection: trak-block (and EK-FAC) at `full` minus at p = 16;
- inverse-Hessian approximation: the exact solve minus the best structured kernel at `full`;
- linearization: magic minus the exact solve.
Every method with its default damping, no learned weights, through the options objects the
CLI is built from. Tables: stdout and benchmarks/results/error-split-TASKS.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import RESULTS, build, record_run  # noqa: E402

from attrib.evaluate.options import LdsOptions, RetrainOptions  # noqa: E402
from attrib.evaluate.retrain import retrain  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.training.magic_options import MagicOptions  # noqa: E402
from attrib.training.magic_run import run_magic  # noqa: E402

KINDS = {"trak-block": "trak", "ekfac": "ekfac", "trak": "trak"}  # method -> store's method


def store(root: Path, run: Path, data: Path, kind: str, dim, name: str, rows=None) -> Path:
    out = root / "split-stores" / f"{name}-{kind}-{dim}"
    if not (out / "manifest.json").exists():
        run_featurize(
            FeaturizeOptions(
                model=str(run / "model"), data=str(data), out=out, method=kind, proj_dim=dim,
                max_examples=rows, device="cpu", progress=False, store_dtype="float32",
            )
        )  # fmt: skip
    return out


def lds(train: Path, queries: Path, truth: Path, method: str, scores=()) -> dict:
    rows = run_lds(
        LdsOptions(
            train=train, queries=queries, groundtruth=truth, methods=(method,),
            weights=("none",), scores=tuple(str(s) for s in scores), device="cpu",
        )
    )  # fmt: skip
    return {row["method"]: row for row in rows}


def run_task(name: str, args) -> dict:
    root, task = build(name)
    run, _ = record_run(root, task)
    data = task["data"]
    stores = {
        (kind, dim): (
            store(root, run, data["train"], kind, dim, "train"),
            store(root, run, data["eval"], kind, dim, "eval", args.queries),
        )
        for kind in ("trak", "ekfac")
        for dim in args.dims
    }
    magic = root / f"magic-{args.queries}.npy"
    if not magic.exists():
        run_magic(
            MagicOptions(run=run, queries=stores[("trak", args.dims[0])][1], out=magic,
                         device="cpu", progress=False)
        )  # fmt: skip
    table = {}
    for keep in args.keeps:
        truth = root / f"same-run-{args.subsets}-{keep:g}.npz"
        train16, eval16 = stores[("trak", args.dims[0])]
        retrain(
            RetrainOptions(train=train16, queries=eval16, out=truth, subsets=args.subsets,
                           alpha=keep, same_run=run, device="cpu", progress=False)
        )  # fmt: skip
        rows = []
        for method in ("trak-block", "ekfac"):
            for dim in args.dims:
                train, queries = stores[(KINDS[method], dim)]
                row = lds(train, queries, truth, method)[method]
                rows.append({"method": method, "dim": dim, **_numbers(row)})
        train, queries = stores[("trak", "full")]
        both = lds(train, queries, truth, "trak", scores=(magic,))
        rows.append({"method": "trak (exact damped GN solve)", "dim": "full",
                     **_numbers(both["trak"])})  # fmt: skip
        rows.append({"method": "magic", "dim": "-", **_numbers(both[magic.name])})
        table[f"keep {keep:g}"] = rows
    return {"task": name, "lds": table}


def _numbers(row: dict) -> dict:
    return {"lds": 100 * row["lds"], "ci": 100 * row["ci_subsets"]}


def split(rows: list[dict], dims: list) -> dict:
    by = {(r["method"], r["dim"]): r["lds"] for r in rows}
    default, full = by[("trak-block", dims[0])], by[("trak-block", "full")]
    exact = by[("trak (exact damped GN solve)", "full")]
    best_full = max(full, by[("ekfac", "full")])
    return {
        "default -> magic": by[("magic", "-")] - default,
        "projection (trak-block full - p)": full - default,
        "projection (ekfac full - p)": by[("ekfac", "full")] - by[("ekfac", dims[0])],
        "inverse Hessian (exact solve - best structured, full)": exact - best_full,
        "linearization (magic - exact solve)": by[("magic", "-")] - exact,
    }


def markdown(results: list[dict], dims: list) -> str:
    lines = []
    for result in results:
        lines += [f"### {result['task']}", "", "| method | p | " + " | ".join(
            f"LDS % {k} (± CI+subsets)" for k in result["lds"]) + " |",
            "|---|---|" + "---|" * len(result["lds"])]  # fmt: skip
        first = next(iter(result["lds"].values()))
        for i, row in enumerate(first):
            cells = [f"{t[i]['lds']:.1f} ± {t[i]['ci']:.1f}" for t in result["lds"].values()]
            lines.append(f"| {row['method']} | {row['dim']} | " + " | ".join(cells) + " |")
        lines += ["", "| split (LDS points) | " + " | ".join(result["lds"]) + " |",
                  "|---|" + "---|" * len(result["lds"])]  # fmt: skip
        parts = {k: split(rows, dims) for k, rows in result["lds"].items()}
        for name in next(iter(parts.values())):
            lines.append(f"| {name} | " + " | ".join(f"{p[name]:+.1f}" for p in parts.values()))
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits-finetune,pydoc-finetune")
    parser.add_argument("--dims", default="16,32,64,full")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    parser.add_argument("--keeps", default="0.5,0.95")
    args = parser.parse_args()
    args.dims = [d if d == "full" else int(d) for d in args.dims.split(",")]
    args.keeps = [float(k) for k in args.keeps.split(",")]
    results = [run_task(name, args) for name in args.tasks.split(",")]
    text = markdown(results, args.dims)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stem = "error-split-" + args.tasks.replace(",", "-")
    (RESULTS / f"{stem}.md").write_text(text + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
