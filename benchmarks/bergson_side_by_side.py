"""attrib's preconditioners beside bergson 2.5.1's on one fine-tuning task's same-run ground
truth: EK-FAC, EK-FAC + conjugate gradient, ASTRA, eigenvalue-corrected Shampoo, TrackStar.

    python benchmarks/lm_throughput.py --setup      # once: bergson from PyPI in its own venv
    python benchmarks/bergson_side_by_side.py [--queries 64] [--subsets 64] [--steps 10]

The task is benchmarks/magic.py's pydoc-finetune (a 2-layer GPT-2 fine-tuned by `attrib train`
on 1,000 passages of Python's docs; its run and same-run ground truths are made when
missing). Both tools score the run's final checkpoint, its 1,000 training passages and the
first --queries evaluation passages, each passage's loss the mean over its tokens (bergson:
`--loss_reduction mean`, attrib's only loss), everything else at each tool's defaults:
- bergson (`bergson ekfac` / `bergson trackstar`, its console script in its own environment):
  EK-FAC (`--method kfac --hessian_cfg.ev_correction`), the same refined by `--solver cg` and
  by ASTRA (`--solver sgd`) for --steps steps per query, Shampoo (`--method shampoo` with the
  eigenvalue correction), TrackStar with the run's last AdamW second moments written as an
  optimizer.pt (bergson reads it by `named_parameters` position);
  ASTRA and CG run through benchmarks/bergson_cpu_shim.py, which copies each query's
  starting point before bergson updates it in place (on a CPU it aliases a read-only memory
  map and the process segfaults);
- attrib, through the options objects the CLI is built from: trak-block (the default), ekfac,
  shampoo, trackstar (`featurize --optimizer-state RUN`), and ekfac with `--rescore 100`.
Every score file is evaluated by `evaluate lds` against the same ground truths, with each
one minus attrib's default (trak-block) on the same resamples of queries and subsets. Wall
time per tool and method under /usr/bin/time (bergson's includes its model loading;
attrib's stores are the cached ones). Tables: stdout and benchmarks/results/bergson-side-by-side.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from lm_throughput import VENV, timed  # noqa: E402
from magic import same_run_setup, store  # noqa: E402
from magic_bergson import jsonl  # noqa: E402

from attrib.evaluate.options import LdsOptions  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.score.options import ScoreOptions  # noqa: E402
from attrib.score.run import run_score  # noqa: E402

RESULTS = Path(__file__).parent / "results"
TASK = "pydoc-finetune"
ATTRIB = {  # label -> (method, store's featurize method, extra score options)
    "trak-block (default)": ("trak-block", "trak", {}),
    "ekfac": ("ekfac", "ekfac", {}),
    "shampoo": ("shampoo", "shampoo", {}),
    "trackstar": ("trackstar", "trackstar", {}),
    "ekfac --rescore 100": ("ekfac", "ekfac", {"rescore": 100}),
}


def bergson_runs(steps: int, optimizer: Path) -> dict[str, list]:
    ekfac = ["ekfac", "--method", "kfac", "--hessian_cfg.ev_correction", "true"]
    return {
        "ekfac": [*ekfac, "--num_steps", 0],
        "ekfac + cg": [*ekfac, "--solver", "cg", "--num_steps", steps],
        "astra": [*ekfac, "--solver", "sgd", "--num_steps", steps],
        "shampoo": [
            "ekfac",
            "--method",
            "shampoo",
            "--hessian_cfg.ev_correction",
            "true",
            "--num_steps",
            0,
        ],  # fmt: skip
        "trackstar": ["trackstar", "--optimizer_state", optimizer],
    }


def write_optimizer_pt(run: Path, model: Path, out: Path) -> Path:
    """The run's last AdamW second moments as an optimizer.pt in `named_parameters` order."""
    import torch
    import transformers
    from safetensors.torch import load_file

    snapshot = sorted((run / "snapshots").glob("step-*.safetensors"))[-1]
    moments = {k[2:]: v for k, v in load_file(str(snapshot)).items() if k.startswith("v.")}
    names = [
        n for n, _ in transformers.AutoModelForCausalLM.from_pretrained(model).named_parameters()
    ]
    state = {i: {"exp_avg_sq": moments[n], "step": torch.tensor(32.0)} for i, n in enumerate(names)}
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state": state, "param_groups": [{"params": list(range(len(names)))}]},
               out / "optimizer.pt")  # fmt: skip
    return out


def context(model: Path) -> int:
    """The model's context length: bergson refuses a token batch larger than it."""
    import transformers

    return transformers.AutoConfig.from_pretrained(model).n_positions


