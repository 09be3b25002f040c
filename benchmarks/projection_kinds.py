"""Which projection to store (issue 35): random, the gradients' principal directions, or
whitened first. A probe of stores featurize does not write, on exact gradients.

    python benchmarks/projection_kinds.py [--task pydoc-finetune] [--dims 32,45,64]

On benchmarks/magic.py's fine-tuning task, the training rows and the validation queries are
featurized through the CLI's options with `--method shampoo --proj-dim full` (exact
per-example gradients, each module's a d_out x d_in matrix). Each module's matrices are then
projected to p x p on both sides, four ways, and scored with eigenvalue-corrected Shampoo
fitted on the projected training rows (the default method's algebra, in float64, so no
quantization enters), at relative dampings 1e-3 / 1e-2 / 0.1 / 1:

- random: Gaussian matrices on both sides (what featurize stores);
- principal: each side's top-p eigenvectors of the gradients' own second moments
  (L = E[G G^T], R = E[G^T G]: Shampoo's factors in full space; LoGra's PCA start);
- whitened: full-space Shampoo's inverse square root applied first (each module's rows
  divided by sqrt(corrected eigenvalue + damping) in its eigenbasis), then random;
- query preconditioned: the query preconditioned by full-space Shampoo, then projected, and
  dotted with the randomly projected rows (the asymmetric store).

Beside them, exact: Shampoo on the exact gradients. LDS % on the same-run ground truth of the
validation queries (keep 0.5): the probe decides what to build, so it never reads the
evaluation queries. Each kind's best damping is compared with random's best, paired on the
same resamples of queries and subsets. Tables: stdout and
benchmarks/results/projection-kinds-TASK.md (+ .json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, publish, record_run  # noqa: E402

from attrib.evaluate.groundtruth import load_groundtruth  # noqa: E402
from attrib.evaluate.lds import lds_of_dense, paired_to_first  # noqa: E402
from attrib.evaluate.options import RetrainOptions  # noqa: E402
from attrib.evaluate.retrain import retrain  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.methods.kronecker import matrix_shapes  # noqa: E402
from attrib.store import Store  # noqa: E402

DAMPINGS = (1e-3, 1e-2, 1e-1, 1.0)
KINDS = ("random", "principal", "whitened", "query preconditioned")


def exact_store(root: Path, run: Path, data: Path, role: str, rows: int | None) -> Store:
    out = root / "stores" / f"{role}-shampoo-full-float32"
    if not (out / "manifest.json").exists():
        run_featurize(
            FeaturizeOptions(model=str(run / "model"), data=str(data), out=out, max_examples=rows,
                             method="shampoo", proj_dim="full", store_dtype="float32",
                             device="cpu", progress=False)
        )  # fmt: skip
    return Store(out)


def matrices(store: Store) -> list[torch.Tensor]:
    """Each module's per-example gradients as (rows x d_out x d_in), float64."""
    shapes = matrix_shapes(store)
    return [
        torch.from_numpy(store.matrix(name)).double().reshape(-1, *shape)
        for name, shape in zip(store.module_names, shapes)
    ]


class Eigen:
    """Eigenvalue-corrected Shampoo of one module's rows: eigenbases of L and R, and the
    rows' mean squares in them."""

    def __init__(self, rows: torch.Tensor):
        n = rows.shape[0]
        self.values_l, self.q_out = torch.linalg.eigh(torch.einsum("nab,ncb->ac", rows, rows) / n)
        self.values_r, self.q_in = torch.linalg.eigh(torch.einsum("nab,nac->bc", rows, rows) / n)
        self.corrected = self.rotate(rows).pow(2).mean(0)

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        return self.q_out.T @ x @ self.q_in

    def scale(self, damping: float, power: float) -> torch.Tensor:
        return (self.corrected + damping * self.corrected.mean()).pow(-power)


def shampoo_scores(train: list, queries: list, damping: float) -> torch.Tensor:
    """(queries x rows) Shampoo scores, fitted on `train`, summed over modules."""
    return damped_scores([Eigen(rows) for rows in train], train, queries, [damping] * len(train))


def damped_scores(eigens: list, train: list, queries: list, dampings: list) -> torch.Tensor:
    """Shampoo's scores from each module's fitted `eigens`, with one relative damping a
    module (fitted once, scored at many dampings)."""
    total = 0
    for eigen, rows, q, damping in zip(eigens, train, queries, dampings):
        inverse = eigen.scale(damping, 1.0)
        total = total + torch.einsum("qab,nab->qn", eigen.rotate(q) * inverse, eigen.rotate(rows))
    return total


def gaussian(shapes, p: int, seed: int) -> tuple[list, list]:
    generator = torch.Generator().manual_seed(seed)
    draw = lambda d: torch.randn(d, min(p, d), generator=generator, dtype=torch.float64)  # noqa: E731
    return [draw(a) for a, _ in shapes], [draw(b) for _, b in shapes]


def project(mats: list, lefts: list, rights: list) -> list:
    return [left.T @ m @ right for m, left, right in zip(mats, lefts, rights)]


