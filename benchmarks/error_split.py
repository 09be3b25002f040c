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
Every method with its default damping, and with the damping chosen on validation queries
(the example's val rows, their own same-run ground truth at keep 0.5; never the evaluation
queries) from DAMPINGS; no learned weights; through the options objects the CLI is built
from. Tables: stdout and benchmarks/results/error-split-TASKS.md (+ .json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, publish, record_run, store  # noqa: E402

from attrib.evaluate.options import LdsOptions, RetrainOptions  # noqa: E402
from attrib.evaluate.retrain import retrain  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.training.magic_options import MagicOptions  # noqa: E402
from attrib.training.magic_run import run_magic  # noqa: E402

KINDS = {"trak-block": "trak", "ekfac": "ekfac", "trak": "trak"}  # method -> store's method
DAMPINGS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
EXACT = "trak (exact damped GN solve)"


def _name(role: str, rows: int | None) -> str:
    """A store's name; query stores of other sizes than the first runs' 64 are named apart."""
    return role if rows in (None, 64) else f"{role}{rows}"


def lds(train, queries, truth, method: str, scores=(), damping=None, rif=False) -> dict:
    rows = run_lds(
        LdsOptions(
            train=train, queries=queries, groundtruth=truth, methods=(method,),
            weights=("none",), scores=tuple(str(s) for s in scores), device="cpu",
            damping=damping, rif=rif,
        )
    )  # fmt: skip
    return {row["method"].removesuffix("+rif"): row for row in rows}


def chosen_damping(train: Path, val: Path, truth: Path, method: str, rif: bool) -> float:
    """The damping of DAMPINGS with the best LDS on the validation queries."""

    def score(c):
        return lds(train, val, truth, method, damping=c, rif=rif)[method]["lds"]

    return max(DAMPINGS, key=score)


def run_task(name: str, args) -> dict:
    root, task = build(name)
    run, _ = record_run(root, task)
    data = task["data"]
    queries = {"train": None, "val": args.queries, "eval": args.queries}
    stores = {
        (kind, dim): {
            role: store(root, run, data[role], kind, _name(role, rows), rows, proj_dim=dim)
            for role, rows in queries.items()
        }
        for kind in ("trak", "ekfac")
        for dim in args.dims
    }
    first = stores[("trak", args.dims[0])]
    magic = root / f"magic-{args.queries}.npy"
    tag = "" if args.queries == 64 else f"-q{args.queries}"  # (64: the first runs' names)
    if not magic.exists():
        run_magic(
            MagicOptions(run=run, queries=first["eval"], out=magic, device="cpu", progress=False)
        )  # fmt: skip
    truths = {"val": root / f"same-run-val-{args.subsets}-0.5{tag}.npz"}
    for keep in args.keeps:
        truths[keep] = root / f"same-run-{args.subsets}-{keep:g}{tag}.npz"
    for key, path in truths.items():
        retrain(
            RetrainOptions(train=first["train"], queries=first["val" if key == "val" else "eval"],
                           out=path, subsets=args.subsets, alpha=0.5 if key == "val" else key,
                           same_run=run, device="cpu", progress=False)
        )  # fmt: skip
    configs = [(m, d) for m in ("trak-block", "ekfac") for d in args.dims]
    configs += [(EXACT, "full")] if "full" in args.dims else []
    configs = [(m, d, rif) for m, d in configs for rif in (False, True)]
    damping = {}
    for method, dim, rif in configs:
        kind = "trak" if method == EXACT else method
        at = stores[(KINDS[kind], dim)]
        damping[(method, dim, rif)] = chosen_damping(
            at["train"], at["val"], truths["val"], kind, rif
        )
    table = {}
    for keep in args.keeps:
        rows = []
        for method, dim, rif in configs:
            kind = "trak" if method == EXACT else method
            at = stores[(KINDS[kind], dim)]
            default = lds(at["train"], at["eval"], truths[keep], kind, rif=rif)[kind]
            chosen = damping[(method, dim, rif)]
            tuned = lds(at["train"], at["eval"], truths[keep], kind, damping=chosen, rif=rif)[kind]
            label = f"{method} + RIF" if rif else method
            rows.append({"method": label, "dim": dim, "damping": chosen,
                         **_numbers(default), **_numbers(tuned, "tuned_")})  # fmt: skip
        at = stores[("trak", args.dims[-1])]
        row = lds(at["train"], at["eval"], truths[keep], "trak", scores=(magic,))[magic.name]
        rows.append({"method": "magic", "dim": "-", "damping": None, **_numbers(row),
                     **_numbers(row, "tuned_")})  # fmt: skip
        table[f"keep {keep:g}"] = rows
    return {"task": name, "lds": table}


def _numbers(row: dict, prefix: str = "") -> dict:
    return {f"{prefix}lds": 100 * row["lds"], f"{prefix}ci": 100 * row["ci_subsets"]}


def split(rows: list[dict], dims: list, key: str = "tuned_lds") -> dict:
    """The distance from the default (trak-block at the first size) to magic, in parts;
    without exact gradients (`full`), the largest size stands in for them."""
    by = {(r["method"], r["dim"]): r[key] for r in rows}
    top = dims[-1]
    default = by[("trak-block", dims[0])]
    out = {
        "default -> magic": by[("magic", "-")] - default,
        f"projection (trak-block {top} - {dims[0]})": by[("trak-block", top)] - default,
        f"projection (ekfac {top} - {dims[0]})": by[("ekfac", top)] - by[("ekfac", dims[0])],
    }
    best = max(by[("trak-block", top)], by[("ekfac", top)])
    if (EXACT, "full") in by:
        exact = by[(EXACT, "full")]
        out["inverse Hessian (exact solve - best structured, full)"] = exact - best
        out["linearization (magic - exact solve)"] = by[("magic", "-")] - exact
    out[f"magic - best structured at {top}"] = by[("magic", "-")] - best
    return out


def _cell(row: dict) -> str:
    return f"{row['lds']:.1f} ± {row['ci']:.1f} / {row['tuned_lds']:.1f} ± {row['tuned_ci']:.1f}"


def markdown(results: list[dict], dims: list) -> str:
    lines = []
    for result in results:
        keeps = list(result["lds"])
        head = " | ".join(f"{k}: default / val-chosen damping" for k in keeps)
        lines += [f"### {result['task']}", "", f"| method | p | damping chosen on val | {head} |",
                  "|---|---|---|" + "---|" * len(keeps)]  # fmt: skip
        for i, row in enumerate(result["lds"][keeps[0]]):
            cells = " | ".join(_cell(t[i]) for t in result["lds"].values())
            chosen = "-" if row["damping"] is None else f"{row['damping']:g}"
            lines.append(f"| {row['method']} | {row['dim']} | {chosen} | {cells} |")
        lines += ["", "| split (LDS points, val-chosen damping) | " + " | ".join(keeps) + " |",
                  "|---|" + "---|" * len(keeps)]  # fmt: skip
        parts = {k: split(rows, dims) for k, rows in result["lds"].items()}
        for name in next(iter(parts.values())):
            cells = " | ".join(f"{p[name]:+.1f}" for p in parts.values())
            lines.append(f"| {name} | {cells} |")
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
    publish("error-split-" + args.tasks.replace(",", "-"), text, results)


if __name__ == "__main__":
    main()