def bergson_scores(folder: Path, queries: int) -> np.ndarray:
    """(queries x rows) from bergson's score index; its pipelines score proponents higher,
    attrib's sign."""
    info = json.loads((folder / "info.json").read_text())
    fields = {k: info["dtype"][k] for k in ("names", "formats", "offsets", "itemsize")}
    table = np.fromfile(folder / "scores.bin", dtype=np.dtype(fields))
    return np.stack([table[f"score_{q}"] for q in range(queries)]).astype(np.float32)


def run(args) -> dict:
    root, run_dir, data, truths = same_run_setup(TASK, args.queries, args.subsets)
    work = root / "bergson"
    work.mkdir(exist_ok=True)
    model = run_dir / "model"
    train_jsonl = jsonl(data["train"], work / "train.jsonl")
    eval_jsonl = jsonl(data["eval"], work / "eval.jsonl", args.queries)
    optimizer = write_optimizer_pt(run_dir, model, work / "optimizer")
    common = ["--model", model, "--data.dataset", train_jsonl, "--data.truncation", "true",
              "--query.dataset", eval_jsonl, "--query.truncation", "true",
              "--query.aggregation", "none", "--loss_reduction", "mean",
              "--nproc_per_node", "1", "--token_batch_size", context(model)]  # fmt: skip
    files, seconds = {}, {}
    for label, command in bergson_runs(args.steps, optimizer).items():
        out = work / label.replace(" ", "").replace("+", "-")
        scores = out.with_suffix(".npy")
        if not scores.exists():
            shim = Path(__file__).with_name("bergson_cpu_shim.py")  # ASTRA/CG on a CPU
            full = [args.venv / "bin" / "python", shim, command[0], out, *common]
            seconds[f"bergson {label}"], _ = timed(full + command[1:] + ["--overwrite", "true"])
            np.save(scores, bergson_scores(out / "scores", args.queries))
        files[f"bergson {label}"] = scores
        print(label, "done", flush=True)
    for label, (method, kind, extra) in ATTRIB.items():
        out = work / f"attrib-{label.split()[0]}{'-rescore' if extra else ''}.npy"
        if not out.exists():
            start = time.perf_counter()
            run_score(
                ScoreOptions(train=store(root, run_dir, data["train"], kind, "train"),
                             queries=store(root, run_dir, data["eval"], kind, "eval", args.queries),
                             method=method, out=out, top=1, device="cpu", progress=False, **extra)
            )  # fmt: skip
            seconds[f"attrib {label}"] = time.perf_counter() - start
        files[f"attrib {label}"] = out
    default = store(root, run_dir, data["train"], "trak", "train")
    queries = store(root, run_dir, data["eval"], "trak", "eval", args.queries)
    cells = {}
    for keep, truth in truths.items():
        rows = run_lds(
            LdsOptions(train=default, queries=queries, groundtruth=truth, methods=("trak-block",),
                       weights=("none",), scores=tuple(str(f) for f in files.values()),
                       device="cpu")
        )  # fmt: skip
        for label, row in zip(files, rows[1:]):
            cells.setdefault(label, {})[keep] = (
                100 * row["lds"], 100 * row["ci_subsets"], 100 * row["vs_first"],
                100 * row["vs_first_ci"],
            )  # fmt: skip
    return {"queries": args.queries, "subsets": args.subsets, "steps": args.steps,
            "cells": cells, "seconds": seconds}  # fmt: skip


def markdown(result: dict) -> str:
    lines = [
        f"{TASK}: same-run ground truth, {result['queries']} queries, {result['subsets']} "
        f"subsets; LDS % ± CI with the subsets' luck; bergson's iterative solves "
        f"{result['steps']} steps a query",
        "",
        "| tool | method | keep 0.5 | minus trak-block | keep 0.95 | minus trak-block | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, by_keep in result["cells"].items():
        tool, method = label.split(" ", 1)
        cells = []
        for keep in sorted(by_keep):
            lds, ci, diff, diff_ci = by_keep[keep]
            cells.append(f"{lds:.1f} ± {ci:.1f} | {diff:+.1f} ± {diff_ci:.1f}")
        wall = result["seconds"].get(label)
        lines.append(f"| {tool} | {method} | {' | '.join(cells)} | "
                     f"{'' if wall is None else f'{wall:.0f}'} |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--venv", type=Path, default=VENV, help="bergson's environment")
    args = parser.parse_args()
    result = run(args)
    text = markdown(result)
    print(text)
    (RESULTS / "bergson-side-by-side.md").write_text(text + "\n")
    (RESULTS / "bergson-side-by-side.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
