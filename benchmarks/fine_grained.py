"""Fine-grained attribution: recall@10 per attribute with attribute-specific learned weights
(the main paper's Table 6 shape, on `attrib.examples.shapes_sd`).

    python benchmarks/fine_grained.py [--method dtrak] [--groups module]
    python benchmarks/fine_grained.py --sweep-k 1,10,50,100 [--sweep-decay 1.0,0.1,0]
    python benchmarks/fine_grained.py --per-group

Training images each show a coloured shape on a textured background (100 of the 125
combinations, 3 images each); evaluation queries are generated from "{colour} {shape} on
{background}" for every combination, 2 seeds each, and reported apart for the combinations
trained on and the 25 held out. A query's contributors for an attribute are the 60 training
images with its value (chance: 20%). One weights file per attribute is learned (`learn-weights`
defaults) from queries generated with prompts that name that attribute only ("red"). Rows:
unweighted and each attribute's weights; columns: recall@10 (%) of each attribute's
contributors and their sum. `--sweep-k` instead learns each attribute's weights at several
learn-weights --k and --weight-decay and reports recall on validation queries (every
combination once, seeds apart from the evaluation queries'), where such settings are chosen;
`--per-group` reports that recall with one module's query features at a time.
Everything goes through the options objects the CLI is built from. Results:
benchmarks/results/fine-grained-METHOD-GROUPS.md or -METHOD-sweep.md (and .json).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from quality_tasks import CACHE  # noqa: E402

from attrib import log  # noqa: E402
from attrib.evaluate.options import RecallOptions  # noqa: E402
from attrib.evaluate.run import run_recall  # noqa: E402
from attrib.examples import shapes_sd  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.generate.options import GenerateOptions  # noqa: E402
from attrib.generate.run import run_generate  # noqa: E402
from attrib.store import Store  # noqa: E402
from attrib.weights.options import LearnOptions  # noqa: E402
from attrib.weights.run import run_learn  # noqa: E402

RESULTS = Path(__file__).parent / "results"
ATTRIBUTES = tuple(shapes_sd.ATTRIBUTES)
FOCUS_PER_VALUE = 8
EVAL_PER_PROMPT = 2
VALIDATION_SEED = 100  # validation queries: every combination once, seeds apart from eval's
# Captions leave all three attributes out in under 1% of the training images, too few for a
# meaningful unconditional prediction: sample without classifier-free guidance.
GUIDANCE = 1.0
BASELINES = ("repsim",)  # the text-conditioned UNet's mid-block features: nothing to weight


def _generate(model: Path, out: Path, prompt: str, values: list[str], n: int, seed=0) -> Path:
    if not (out / "queries.parquet").exists():
        run_generate(
            GenerateOptions(
                model=str(model), out=out, prompt=(prompt,), values=tuple(values), n=n,
                seed=seed, trajectory=0, guidance=GUIDANCE, device="cpu", overwrite=True,
            )
        )  # fmt: skip
    return out


def _split(folder: Path) -> dict[str, Path]:
    """The generated evaluation queries as two files: trained-on and held-out combinations."""
    import datasets

    table = datasets.load_dataset("parquet", data_files=str(folder / "queries.parquet"))["train"]
    held = [shapes_sd.held_out(*(r[a] for a in ATTRIBUTES)) for r in table]
    out = {}
    for name, wanted in (("seen", False), ("held-out", True)):
        out[name] = folder.parent / f"eval-{name}.parquet"
        if not out[name].exists():
            rows = [i for i, h in enumerate(held) if h == wanted]
            table.select(rows).to_parquet(str(out[name]))
    return out


def _values(*attributes: str) -> list[str]:
    return [f"{a}={','.join(shapes_sd.ATTRIBUTES[a])}" for a in attributes]


def _store(model: Path, data: Path, out: Path, method: str) -> Store:
    if not (out / "manifest.json").exists() or not Store(out).manifest.get("complete"):
        run_featurize(
            FeaturizeOptions(
                model=str(model), data=str(data), out=out, method=method, device="cpu",
                progress=False, overwrite=True,
            )
        )  # fmt: skip
    return Store(out)


class Task:
    """The built task, its training store and recall@k of any weights on any query file."""

    def __init__(self, root: Path, method: str, k: int):
        self.root, self.method, self.k = root, method, k
        self.data, self.model = root / "data" / "train.parquet", root / "model"
        self.stores = root / "stores" / method
        self.train = _store(self.model, self.data, self.stores / "train", method)

    def store(self, data: Path, name: str) -> Store:
        return _store(self.model, data, self.stores / name, self.method)

    def learn(self, attribute: str, out: Path, **settings) -> Path:
        """Weights learned (learn-weights defaults unless `settings`) on the focus queries."""
        if not out.exists():
            focus = _generate(
                self.model, self.root / "queries" / f"focus-{attribute}",
                shapes_sd.FOCUS_PROMPTS[attribute], _values(attribute), FOCUS_PER_VALUE,
            )  # fmt: skip
            queries = self.store(focus, f"focus-{attribute}")
            out.parent.mkdir(parents=True, exist_ok=True)
            run_learn(
                LearnOptions(
                    train=self.train.path, queries=queries.path, out=out, method=self.method,
                    **settings,
                )
            )  # fmt: skip
        return out

    def recall(self, queries: Path, name: str, weights: Path | None) -> dict:
        """{attribute: (recall@k, CI)} of the queries in the parquet file `queries`."""
        store = self.store(queries, name)
        sets = shapes_sd.contributors(queries, self.data)
        out = {}
        for attribute in ATTRIBUTES:
            file = self.root / f"contributors-{name}-{attribute}.json"
            file.write_text(json.dumps(sets[attribute]))
            (record,) = run_recall(
                RecallOptions(
                    train=self.train.path, queries=store.path, contributors=file, k=self.k,
                    methods=(self.method,), weights=(str(weights) if weights else "none",),
                    device="cpu",
                )
            )  # fmt: skip
            out[attribute] = (record["recall"], record["ci"])
        return out


def pixel_distance(task: Task, queries: Path) -> dict:
    """The baseline no attribution method should lose to (the paper's Rep. Dist. row, in
    pixels): each query's k nearest training images by L2 distance."""
    import datasets
    import numpy as np

    from attrib.evaluate.metrics import mean_ci, recall_at_k

    def pixels(path: Path) -> np.ndarray:
        table = datasets.load_dataset("parquet", data_files=str(path))["train"]
        return np.stack([np.asarray(im, dtype=np.float64).ravel() for im in table["image"]])

    train, query = pixels(task.data), pixels(queries)
    distance = (query**2).sum(1)[:, None] - 2 * query @ train.T + (train**2).sum(1)[None]
    ranked = np.argsort(distance, axis=1, kind="stable")
    sets = shapes_sd.contributors(queries, task.data)
    out = {}
    for attribute in ATTRIBUTES:
        relevant = [set(sets[attribute][str(q)]) for q in range(len(query))]
        out[attribute] = mean_ci(recall_at_k(ranked, relevant, task.k))
    return out


