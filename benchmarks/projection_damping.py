"""Can projected rows use the heavy damping that exact gradients prefer? (issue 35)

    python benchmarks/projection_damping.py [--task pydoc-finetune] [--p 45] [--seeds 0,1,2]

A probe on exact gradients, like benchmarks/projection_allocation.py (whose stores, ground
truth and sides it reuses). Exact Shampoo on pydoc-finetune ranks best at a heavy relative
damping (1) that the store's projected rows cannot use (docs/quality.md, "Bits for
dimensions"). Two ways to carry it over, each at the sqrt-size sides of p = 45's total:

- full-space-equivalent damping: Shampoo fitted on the projected rows, each module damped by
  lambda * k / d times its own mean corrected eigenvalue (k its features, d its gradient's
  size). A Gaussian projection multiplies the trace by k, so this adds in each module what
  lambda adds to the full-space eigenvalues; one relative damping for all adds more, in
  full-space terms, to the modules the projection shrinks most.
- whitened, then projected: full-space Shampoo's inverse square root at lambda applied to
  each row and query, then projected, then the plain dot product, a random-projection
  estimate of exact Shampoo's score at lambda. It would need full-space factors before
  featurize projects anything (a second pass over the data).

LDS % on the same-run ground truth of the validation queries (keep 0.5): the probe decides
what to build, so it never reads the evaluation queries. Tables: stdout and
benchmarks/results/projection-damping-TASK.md (+ .json).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from magic import build  # noqa: E402
from projection_allocation import gaussian_sides, probe_main, rules  # noqa: E402
from projection_kinds import Eigen, damped_scores, exact_store, matrices, project  # noqa: E402

from attrib.evaluate.groundtruth import load_groundtruth  # noqa: E402
from attrib.evaluate.lds import lds_of_dense  # noqa: E402

UNIFORM = (1e-3, 1e-2, 1e-1)  # one relative damping for every module (what score does)
EQUIVALENT = (0.1, 0.3, 1.0, 3.0)  # lambda of the full-space-equivalent damping
WHITENING = (0.01, 0.1, 1.0, 3.0)  # full-space damping of the whitening (and exact Shampoo)


def whiten(mats: list, eigens: list, damping: float) -> list:
    """Full-space Shampoo's inverse square root, in its eigenbasis (a random projection of
    the rotated rows is as random as one of the rows themselves)."""
    return [e.rotate(m) * e.scale(damping, 0.5) for m, e in zip(mats, eigens)]


def run(args) -> dict:
    root, task = build(args.task)
    data = task["data"]
    train = matrices(exact_store(root, root / "run", data["train"], "train", None))
    queries = matrices(exact_store(root, root / "run", data["val"], "val", args.queries))
    truth = load_groundtruth(root / f"same-run-val-{args.subsets}-0.5.npz")
    lds = lambda scores: 100 * lds_of_dense("probe", scores.numpy(), truth).lds  # noqa: E731
    shapes = [tuple(m.shape[1:]) for m in train]
    sides = rules(args.p, shapes)["sqrt-size"]
    ratios = [ko * ki / (a * b) for (a, b), (ko, ki) in zip(shapes, sides)]
    full = [Eigen(rows) for rows in train]
    rows = [{"probe": "exact", "damping": c, "seed": None,
             "lds": lds(damped_scores(full, train, queries, [c] * len(full)))}
            for c in WHITENING]  # fmt: skip
    for seed in args.seeds:
        lefts, rights = gaussian_sides(shapes, sides, seed)
        p_train, p_queries = project(train, lefts, rights), project(queries, lefts, rights)
        eigens = [Eigen(m) for m in p_train]
        for c in UNIFORM:
            scores = damped_scores(eigens, p_train, p_queries, [c] * len(eigens))
            rows.append({"probe": "uniform", "damping": c, "seed": seed, "lds": lds(scores)})
        for c in EQUIVALENT:
            scores = damped_scores(eigens, p_train, p_queries, [c * r for r in ratios])
            rows.append({"probe": "equivalent", "damping": c, "seed": seed, "lds": lds(scores)})
        for c in WHITENING:
            w_train = project(whiten(train, full, c), lefts, rights)
            w_queries = project(whiten(queries, full, c), lefts, rights)
            scores = sum(torch.einsum("qab,nab->qn", q, m) for q, m in zip(w_queries, w_train))
            rows.append({"probe": "whitened", "damping": c, "seed": seed, "lds": lds(scores)})
        print(rows[-1], flush=True)
    return {"task": args.task, "p": args.p, "queries": args.queries, "subsets": args.subsets,
            "sides": sides, "ratios": ratios, "rows": rows}  # fmt: skip


def markdown(result: dict) -> str:
    seeds = sorted({r["seed"] for r in result["rows"] if r["seed"] is not None})
    lines = [
        f"### {result['task']}: Shampoo's damping on projected rows (sqrt-size sides of p = "
        f"{result['p']}'s total); validation queries ({result['queries']}), same-run ground "
        f"truth ({result['subsets']} subsets, keep 0.5); LDS % at projection seeds "
        + ", ".join(map(str, seeds)),
        "",
        "| probe | damping | LDS |",
        "|---|---|---|",
    ]
    names = {
        "exact": "exact gradients, Shampoo (no projection)",
        "uniform": "projected, one relative damping (what score does)",
        "equivalent": "projected, lambda * k / d a module (full-space equivalent)",
        "whitened": "whitened in full space, projected, dot product",
    }
    for probe, name in names.items():
        for c in sorted({r["damping"] for r in result["rows"] if r["probe"] == probe}):
            values = [r["lds"] for r in result["rows"] if r["probe"] == probe and r["damping"] == c]
            lines.append(f"| {name} | {c:g} | " + " / ".join(f"{v:.1f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    probe_main(__doc__.splitlines()[0], "projection-damping", run, markdown)


if __name__ == "__main__":
    main()
