"""How to share a store's features among modules (issue 35): p x p each, or by size.

    python benchmarks/projection_allocation.py [--task pydoc-finetune] [--p 45] [--seeds 0,1,2]

A probe on exact gradients, like benchmarks/projection_kinds.py (whose stores, ground truth
and Shampoo it reuses): the training rows and the validation queries of benchmarks/magic.py's
fine-tuning task featurized with `--method shampoo --proj-dim full`, each module's gradient
matrices then projected by Gaussian matrices of each rule's sides, and scored by
eigenvalue-corrected Shampoo fitted on the projected rows (float64, no quantization), at
relative dampings 1e-3 and 1e-2. Every rule holds about the same total number of features,
the uniform one's sum over modules of min(p, d_out) * min(p, d_in):

- uniform: p x p a module (what featurize stored until this benchmark);
- sqrt-size: the total shared by the square root of each module's size, each module's sides
  in its own aspect (featurize/allocation.py, the functions featurize uses);
- size: shared in proportion to each module's size, in its own aspect;
- uniform-aspect: p x p features a module, in its own aspect;
- sqrt-size-square: sqrt-size's counts, each module's sides as square as its matrix allows.

LDS % on the same-run ground truth of the validation queries (keep 0.5): the probe decides a
default, so it never reads the evaluation queries. Each rule minus uniform, paired on the
same resamples of queries and subsets, per projection seed (the projection's own luck, which
the CI does not hold). Tables: stdout and benchmarks/results/projection-allocation-TASK.md
(+ .json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, publish  # noqa: E402
from projection_kinds import exact_store, matrices, project, shampoo_scores  # noqa: E402

from attrib.evaluate.groundtruth import load_groundtruth  # noqa: E402
from attrib.evaluate.lds import lds_of_dense, paired_to_first  # noqa: E402
from attrib.featurize.allocation import aspect_sides, feature_counts  # noqa: E402

DAMPINGS = (1e-3, 1e-2)


def by_share(p: int, shapes: list, shares: list) -> list:
    """Counts for the uniform total split by `shares` (no module over its gradient)."""
    total = sum(min(p, a) * min(p, b) for a, b in shapes)
    counts = [total * s / sum(shares) for s in shares]
    return [aspect_sides(c, a, b) for c, (a, b) in zip(counts, shapes)]


def rules(p: int, shapes: list) -> dict[str, list[tuple[int, int]]]:
    sqrt_counts = feature_counts(p, shapes)
    squares = []
    for count, (a, b) in zip(sqrt_counts, shapes):
        side = max(1, round(count**0.5))
        k_out = min(a, side)
        squares.append((k_out, min(b, max(1, round(count / k_out)))))
    return {
        "uniform": [(min(p, a), min(p, b)) for a, b in shapes],
        "sqrt-size": [aspect_sides(c, a, b) for c, (a, b) in zip(sqrt_counts, shapes)],
        "size": by_share(p, shapes, [a * b for a, b in shapes]),
        "uniform-aspect": [aspect_sides(min(p, a) * min(p, b), a, b) for a, b in shapes],
        "sqrt-size-square": squares,
    }


def gaussian_sides(shapes: list, sides: list, seed: int) -> tuple[list, list]:
    """Each module's left (d_out x k_out) and right (d_in x k_in) Gaussian matrices, drawn
    module by module."""
    generator = torch.Generator().manual_seed(seed)
    lefts, rights = [], []
    for (d_out, d_in), (k_out, k_in) in zip(shapes, sides):
        lefts.append(torch.randn(d_out, k_out, generator=generator, dtype=torch.float64))
        rights.append(torch.randn(d_in, k_in, generator=generator, dtype=torch.float64))
    return lefts, rights


def scores(train: list, queries: list, sides: list, seed: int, damping: float) -> torch.Tensor:
    lefts, rights = gaussian_sides([tuple(m.shape[1:]) for m in train], sides, seed)
    return shampoo_scores(project(train, lefts, rights), project(queries, lefts, rights), damping)


def run(args) -> dict:
    root, task = build(args.task)
    data = task["data"]
    train_store = exact_store(root, root / "run", data["train"], "train", None)
    val_store = exact_store(root, root / "run", data["val"], "val", args.queries)
    truth = load_groundtruth(root / f"same-run-val-{args.subsets}-0.5.npz")
    train, queries = matrices(train_store), matrices(val_store)
    shapes = [tuple(m.shape[1:]) for m in train]
    table = rules(args.p, shapes)
    rows = []
    for seed in args.seeds:
        results = {(name, c): lds_of_dense(name, scores(train, queries, sides, seed, c).numpy(),
                                           truth)
                   for name, sides in table.items() for c in DAMPINGS}  # fmt: skip
        keys = list(results)
        paired = paired_to_first([results[k] for k in keys], truth)
        for (name, c), record in zip(keys, paired):
            rows.append({"rule": name, "seed": seed, "damping": c, "lds": 100 * record["lds"],
                         "vs_uniform": 100 * record.get("vs_first", 0.0),
                         "vs_uniform_ci": 100 * record.get("vs_first_ci", 0.0),
                         "features": sum(a * b for a, b in table[name])})  # fmt: skip
            print(rows[-1], flush=True)
    return {"task": args.task, "p": args.p, "shapes": shapes, "subsets": args.subsets,
            "queries": args.queries, "sides": table, "rows": rows}  # fmt: skip


def markdown(result: dict) -> str:
    seeds = sorted({r["seed"] for r in result["rows"]})
    lines = [
        f"### {result['task']}: features shared among modules at p = {result['p']}'s total; "
        f"validation queries ({result['queries']}), same-run ground truth ({result['subsets']} "
        "subsets, keep 0.5); Shampoo on the projected rows, damping 1e-3 / 1e-2",
        "",
        "| rule | features | "
        + " | ".join(f"seed {s}: LDS, minus uniform at 1e-3" for s in seeds)
        + " | mean minus uniform at 1e-3 |",
        "|---|---|" + "---|" * len(seeds) + "---|",
    ]
    for name in result["sides"]:
        cells, diffs = [], []
        for seed in seeds:
            by = {
                r["damping"]: r for r in result["rows"] if r["rule"] == name and r["seed"] == seed
            }
            cells.append(
                " / ".join(f"{by[c]['lds']:.1f}" for c in DAMPINGS)
                + ", "
                + " / ".join(
                    f"{by[c]['vs_uniform']:+.1f} ± {by[c]['vs_uniform_ci']:.1f}" for c in DAMPINGS
                )
            )
            diffs.append(by[DAMPINGS[0]]["vs_uniform"])
        features = next(r["features"] for r in result["rows"] if r["rule"] == name)
        lines.append(f"| {name} | {features} | " + " | ".join(cells)
                     + f" | {sum(diffs) / len(diffs):+.1f} |")  # fmt: skip
    lines += ["", "Sides (k_out x k_in) a module, in the store's module order:", ""]
    for name, sides in result["sides"].items():
        lines.append(f"- {name}: " + ", ".join(f"{a}x{b}" for a, b in sides))
    return "\n".join(lines) + "\n"


def probe_main(description: str, name: str, run, markdown) -> None:
    """A projection probe's command (this one's and projection_damping.py's): its flags, its
    run, its table printed and published as `name-TASK`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--task", default="pydoc-finetune")
    parser.add_argument("--p", type=int, default=45)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    result = run(args)
    text = markdown(result)
    print(text)
    publish(f"{name}-{args.task}", text, [result])


def main() -> None:
    probe_main(__doc__.splitlines()[0], "projection-allocation", run, markdown)


if __name__ == "__main__":
    main()
