"""Exact attribution for the run you trained: same-run LDS of magic against tracin, trak-block
and ekfac (each with and without learned weights), the smoothness check, and the cost.

    python benchmarks/magic.py [--tasks digits,pydoc,ddpm,digits-finetune,pydoc-finetune,...]
                               [--queries 64] [--subsets 64] [--keeps 0.5,0.95] [--seed-random]

Per task: `attrib train` records the run (the bundled example's data, init and recipe, from
scratch; a `-finetune` task instead fine-tunes that run's model on the same training rows
with FINETUNE: the run a fine-tuning user attributes); the training, weight-learning and
evaluation stores are featurized from RUN/model; weights are learned on the weight-learning
queries with the defaults; the same-run ground
truth replays the run without each subset's removed rows (`evaluate retrain --same-run`);
magic scores the evaluation queries (`attrib magic`). With --seed-random, also against the
ground truth of models retrained from other seeds with the same recipe (how much of magic's
lead survives across seeds). Every figure goes through the options objects the CLI is built
from, with their defaults. Tables: stdout and benchmarks/results/magic-TASKS.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from quality_tasks import CACHE  # noqa: E402

from attrib.evaluate.options import LdsOptions, RetrainOptions  # noqa: E402
from attrib.evaluate.retrain import retrain  # noqa: E402
from attrib.evaluate.run import run_lds  # noqa: E402
from attrib.featurize.options import DEFAULT_PROJ_DIM, FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.methods import method_class  # noqa: E402
from attrib.training.magic_options import MagicOptions  # noqa: E402
from attrib.training.magic_run import run_magic  # noqa: E402
from attrib.training.options import TrainOptions  # noqa: E402
from attrib.training.train import run_train  # noqa: E402
from attrib.weights.options import LearnOptions  # noqa: E402
from attrib.weights.run import run_learn  # noqa: E402

METHODS = {"tracin": "ekfac", "ekfac": "ekfac", "trak-block": "trak"}  # method -> its store
# The fine-tuning phase: AdamW at a common fine-tuning rate, constant, 2 epochs. Training from
# scratch is chaotic (docs/magic.md); a fine-tuning phase of a trained model is smooth: the
# smoothness check's correlation on validation queries is in benchmarks/results/magic-*.md.
FINETUNE = {"init": "finetune", "epochs": 2, "lr": 1e-4, "schedule": "constant"}
RESULTS = Path(__file__).parent / "results"


def build(name: str) -> tuple[Path, dict]:
    """The example's data and untrained init under the cache (no checkpoint: the run is it);
    for a `-finetune` task, the base task's trained model as the init, its data, FINETUNE."""
    import datasets

    if name.endswith("-finetune"):
        base_root, base = build(name.removesuffix("-finetune"))
        if not _is_model(base_root / "run" / "model"):
            record_run(base_root, base)
        recipe = replace(base["recipe"], **FINETUNE)
        return CACHE / f"magic-{name}", {**base, "recipe": recipe, "init": base_root / "run/model"}

    from attrib.examples import digits, digits_ddpm, pydoc_text

    root = CACHE / f"magic-{name}"
    data = {r: root / "data" / f"{r}.parquet" for r in ("train", "learn", "val", "eval")}
    example = {"digits": digits, "pydoc": pydoc_text, "ddpm": digits_ddpm}[name]
    if not _is_model(root / "init"):
        (pydoc_text if name == "pydoc" else digits).write_data(root / "data", 0)
        if name in ("digits", "ddpm"):
            example.init_model(root / "init", 0)
        else:
            texts = datasets.load_dataset("parquet", data_files=str(data["train"]), split="train")
            pydoc_text.init_model(root / "init", list(texts["text"]), 0)
    return root, {"data": data, "recipe": example.RECIPE, "init": root / "init"}


def _is_model(folder: Path) -> bool:
    return (folder / "config.json").exists() or (folder / "model_index.json").exists()


def methods(name: str) -> dict[str, str]:
    """Method -> the kind of store it reads; diffusion adds DAS (its best method)."""
    return {**METHODS, "das": "das"} if name.startswith("ddpm") else METHODS


