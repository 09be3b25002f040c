"""Daunce's LDS against the number of perturbed copies K, next to single-checkpoint EK-FAC.

    python benchmarks/daunce.py [--tasks digits,pydoc] [--copies 4,8,16,32,64]
        [--lrs 1e-3,3e-3,1e-2] [--objectives hessian,fisher] [--subsets 100]

For each task of the quality benchmark (same checkpoint, same retrained ground truth as
`quality.py`) and each objective and learning rate, `attrib perturb` (through the options
object the CLI is built from, with its defaults otherwise) trains the largest K once; smaller
K reuse its first copies. LDS (%) of `daunce` and `daunce-corr` on the validation queries
(which choose the learning rate) and on the evaluation queries (reported only). Wall time
per copy is measured. Results: benchmarks/results/daunce.md (and .json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from quality_tasks import TASKS  # noqa: E402

from attrib import log  # noqa: E402
from attrib.evaluate.options import LdsOptions  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.perturb.options import PerturbOptions  # noqa: E402
from attrib.perturb.run import run_perturb  # noqa: E402

RESULTS = Path(__file__).parent / "results"
METHODS = ("daunce", "daunce-corr")


def copies_for(
    task, objective: str, lr: float, copies: int, epochs: int, optimizer: str
) -> tuple[Path, float]:
    """The copies' folder with stores for K = `copies`, and seconds spent training now."""
    out = task.root / "perturb" / f"{objective}-lr{lr:g}-e{epochs}-{optimizer}"
    stores = {role: task.store(role, "trak").path for role in ("train", "val", "eval")}
    options = PerturbOptions(
        train=stores["train"],
        queries=(str(stores["val"]), str(stores["eval"])),
        out=out,
        copies=copies,
        objective=objective,
        lr=lr,
        epochs=epochs,
        optimizer=optimizer,
        device="cpu",
        progress=False,
    )
    start = time.perf_counter()
    run_perturb(options)
    return out, time.perf_counter() - start


def lds_rows(name, subsets, grid, lrs, objectives, epochs, optimizer):
    task = TASKS[name]()
    truth = task.groundtruth(subsets)
    rows = []
    for objective in objectives:
        for lr in lrs:
            _, seconds = copies_for(task, objective, lr, max(grid), epochs, optimizer)
            per_copy = seconds / max(grid)
            for k in grid:
                out, _ = copies_for(task, objective, lr, k, epochs, optimizer)
                for role in ("val", "eval"):
                    path = task.root / f"groundtruth-{subsets}-{role}.npz"
                    assert path.exists(), truth
                    results = run_lds(
                        LdsOptions(
                            train=out / "train",
                            queries=out / f"{role}-trak-p16",
                            groundtruth=path,
                            methods=METHODS,
                        )
                    )
                    for result in results:
                        rows.append(
                            {
                                "task": name,
                                "objective": objective,
                                "lr": lr,
                                "epochs": epochs,
                                "optimizer": optimizer,
                                "copies": k,
                                "role": role,
                                "method": result["method"],
                                "lds": 100 * result["lds"],
                                "ci": 100 * result["ci"],
                                "seconds_per_copy": per_copy,
                            }
                        )
                        log.info(json.dumps(rows[-1]))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| task | objective | lr | epochs | method | K | val LDS % | eval LDS % | s/copy |"]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    keyed = {}
    for row in rows:
        key = (
            row["task"],
            row["objective"],
            row["lr"],
            row["epochs"],
            row["method"],
            row["copies"],
        )
        keyed.setdefault(key, {})[row["role"]] = row
    for key, pair in keyed.items():
        val, ev = pair["val"], pair["eval"]
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]:g} | {key[3]} | {key[4]} | {key[5]} | "
            f"{val['lds']:.2f} ± {val['ci']:.2f} | {ev['lds']:.2f} ± {ev['ci']:.2f} | "
            f"{val['seconds_per_copy']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,pydoc")
    parser.add_argument("--copies", default="4,8,16,32,64")
    parser.add_argument("--lrs", default="1e-3,3e-3,1e-2")
    parser.add_argument("--objectives", default="hessian,fisher")
    parser.add_argument("--subsets", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=PerturbOptions.default("epochs"))
    parser.add_argument("--optimizer", default=PerturbOptions.default("optimizer"))
    args = parser.parse_args()
    grid = [int(k) for k in args.copies.split(",")]
    lrs = [float(x) for x in args.lrs.split(",")]
    objectives = args.objectives.split(",")
    rows = []
    for name in args.tasks.split(","):
        rows += lds_rows(name, args.subsets, grid, lrs, objectives, args.epochs, args.optimizer)
    RESULTS.mkdir(exist_ok=True)
    tag = "-".join([*args.tasks.split(","), *objectives, f"e{args.epochs}"])
    text = f"Command: `python {' '.join(sys.argv)}`\n\n{table(rows)}\n"
    (RESULTS / f"daunce-{tag}.md").write_text(text)
    (RESULTS / f"daunce-{tag}.json").write_text(json.dumps(rows, indent=1))
    print(text)


if __name__ == "__main__":
    main()