def kind_scores(kind: str, train: list, queries: list, p: int, damping: float) -> torch.Tensor:
    shapes = [tuple(m.shape[1:]) for m in train]
    lefts, rights = gaussian(shapes, p, seed=0)

    def projected(train, queries, damping):  # with lefts and rights as they are then
        return shampoo_scores(*(project(m, lefts, rights) for m in (train, queries)), damping)

    if kind == "random":
        return projected(train, queries, damping)
    eigens = [Eigen(rows) for rows in train]
    if kind == "principal":
        lefts = [e.q_out[:, -min(p, e.q_out.shape[0]) :] for e in eigens]
        rights = [e.q_in[:, -min(p, e.q_in.shape[0]) :] for e in eigens]
        return projected(train, queries, damping)
    if kind == "whitened":
        # Rotated into the eigenbasis and scaled there: a random projection of the rotated
        # rows is as random as one of the rows rotated back.
        white = lambda m, e: e.rotate(m) * e.scale(damping, 0.5)  # noqa: E731
        train = [white(m, e) for m, e in zip(train, eigens)]
        queries = [white(m, e) for m, e in zip(queries, eigens)]
        return projected(train, queries, 1e-3)
    # query preconditioned: full-space Shampoo on the query side only, then projected.
    conditioned = [
        e.q_out @ (e.rotate(q) * e.scale(damping, 1.0)) @ e.q_in.T for q, e in zip(queries, eigens)
    ]
    rows, qs = project(train, lefts, rights), project(conditioned, lefts, rights)
    return sum(torch.einsum("qab,nab->qn", q, r) for q, r in zip(qs, rows))


def run(args) -> dict:
    root, task = build(args.task)
    run_dir, _ = record_run(root, task) if not (root / "run/model").exists() else (root / "run", 0)
    data = task["data"]
    truth_path = root / f"same-run-val-{args.subsets}-0.5.npz"
    train_store = exact_store(root, run_dir, data["train"], "train", None)
    val_store = exact_store(root, run_dir, data["val"], "val", args.queries)
    if not truth_path.exists():
        retrain(RetrainOptions(train=train_store.path, queries=val_store.path, out=truth_path,
                               subsets=args.subsets, alpha=0.5, same_run=run_dir, device="cpu",
                               progress=False))  # fmt: skip
    truth = load_groundtruth(truth_path)
    train, queries = matrices(train_store), matrices(val_store)
    grid = {}  # (kind, p) -> {damping: LdsResult}
    exact = {c: lds_of_dense("exact", shampoo_scores(train, queries, c).numpy(), truth)
             for c in DAMPINGS}  # fmt: skip
    grid[("exact", "full")] = exact
    for p in args.dims:
        for kind in KINDS:
            grid[(kind, p)] = {
                c: lds_of_dense(kind, kind_scores(kind, train, queries, p, c).numpy(), truth)
                for c in DAMPINGS
            }
            print(kind, p, {c: round(100 * r.lds, 1) for c, r in grid[(kind, p)].items()},
                  flush=True)  # fmt: skip
    rows = []
    for (kind, p), by_damping in grid.items():
        best = max(by_damping, key=lambda c: by_damping[c].lds)
        baseline = grid[("random", p)] if p != "full" else by_damping
        reference = baseline[max(baseline, key=lambda c: baseline[c].lds)]
        paired = paired_to_first([reference, by_damping[best]], truth)[1]
        lds = {f"{c:g}": 100 * r.lds for c, r in by_damping.items()}
        rows.append({"kind": kind, "p": p, "best_damping": best, **paired, "by_damping": lds})
    return {"task": args.task, "queries": args.queries, "subsets": args.subsets, "rows": rows}


def markdown(result: dict) -> str:
    heads = " | ".join(f"damping {c:g}" for c in DAMPINGS)
    lines = [
        f"### {result['task']}: validation queries ({result['queries']}), same-run ground "
        f"truth ({result['subsets']} subsets, keep 0.5); LDS %, Shampoo on the projected rows",
        "",
        f"| projection | p | {heads} | best ± CI+subsets | minus random's best ± paired |",
        "|---|---|" + "---|" * len(DAMPINGS) + "---|---|",
    ]
    for row in result["rows"]:
        cells = " | ".join(f"{row['by_damping'][f'{c:g}']:.1f}" for c in DAMPINGS)
        diff = "" if row["kind"] in ("random", "exact") else (
            f"{100 * row['vs_first']:+.1f} ± {100 * row['vs_first_ci']:.1f}")  # fmt: skip
        lines.append(
            f"| {row['kind']} | {row['p']} | {cells} | {100 * row['lds']:.1f} ± "
            f"{100 * row['ci_subsets']:.1f} | {diff} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pydoc-finetune")
    parser.add_argument("--dims", default="32,45,64")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    args = parser.parse_args()
    args.dims = [int(d) for d in args.dims.split(",")]
    result = run(args)
    text = markdown(result)
    print(text)
    publish(f"projection-kinds-{args.task}", text, [result])


if __name__ == "__main__":
    main()
