"""How noisy is a quality task's LDS ground truth? A second seed per subset, and the split-half
reliability it gives (the LDS ceiling of the single-seed ground truth the tables use).

    python benchmarks/reliability.py --task pydoc [--subsets 100] [--shard 0/2]

The task's ground truth (`quality_tasks`, one model per subset) is copied to
`groundtruth-SUBSETSx2.npz.parts` and extended with `evaluate retrain --seeds 2` (through
`RetrainOptions`, the object the CLI is built from; only the second seed's models train);
`--shard i/n` trains the second seed for subsets i, i+n, ... only, so a partial run already
measures. Per query role: the Spearman correlation over subsets between the two seeds'
outputs, averaged over queries (the single-seed ground truth's reliability r), the LDS
ceiling sqrt(r) that noise puts on any method measured against it, and for the two-seed mean
Spearman-Brown 2r/(1+r). With every subset done, each --methods' eval LDS against the
single-seed and the two-seed ground truth: if a method's error were the ground truth's noise
alone, its LDS would rise by sqrt(reliability ratio). Results:
benchmarks/results/reliability-TASK.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from quality_tasks import TASKS  # noqa: E402

from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth  # noqa: E402
from attrib.evaluate.options import LdsOptions, RetrainOptions  # noqa: E402
from attrib.evaluate.reliability import split_half_reliability  # noqa: E402
from attrib.evaluate.retrain import retrain  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.training.parts import part_path as _part  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BOOTSTRAP = 200


def bootstrap_ci(by_seed: np.ndarray) -> tuple[float, float]:
    """95% interval of the seed-to-seed r over subsets resampled with replacement: every
    query shares the same subsets, so their per-query correlations do not average out a
    subset sample's luck (on pydoc, 50 even subsets give 0.25 and 50 odd ones 0.0)."""
    rng = np.random.default_rng(0)
    count = by_seed.shape[1]
    values = [
        split_half_reliability(by_seed[:, rng.integers(0, count, count)]).split_half
        for _ in range(BOOTSTRAP)
    ]
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def role_columns(roles: dict) -> dict:
    """Each query role's columns in the joint ground truth (roles in order, side by side)."""
    out, start = {}, 0
    for role, truth in roles.items():
        out[role] = slice(start, start + truth.outputs.shape[1])
        start = out[role].stop
    return out


def against_both(task, roles, by_seed: np.ndarray, methods: list[str]) -> list[str]:
    """Eval LDS of the quality benchmark's stores (p = 16) against the single-seed ground truth
    and the two-seed mean: how much a less noisy ground truth moves each method."""
    lines = [
        "| method | eval LDS %, one seed | two-seed mean | ratio | sqrt of the reliabilities' "
        "ratio |",
        "|---|---|---|---|---|",
    ]
    for role, cols in role_columns(roles).items():
        if role != "eval":
            continue
        truth = roles[role]
        two = GroundTruth(truth.masks, by_seed[:, :, cols].mean(0), truth.higher_is_better)
        path = task.root / f"groundtruth-{truth.subsets}x2-{role}.npz"
        save_groundtruth(path, two)
        one_r = split_half_reliability(by_seed[:, :, cols])
        expected = np.sqrt(one_r.full / one_r.split_half)
        for method in methods:
            values = []
            for gt in (task.root / f"groundtruth-{truth.subsets}-{role}.npz", path):
                (record,) = run_lds(
                    LdsOptions(
                        train=task.store("train", "trak").path,
                        queries=task.store(role, "trak").path,
                        groundtruth=gt, methods=(method,), weights=("none",),
                    )
                )  # fmt: skip
                values.append(100 * record["lds"])
            lines.append(
                f"| {method} | {values[0]:.2f} | {values[1]:.2f} | "
                f"{values[1] / values[0]:.2f} | {expected:.2f} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pydoc")
    parser.add_argument("--subsets", type=int, default=100)
    parser.add_argument("--shard", default="0/1")
    parser.add_argument("--methods", default="tracin,trak-block", help="LDS against both")
    args = parser.parse_args()
    task = TASKS[args.task]()
    roles = task.groundtruth(args.subsets)  # the single-seed ground truth of the tables
    name = "valeval" if task.query_roles == ("val", "eval") else "groundtruth-queries"
    single = task.root / f"groundtruth-{args.subsets}.npz.parts"
    out = task.root / f"groundtruth-{args.subsets}x2.npz"
    parts = Path(f"{out}.parts")
    if not parts.exists():
        shutil.copytree(single, parts)
    start = time.time()
    recipe = {k: v for k, v in task.recipe.to_dict().items() if k != "momentum"}
    retrain(
        RetrainOptions(
            train=task.store("train", "trak").path, queries=task.store(name, "trak").path,
            out=out, subsets=args.subsets, **recipe, **{**task.retrain, "seeds": 2},
            shard=args.shard, device="cpu", progress=True,
        )
    )  # fmt: skip
    minutes = (time.time() - start) / 60
    done = [m for m in range(args.subsets) if _part(parts, m, 1).exists()]
    by_seed = np.stack([np.stack([np.load(_part(parts, m, r)) for m in done]) for r in (0, 1)])
    lines = [
        f"Command: `python {' '.join(sys.argv)}` ({minutes:.0f} min this run; {len(done)} of "
        f"{args.subsets} subsets have both seeds)",
        "",
        "| queries | seed-to-seed Spearman r (95% bootstrap CI) | LDS ceiling, one seed "
        "(sqrt r) | two-seed mean reliability | its ceiling |",
        "|---|---|---|---|---|",
    ]
    for role, cols in role_columns(roles).items():
        result = split_half_reliability(by_seed[:, :, cols])
        low, high = bootstrap_ci(by_seed[:, :, cols])
        lines.append(
            f"| {args.task} {role} | {result.split_half:.3f} ({low:.3f}-{high:.3f}) | "
            f"{100 * np.sqrt(max(result.split_half, 0)):.1f} | {result.full:.3f} | "
            f"{100 * result.ceiling:.1f} |"
        )
    if len(done) == args.subsets:
        lines += ["", *against_both(task, roles, by_seed, args.methods.split(","))]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"reliability-{args.task}.md").write_text(text)


if __name__ == "__main__":
    main()