def _table(rows: list[dict], splits: list[str], first: str) -> list[str]:
    lines = [
        f"| {first} | "
        + " | ".join(f"{split}: {a}" for split in splits for a in (*ATTRIBUTES, "all"))
        + " |",
        "|---" * (1 + 4 * len(splits)) + "|",
    ]
    for r in rows:
        cells = []
        for split in splits:
            values = r[split]
            cells += [f"{100 * v:.1f} ± {100 * c:.1f}" for v, c in values.values()]
            cells.append(f"{100 * sum(v for v, _ in values.values()):.1f}")
        lines.append(f"| {r['weights']} | " + " | ".join(cells) + " |")
    return lines


def evaluation(task: Task, groups: str) -> tuple[list[str], str, list[dict]]:
    """Unweighted and each attribute's weights (learn-weights defaults) on the evaluation
    queries, trained-on and held-out combinations apart."""
    generated = _generate(
        task.model, task.root / "queries" / "eval", shapes_sd.QUERY_PROMPT,
        _values(*ATTRIBUTES), EVAL_PER_PROMPT,
    )  # fmt: skip
    splits = _split(generated)
    weights = {"none": None}
    for attribute in ATTRIBUTES if task.method not in BASELINES else ():
        out = task.root / "weights" / f"{task.method}-{attribute}-{groups}.safetensors"
        weights[attribute] = task.learn(attribute, out, groups=groups)
    rows = [
        {"weights": name, **{s: task.recall(q, f"eval-{s}", w) for s, q in splits.items()}}
        for name, w in weights.items()
    ]
    rows.append(
        {"weights": "(pixel distance)", **{s: pixel_distance(task, q) for s, q in splits.items()}}
    )
    counts = ", ".join(f"{task.store(q, f'eval-{s}').num_examples} {s}" for s, q in splits.items())
    return _table(rows, list(splits), "weights learned for"), counts, rows