def record_run(root: Path, task: dict) -> tuple[Path, float]:
    recipe = task["recipe"]
    out = root / "run"
    start = time.perf_counter()
    run_train(
        TrainOptions(
            model=str(task["init"]),
            data=str(task["data"]["train"]),
            out=out,
            init=recipe.init,
            epochs=recipe.epochs,
            lr=recipe.lr,
            batch_size=recipe.batch_size,
            weight_decay=recipe.weight_decay,
            schedule=recipe.schedule,
            seed=recipe.seed,
            device="cpu",
            progress=False,
        )
    )
    return out, time.perf_counter() - start


def store(root: Path, run: Path, data: Path, method: str, name: str, rows: int | None = None,
          proj_dim=None):  # fmt: skip
    """The run's store of `data` for `method` (featurize's default projection unless
    `proj_dim`), made once under root/stores."""
    extra = {} if proj_dim is None else {"proj_dim": proj_dim}
    if method_class(method).requires.optimizer_state:  # TrackStar: the run's last state
        extra["optimizer_state"] = str(run)
    options = FeaturizeOptions(
        model=str(run / "model"), data=str(data), out=root / "stores", method=method,
        max_examples=rows, device="cpu", progress=False, store_dtype="float32", **extra,
    )  # fmt: skip
    # Named by the projection featurize resolved (TRAK's unchanged default keeps the bare
    # name other benchmarks read), so a cache made under K-FAC's earlier default (p = 32)
    # is never taken for this one.
    bare = proj_dim is None and options.proj_dim == DEFAULT_PROJ_DIM
    suffix = "" if bare else f"-{options.proj_dim}"
    out = root / "stores" / f"{name}-{method}{suffix}"
    if not (out / "manifest.json").exists():
        run_featurize(replace(options, out=out))
    return out


def lds_rows(train, queries, truth, method, weights, scores=()) -> list[dict]:
    return run_lds(
        LdsOptions(
            train=train, queries=queries, groundtruth=truth, methods=(method,),
            weights=("none", str(weights)), scores=tuple(str(s) for s in scores), device="cpu",
        )
    )  # fmt: skip


def run_task(name: str, args) -> dict:
    root, task = build(name)
    run, train_seconds = record_run(root, task)
    stores = {}
    for kind in set(methods(name).values()):
        stores[kind] = {
            "train": store(root, run, task["data"]["train"], kind, "train"),
            "learn": store(root, run, task["data"]["learn"], kind, "learn"),
            "eval": store(root, run, task["data"]["eval"], kind, "eval", args.queries),
        }
    weights = {}
    for method, kind in methods(name).items():
        weights[method] = root / f"weights-{method}.safetensors"
        if not weights[method].exists():
            run_learn(
                LearnOptions(train=stores[kind]["train"], queries=stores[kind]["learn"],
                             out=weights[method], method=method)
            )  # fmt: skip
    scores = root / "magic.npy"
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _, smooth = run_magic(
        MagicOptions(run=run, queries=stores["trak"]["eval"], out=scores, device="cpu",
                     smoothness=args.smoothness, progress=False)
    )  # fmt: skip
    magic_seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    truths = {}
    for keep in args.keeps:
        truths[f"same-run keep {keep:g}"] = same_run_truth(
            root, run, stores["trak"]["train"], stores["trak"]["eval"], args.subsets, keep
        )
    if args.seed_random:
        # Other seeds: the recipe again from the same start (a fine-tuning task's start is
        # the base model, not the store's fine-tuned one: --start-from).
        recipe = {k: v for k, v in task["recipe"].to_dict().items() if k != "momentum"}
        start = {"start_from": str(task["init"])} if recipe["init"] == "finetune" else {}
        truths["other seeds keep 0.5"] = root / f"seed-random-{args.subsets}.npz"
        retrain(
            RetrainOptions(train=stores["trak"]["train"], queries=stores["trak"]["eval"],
                           out=truths["other seeds keep 0.5"], subsets=args.subsets,
                           device="cpu", progress=False, **recipe, **start)
        )  # fmt: skip
    table = {}
    for truth_name, truth in truths.items():
        rows = []
        for method, kind in methods(name).items():
            extra = [scores] if method == "ekfac" else []  # magic beside EK-FAC: paired CI
            rows += lds_rows(stores[kind]["train"], stores[kind]["eval"], truth, method,
                             weights[method], extra)  # fmt: skip
        table[truth_name] = rows
    return {
        "task": name,
        "steps": json.loads((run / "run.json").read_text())["steps"],
        "train_seconds": train_seconds,
        "magic_seconds": magic_seconds,
        "magic_seconds_per_query": magic_seconds / args.queries,
        "peak_rss_mib": max(before, peak) / 1024,
        "smoothness": {k: v for k, v in (smooth or {}).items() if k not in ("predicted", "actual")},
        "lds": table,
    }


