"""A fine-tuning run's checkpoints instead of its final one: EK-FAC at each, and ensembles.

    python benchmarks/trajectory.py [--task digits-finetune] [--dims 16,full] [--queries 64]
                                    [--subsets 64]

Issue 35's error split left 26-30 LDS points between the best static answer at the final
checkpoint and magic, in the run's dynamics. A Trainer user holds more than the final
checkpoint: the model the fine-tune started from and the checkpoints it saved. This measures
what they are worth, on benchmarks/magic.py's fine-tuning task and same-run ground truths:
each snapshot the recorded run kept is written as a checkpoint folder (weights, config,
processor: what a Trainer's checkpoint-N holds), featurized for EK-FAC (the training rows and
the evaluation queries, at each --dims projection), scored alone, and combined with
`attrib ensemble` (members' EK-FAC scores summed, each with its own factors): the base model
with the final checkpoint, the saved checkpoints, and all of them. LDS % (95% CI with the
subsets' luck) at keep 0.5 and 0.95, through the options objects the CLI is built from, with
their defaults. Tables: stdout and benchmarks/results/trajectory-TASK.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, publish, record_run  # noqa: E402

from attrib.evaluate.options import LdsOptions, RetrainOptions  # noqa: E402
from attrib.evaluate.retrain import retrain  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.score.options import ScoreOptions  # noqa: E402
from attrib.score.run import run_score  # noqa: E402
from attrib.store.ensemble_options import EnsembleOptions, run_ensemble  # noqa: E402

METHOD = "ekfac"


def checkpoint(run: Path, step: int, out: Path) -> Path:
    """The run's snapshot at `step` as a model folder (the run's model with the snapshot's
    parameters and buffers), as a Trainer's checkpoint-N would hold it."""
    from safetensors import safe_open
    from transformers import AutoModelForImageClassification

    if (out / "config.json").exists():
        return out
    model = AutoModelForImageClassification.from_pretrained(run / "model")
    state = model.state_dict()
    with safe_open(str(run / "snapshots" / f"step-{step:08d}.safetensors"), "pt") as snap:
        for key in snap.keys():
            kind, name = key.split(".", 1)
            if kind in ("param", "buffer"):
                state[name].copy_(snap.get_tensor(key))
    model.load_state_dict(state)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    shutil.copy(run / "model" / "preprocessor_config.json", tmp)
    tmp.rename(out)
    return out


def featurized(model: Path, data: Path, out: Path, dim, rows: int | None) -> Path:
    if not (out / "manifest.json").exists():
        run_featurize(
            FeaturizeOptions(
                model=str(model), data=str(data), out=out, method=METHOD, proj_dim=dim,
                max_examples=rows, device="cpu", progress=False, store_dtype="float32",
            )
        )  # fmt: skip
    return out


def ensemble(members: list[Path], out: Path) -> Path:
    if not (out / "manifest.json").exists():
        run_ensemble(EnsembleOptions(members=tuple(str(m) for m in members), out=out))
    return out


def measured(train: Path, queries: Path, truths: dict) -> dict:
    cells = {}
    for keep, truth in truths.items():
        (row,) = run_lds(
            LdsOptions(train=train, queries=queries, groundtruth=truth, methods=(METHOD,),
                       device="cpu")
        )  # fmt: skip
        cells[keep] = {"lds": 100 * row["lds"], "ci": 100 * row["ci_subsets"]}
    return cells


def paired(stores: dict, steps: list, truths: dict, base: Path, dim) -> dict:
    """The base model's EK-FAC minus the final checkpoint's, over the same queries and
    subsets (`evaluate lds --scores` on both dense score files: the paired bootstrap)."""
    files = []
    for step in (steps[0], steps[-1]):
        out = base / f"scores-{step}-{dim}.npy"
        at = stores[step]
        run_score(ScoreOptions(train=at["train"], queries=at["eval"], method=METHOD, out=out,
                               top=1, device="cpu", preview=False))  # fmt: skip
        files.append(str(out))
    cells = {}
    for keep, truth in truths.items():
        first, second = run_lds(
            LdsOptions(train=stores[steps[-1]]["train"], queries=stores[steps[-1]]["eval"],
                       groundtruth=truth, scores=tuple(files), only_scores=True, device="cpu")
        )  # fmt: skip
        cells[keep] = {"lds": -100 * second["vs_first"], "ci": 100 * second["vs_first_ci"]}
    return cells


def run(args) -> dict:
    root, task = build(args.task)
    run_dir, _ = record_run(root, task)
    steps = json.loads((run_dir / "run.json").read_text())["snapshots"]
    data = task["data"]
    base = root / "trajectory"
    models = {s: checkpoint(run_dir, s, base / f"checkpoint-{s}") for s in steps}
    rows = []
    for dim in args.dims:
        stores = {
            s: {role: featurized(m, data[role], base / f"{role}-{s}-{dim}", dim, n)
                for role, n in (("train", None), ("eval", args.queries))}
            for s, m in models.items()
        }  # fmt: skip
        truths = {keep: root / f"same-run-{args.subsets}-{keep:g}.npz" for keep in (0.5, 0.95)}
        for keep, truth in truths.items():
            # Made once (its parts remember the stores they were made with; the file
            # is read against any store of the same rows).
            if not truth.exists():
                final = stores[steps[-1]]
                retrain(
                    RetrainOptions(train=final["train"], queries=final["eval"], out=truth,
                                   subsets=args.subsets, alpha=keep, same_run=run_dir,
                                   device="cpu", progress=False)
                )  # fmt: skip
        groups = {f"checkpoint at step {s}" + (" (the base model)" if s == 0 else "")
                  + (" (final)" if s == steps[-1] else ""): [s] for s in steps}  # fmt: skip
        groups["base + final"] = [steps[0], steps[-1]]
        groups["saved checkpoints (steps > 0)"] = steps[1:]
        groups["all, base included"] = steps
        for name, members in groups.items():
            if len(members) == 1:
                at = stores[members[0]]
            else:
                tag = "-".join(str(s) for s in members)
                at = {role: ensemble([stores[s][role] for s in members],
                                     base / f"ensemble-{role}-{tag}-{dim}")
                      for role in ("train", "eval")}  # fmt: skip
            cells = measured(at["train"], at["eval"], truths)
            rows.append({"p": dim, "members": name, **{str(k): v for k, v in cells.items()}})
            print(f"p={dim} {name}: {cells}", flush=True)
        cells = paired(stores, steps, truths, base, dim)
        paired_row = {str(k): v for k, v in cells.items()}
        rows.append({"p": dim, "members": "base model - final, paired", **paired_row})
        print(f"p={dim} base - final: {cells}", flush=True)
    return {"task": args.task, "rows": rows}


def markdown(result: dict) -> str:
    lines = [
        f"EK-FAC at a fine-tuning run's checkpoints ({result['task']}, same-run ground truth; "
        "LDS % ± CI with the subsets' luck)",
        "",
        "| p | checkpoints | keep 0.5 | keep 0.95 |",
        "|---|---|---|---|",
    ]
    for row in result["rows"]:
        cells = [f"{row[k]['lds']:.1f} ± {row[k]['ci']:.1f}" for k in ("0.5", "0.95")]
        lines.append(f"| {row['p']} | {row['members']} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits-finetune")
    parser.add_argument("--dims", default="16,full")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    args = parser.parse_args()
    args.dims = [d if d == "full" else int(d) for d in args.dims.split(",")]
    result = run(args)
    text = markdown(result)
    print(text)
    publish(f"trajectory-{args.task}", text, [result])


if __name__ == "__main__":
    main()
