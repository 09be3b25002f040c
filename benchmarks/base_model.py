"""The model a fine-tune started from, featurized instead of the fine-tuned checkpoint.

    python benchmarks/base_model.py [--task digits-finetune] [--queries 64] [--subsets 64]

benchmarks/trajectory.py found EK-FAC at p = 16 ranking better at the base model than at the
final checkpoint of digits-finetune. This asks the same of featurize's and score's defaults
today, on both fine-tuning tasks of benchmarks/magic.py: the recorded run's step-0 snapshot
written as a checkpoint folder (its weights, config and processor or tokenizer files), the
training rows, validation and evaluation queries featurized with featurize's defaults (no
flags) from it and from the final checkpoint, each scored with score's defaults, and the two
compared on the same resamples of queries and subsets (`evaluate lds --scores`, the paired
bootstrap) against the same-run ground truths: validation queries at keep 0.5, evaluation
queries at keep 0.5 and 0.95. Everything through the options objects the CLI is built from.
Tables: stdout and benchmarks/results/base-model-TASK.md (+ .json).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from magic import build, publish  # noqa: E402
from rescore_default import default_store  # noqa: E402

from attrib.evaluate.options import LdsOptions  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.score.options import ScoreOptions  # noqa: E402
from attrib.score.run import run_score  # noqa: E402


def base_checkpoint(run: Path, out: Path) -> Path:
    """The run's step-0 snapshot as a model folder beside `out`/model: what the fine-tune
    started from, as its user would hold it."""
    import transformers
    from safetensors import safe_open

    model_dir = out / "model"
    if (model_dir / "config.json").exists():
        return out
    config = transformers.AutoConfig.from_pretrained(run / "model")
    model = getattr(transformers, config.architectures[0]).from_pretrained(run / "model")
    state = model.state_dict()
    with safe_open(str(run / "snapshots" / "step-00000000.safetensors"), "pt") as snap:
        for key in snap.keys():
            kind, name = key.split(".", 1)
            if kind in ("param", "buffer") and name in state:
                state[name].copy_(snap.get_tensor(key))
    model.load_state_dict(state)
    tmp = out / "model.tmp"
    model.save_pretrained(tmp)
    for extra in (run / "model").glob("*.json"):  # tokenizer or processor files
        if not (tmp / extra.name).exists():
            shutil.copy(extra, tmp / extra.name)
    tmp.rename(model_dir)
    return out


def run(args) -> dict:
    root, task = build(args.task)
    data = task["data"]
    runs = {"final": root / "run", "base": base_checkpoint(root / "run", root / "base-run")}
    roles = {"train": None, "val": args.queries, "eval": args.queries}
    stores = {
        which: {role: default_store(root, model_run, data[role], role if which == "final"
                                    else f"base-{role}", rows)
                for role, rows in roles.items()}
        for which, model_run in runs.items()
    }  # fmt: skip
    truths = {
        "val, keep 0.5": ("val", root / f"same-run-val-{args.subsets}-0.5.npz"),
        "eval, keep 0.5": ("eval", root / f"same-run-{args.subsets}-0.5.npz"),
        "eval, keep 0.95": ("eval", root / f"same-run-{args.subsets}-0.95.npz"),
    }
    files = {}
    for which, at in stores.items():
        for role in ("val", "eval"):
            out = root / f"base-model-scores-{which}-{role}.npy"
            run_score(ScoreOptions(train=at["train"], queries=at[role], out=out, top=1,
                                   device="cpu", preview=False))  # fmt: skip
            files[which, role] = str(out)
    cells = {}
    for name, (role, truth) in truths.items():
        final, base = run_lds(
            LdsOptions(train=stores["final"]["train"], queries=stores["final"][role],
                       groundtruth=truth, only_scores=True, device="cpu",
                       scores=(files["final", role], files["base", role]))
        )  # fmt: skip
        cells[name] = {
            "final": [100 * final["lds"], 100 * final["ci_subsets"]],
            "base": [100 * base["lds"], 100 * base["ci_subsets"]],
            "base_minus_final": [100 * base["vs_first"], 100 * base["vs_first_ci"]],
        }
        print(name, cells[name], flush=True)
    method = stores["final"]["train"].name.removeprefix("train-default-")
    return {"task": args.task, "store": method, "queries": args.queries,
            "subsets": args.subsets, "cells": cells}  # fmt: skip


def markdown(result: dict) -> str:
    lines = [
        f"{result['task']}: featurize's and score's defaults ({result['store']}) at the final "
        "checkpoint and at the model the fine-tune started from; LDS % ± 95% CI with the "
        f"subsets' luck ({result['queries']} queries, {result['subsets']} subsets), and the "
        "base minus the final checkpoint on the same resamples",
        "",
        "| queries, ground truth | final checkpoint | base model | base minus final |",
        "|---|---|---|---|",
    ]
    for name, cell in result["cells"].items():
        both = " | ".join(f"{cell[k][0]:.1f} ± {cell[k][1]:.1f}" for k in ("final", "base"))
        diff, ci = cell["base_minus_final"]
        lines.append(f"| {name} | {both} | {diff:+.1f} ± {ci:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="digits-finetune")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    args = parser.parse_args()
    result = run(args)
    text = markdown(result)
    print(text)
    publish(f"base-model-{args.task}", text, [result])


if __name__ == "__main__":
    main()