def sweep(task: Task, ks: list[int], decays: list[float]) -> tuple[list[str], list[dict]]:
    """Validation queries (their own seeds): recall with each attribute's weights learned at
    each learn-weights --k and --weight-decay (the paper searches both per weight set)."""
    val = _generate(
        task.model, task.root / "queries" / "val", shapes_sd.QUERY_PROMPT,
        _values(*ATTRIBUTES), 1, seed=VALIDATION_SEED,
    )  # fmt: skip
    queries = val / "queries.parquet"
    rows = [{"weights": "none", "val": task.recall(queries, "val", None)}]
    for k, decay in itertools.product(ks, decays):
        for attribute in ATTRIBUTES:
            out = task.root / "sweep" / f"{task.method}-{attribute}-k{k}-wd{decay:g}.safetensors"
            task.learn(attribute, out, k=k, weight_decay=decay)
            name = f"{attribute} (k {k}, λ' {decay:g})"
            rows.append({"weights": name, "val": task.recall(queries, "val", out)})
    return _table(rows, ["val"], "weights learned for"), rows


def per_group(task: Task) -> tuple[list[str], list[dict]]:
    """Validation recall with the query side restricted to one module (a one-hot weights
    file each): what any module weighting has to work with."""
    import numpy as np

    from attrib.weights.artifact import WeightsArtifact, save_weights

    val = _generate(
        task.model, task.root / "queries" / "val", shapes_sd.QUERY_PROMPT,
        _values(*ATTRIBUTES), 1, seed=VALIDATION_SEED,
    )  # fmt: skip
    queries, modules = val / "queries.parquet", task.train.module_names
    rows = []
    for j, module in enumerate(modules):
        path = task.root / "one-module" / f"{j:03d}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = np.zeros(len(modules))
        weights[j] = 1.0
        save_weights(path, WeightsArtifact(weights, list(modules), {m: m for m in modules}))
        rows.append({"weights": module, "val": task.recall(queries, "val", path)})
    rows.sort(key=lambda r: -max(v for v, _ in r["val"].values()))
    return _table(rows, ["val"], "query side: one module"), rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="dtrak")
    parser.add_argument("--groups", default=LearnOptions.default("groups"))
    parser.add_argument("--k", type=int, default=10, help="recall@k")
    parser.add_argument("--sweep-k", default="", help="learn-weights --k values to sweep (val)")
    parser.add_argument("--sweep-decay", default="1.0,0.1,0", help="--weight-decay values")
    parser.add_argument("--per-group", action="store_true", help="one module at a time (val)")
    args = parser.parse_args()
    log.set_quiet(True)
    start = time.time()
    root = CACHE / "shapes-sd-0"
    if not (root / "model" / "model_index.json").exists():
        shapes_sd.build(root)
    built = time.time() - start
    task = Task(root, args.method, args.k)
    if args.per_group:
        lines, rows = per_group(task)
        about = f"validation queries (seed {VALIDATION_SEED}), one module's query features"
        suffix = f"-{args.method}-per-module"
    elif args.sweep_k:
        ks = [int(x) for x in args.sweep_k.split(",")]
        lines, rows = sweep(task, ks, [float(x) for x in args.sweep_decay.split(",")])
        about = f"validation queries (seed {VALIDATION_SEED}, every combination once)"
        suffix = f"-{args.method}-sweep"
    else:
        lines, counts, rows = evaluation(task, args.groups)
        about = f"evaluation queries: {counts}; --groups {args.groups}"
        suffix = f"-{args.method}-{args.groups}"
    seconds = time.time() - start
    command = "python benchmarks/fine_grained.py " + " ".join(sys.argv[1:])
    header = (
        f"Command: `{command.strip()}` ({seconds / 60:.1f} min, of which {built / 60:.1f} "
        f"building the task; {about}; {FOCUS_PER_VALUE * 5} weight-learning queries per "
        f"attribute; {args.method}; recall@{args.k}, chance 20%)"
    )
    text = "\n".join([header, "", *lines]) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"fine-grained{suffix}.md").write_text(text)
    (RESULTS / f"fine-grained{suffix}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
