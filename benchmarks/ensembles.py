"""Ensembles of the checkpoint and its perturbed copies: LDS of ekfac (exact gradients),
tracin, trak and trak-block on ensemble stores against the single checkpoint.

    python benchmarks/ensembles.py [--tasks digits] [--members 2,4,8] [--copies FOLDER-NAME]

Members are the original checkpoint plus M-1 others: `--kind copies`, the first copies of one
`attrib perturb` run of `benchmarks/daunce.py` (default: hessian, lr 3e-3, one epoch, adamw);
`--kind independent`, `attrib perturb --init scratch --black-box --ratio 1` copies trained with
the original's recipe from their own seeds (TRAK's independently trained models). Each
member is
featurized (through `FeaturizeOptions`, the object the CLI is built from, with the quality
benchmark's settings) on the train, val and eval rows; `attrib ensemble`'s merge makes one
store per role; LDS with the retrained ground truth of `quality.py`. Wall time per member's
featurization is reported.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from quality_tasks import TASKS  # noqa: E402

from attrib.evaluate.options import LdsOptions  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.perturb.options import PerturbOptions  # noqa: E402
from attrib.store import Store  # noqa: E402
from attrib.store.ensemble import merge  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SETTINGS = {  # method: (featurize --method, --proj-dim)
    "tracin": ("tracin", 16),
    "trak": ("trak", 16),
    "trak-block": ("trak", 16),
    "ekfac": ("ekfac", "full"),
}


def member_store(task, model: Path, role: str, method: str, out: Path) -> tuple[Store, float]:
    featurize, proj = SETTINGS[method]
    if (out / "manifest.json").exists():
        return Store(out), 0.0
    start = time.perf_counter()
    run_featurize(
        FeaturizeOptions(
            model=str(model),
            data=str(task.data[role]),
            out=out,
            method=featurize,
            proj_dim=proj,
            batch_size=64,
            progress=False,
            device="cpu",
            store_dtype="float32",
        )
    )
    return Store(out), time.perf_counter() - start


def scratch_copies(name: str, task, count: int) -> list[Path]:
    """`count` independently trained copies: `attrib perturb --init scratch --black-box
    --ratio 1` with the example's own training recipe (built once, reused)."""
    from attrib.examples import digits, pydoc_text
    from attrib.perturb.run import copy_dir, run_perturb

    recipe = {"digits": digits, "pydoc": pydoc_text}[name].RECIPE
    out = task.root / "perturb" / "scratch-independent"
    options = PerturbOptions(
        train=task.store("train", "trak").path,
        out=out,
        copies=count,
        ratio=1.0,
        black_box=True,
        init="scratch",
        epochs=recipe.epochs,
        lr=recipe.lr,
        batch_size=recipe.batch_size,
        optimizer=recipe.optimizer,
        weight_decay=recipe.weight_decay,
        schedule=recipe.schedule,
        device="cpu",
        progress=False,
    )
    run_perturb(options)
    return [copy_dir(out, k) / "model" for k in range(count)]


def evaluate_size(task, name, method, members, size, args) -> list[dict]:
    """LDS on val and eval of the first `size` members' ensemble, unweighted and with weights
    learned (learn-weights' defaults) on the ensemble of the weight-learning queries."""
    from attrib.weights.options import LearnOptions
    from attrib.weights.run import run_learn

    root = task.root / "ensembles" / f"{args.kind}-{method}-{size}"
    stores = {}
    for role in ("train", "learn", "val", "eval"):
        if size == 1:
            stores[role] = members[0, role].path
        else:
            stores[role] = root / role
            if not (stores[role] / "manifest.json").exists():
                merge(stores[role], [members[j, role].path for j in range(size)])
    weights = root / "weights.safetensors"
    if not weights.exists():
        root.mkdir(parents=True, exist_ok=True)
        run_learn(
            LearnOptions(train=stores["train"], queries=stores["learn"], out=weights, method=method)
        )
    rows = []
    for role in ("val", "eval"):
        truth = task.root / f"groundtruth-{args.subsets}-{role}.npz"
        options = LdsOptions(
            train=stores["train"],
            queries=stores[role],
            groundtruth=truth,
            methods=(method,),
            weights=("none", str(weights)),
        )
        for result in run_lds(options):
            rows.append(
                {
                    "task": name,
                    "method": method,
                    "members": size,
                    "kind": args.kind,
                    "role": role,
                    "weights": result["weights"] != "none",
                    "lds": 100 * result["lds"],
                    "ci": 100 * result["ci"],
                }
            )
    if size > 1 and not args.keep:  # merged stores copy their members: M times the disk
        for role in ("train", "learn", "val", "eval"):
            shutil.rmtree(stores[role], ignore_errors=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits")
    parser.add_argument("--members", default="2,4,8")
    parser.add_argument("--kind", default="copies", choices=("copies", "independent"))
    parser.add_argument("--copies", default="hessian-lr0.003-e1-adamw")
    parser.add_argument("--methods", default="ekfac,tracin")
    parser.add_argument("--subsets", type=int, default=100)
    parser.add_argument("--keep", action="store_true", help="Keep the merged stores.")
    args = parser.parse_args()
    sizes = [int(m) for m in args.members.split(",")]
    rows = []
    for name in args.tasks.split(","):
        task = TASKS[name]()
        task.groundtruth(args.subsets)
        copies = task.root / "perturb" / args.copies / "copies"
        if args.kind == "copies":
            others = [copies / f"copy-{k:05d}" / "model" for k in range(max(sizes) - 1)]
        else:
            others = scratch_copies(name, task, max(sizes) - 1)
        models = [task.model, *others]
        for method in args.methods.split(","):
            seconds = []
            members = {}
            for j, model in enumerate(models):
                for role in ("train", "learn", "val", "eval"):
                    out = task.root / "members" / f"{args.kind}-{method}-{j}-{role}"
                    members[j, role], spent = member_store(task, model, role, method, out)
                    seconds.append(spent)
            for size in [1, *sizes]:
                for row in evaluate_size(task, name, method, members, size, args):
                    rows.append({**row, "featurize_seconds_per_member": sum(seconds) / len(models)})
                    print(json.dumps(rows[-1]), flush=True)
    lines = [
        "| task | kind | method | members | weights | val LDS % | eval LDS % | featurize s/member |"
    ]
    lines.append("|---|---|---|---|---|---|---|---|")
    keyed = {}
    for row in rows:
        key = (row["task"], row["kind"], row["method"], row["members"], row["weights"])
        keyed.setdefault(key, {})[row["role"]] = row
    for pair in keyed.values():
        val, ev = pair["val"], pair["eval"]
        lines.append(
            f"| {val['task']} | {val['kind']} | {val['method']} | {val['members']} | "
            f"{'learned' if val['weights'] else 'none'} | "
            f"{val['lds']:.2f} ± "
            f"{val['ci']:.2f} | {ev['lds']:.2f} ± {ev['ci']:.2f} | "
            f"{val['featurize_seconds_per_member']:.1f} |"
        )
    text = f"Command: `python {' '.join(sys.argv)}`\n\n" + "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    name = f"ensembles-{args.kind}-{args.tasks}-{args.methods}.md".replace(",", "-")
    (RESULTS / name).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