def same_run_truth(root: Path, run: Path, train: Path, queries: Path, subsets: int, keep: float):
    """The run replayed without each subset's removed rows (made once, then read)."""
    out = root / f"same-run-{subsets}-{keep:g}.npz"
    retrain(
        RetrainOptions(train=train, queries=queries, out=out, subsets=subsets, alpha=keep,
                       same_run=run, device="cpu", progress=False)
    )  # fmt: skip
    return out


def same_run_setup(name: str, queries: int, subsets: int, keeps=(0.5, 0.95)):
    """(root, run, data, {keep: same-run ground truth}) of a fine-tuning task, its ground
    truths on the default store's evaluation rows (the files run_task makes), made once."""
    root, task = build(name)
    run, _ = record_run(root, task)
    data = task["data"]
    train = store(root, run, data["train"], "trak", "train")
    evaluation = store(root, run, data["eval"], "trak", "eval", queries)
    truths = {k: same_run_truth(root, run, train, evaluation, subsets, k) for k in keeps}
    return root, run, data, truths


def task_main(stem: str, default_task: str, run, markdown) -> None:
    """The command line of a benchmark over one fine-tuning task: `--task`, `--queries`,
    `--subsets`; its table printed and published as STEM-TASK."""
    parser = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__.splitlines()[0])
    parser.add_argument("--task", default=default_task)
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    parser.add_argument("--methods", default=None, help="comma-separated (default: all)")
    args = parser.parse_args()
    result = run(args)
    text = markdown(result)
    print(text)
    only = f"-{args.methods.replace(',', '-')}" if args.methods else ""
    publish(f"{stem}-{args.task}{only}", text, [result])


def markdown(results: list[dict]) -> str:
    lines = []
    for result in results:
        lines.append(
            f"### {result['task']}: {result['steps']} steps; "
            f"training {result['train_seconds']:.1f} s; "
            f"magic {result['magic_seconds_per_query']:.1f} s per query; peak RSS "
            f"{result['peak_rss_mib']:.0f} MiB"
        )
        smooth = result["smoothness"]
        if smooth:
            lines.append(
                f"smoothness: correlation {smooth['correlation']:.3f}, slope {smooth['slope']:.2f} "
                f"({smooth['checks']} replays without {smooth['drop']:.0%} of the rows)"
            )
        lines += [
            "",
            "| ground truth | method | weights | LDS % | ± CI+subsets | minus row 1 ± paired |",
            "|---|---|---|---|---|---|",
        ]
        for truth, rows in result["lds"].items():
            for row in rows:
                diff = row.get("vs_first")
                paired = f"{100 * diff:+.2f} ± {100 * row['vs_first_ci']:.2f}" if diff else ""
                lines.append(
                    f"| {truth} | {row['method']} | {row['weights']} | {100 * row['lds']:.2f} | "
                    f"{100 * row['ci_subsets']:.2f} | {paired} |"
                )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,pydoc")
    parser.add_argument("--queries", type=int, default=64)
    parser.add_argument("--subsets", type=int, default=64)
    parser.add_argument("--keeps", default="0.5,0.95")
    parser.add_argument("--smoothness", type=int, default=8)
    parser.add_argument("--seed-random", action="store_true")
    args = parser.parse_args()
    args.keeps = [float(k) for k in args.keeps.split(",")]
    results = [run_task(name, args) for name in args.tasks.split(",")]
    text = markdown(results)
    print(text)
    publish("magic-" + args.tasks.replace(",", "-"), text, results)


def publish(stem: str, text: str, results: list[dict]) -> None:
    """A benchmark's tables as benchmarks/results/STEM.md, its numbers as STEM.json."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{stem}.md").write_text(text + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
