"""`attrib demo`: the whole job offline, in minutes, on data that ships with installed packages.

Builds a small task (digits + ResNet, Python's docs + GPT-2, or digits as a tiny DDPM),
featurizes the training set, a weight-learning query set and an evaluation query set, learns
group weights, explains one evaluation query (its top proponents, and for images a PNG
grid), and measures LDS with and without the weights against a retraining ground truth.
Everything it builds is cached under the user's cache directory, so a second run only
re-reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from attrib import log
from attrib.atomic import atomic_path
from attrib.demo import explain, quality
from attrib.demo.options import DEFAULT_SUBSETS, DemoOptions
from attrib.featurize.options import FeaturizeOptions
from attrib.featurize.run import run_featurize
from attrib.store import Store
from attrib.weights.options import LearnOptions
from attrib.weights.run import run_learn

# The candidates the demo chooses from on its validation queries. Image and text: EK-FAC on
# exact gradients (cheap on the demo's models) against what `attrib featurize` writes given
# no flags (Shampoo's store, p = 45 in int8): the demo shows how far the default store is from
# exact gradients.
# Diffusion: DAS, chosen on the same task's validation queries by
# benchmarks/quality_diffusion.py (val LDS: das 53.6, trak-block 50.3, ekfac 49.3): its
# shipped ground truth covers the evaluation queries only, and retraining one for validation
# takes longer than a demo may.
CANDIDATES = {
    "image": ("ekfac", "shampoo"),
    "text": ("ekfac", "shampoo"),
    "diffusion": ("das",),
}
# EK-FAC is much better on exact gradients (docs/quality.md: digits 24.9 against 17.9 at
# p = 16), and the demo's models are small enough for them; DAS projects to 16 (as measured
# by the diffusion benchmark); the others take featurize's defaults.
PROJECTION = {"ekfac": "full", "das": 16}


def store_words(method: str) -> str:
    """What a candidate's store is, for the line that reports the choice."""
    projection = PROJECTION.get(method)
    if projection is None:
        return "featurize's default store"
    return "exact gradients" if projection == "full" else f"a p = {projection} store"


# Ground truths shipped with attrib (models retrained from scratch: they depend on the data,
# the recipe and the seeds, not on the checkpoint the demo trains). Diffusion: its evaluation
# queries, built once by benchmarks/quality_diffusion.py. Text: its validation and evaluation
# queries (val+eval), built by benchmarks/demo_groundtruth.py for the pydoc topics of the
# Python it records: with another Python's topics the demo retrains its own.
SHIPPED_GROUNDTRUTH = {
    "diffusion": "digits-ddpm-eval-64x2.npz",
    "text": "pydoc-text-val+eval-20.npz",
}


@dataclass
class DemoResult:
    query: dict  # the explained evaluation query: `index` (its row) and its text or label
    records: list[dict]  # its top proponents (score, preview)
    lds: dict[str, tuple[float, float]]  # "unweighted" / "weighted" -> (LDS, CI with subsets)
    grid: Path | None
    weights: Path
    stores: dict[str, Path]
    method: str = ""
    groundtruth: str = ""  # what the LDS is measured against, in words
    retraining: bool = False  # the ground truth is built in this run (not cached or shipped)
    model: Path | None = None  # the task's checkpoint and data, for `attrib featurize`
    data: dict[str, Path] | None = None
    validation: dict[str, float] = field(default_factory=dict)  # candidate -> LDS on val
    change: tuple[float, float] | None = None  # weighted minus unweighted LDS, paired CI
    report: Path | None = None  # the HTML report of the explained query
    opponents: list[dict] = field(default_factory=list)  # its most harmful training rows


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "attrib" / "demo"


def _build(task: str, root: Path):
    from attrib.examples import digits, digits_ddpm, pydoc_text

    example = {"image": digits, "text": pydoc_text, "diffusion": digits_ddpm}[task]
    data = {r: root / "data" / f"{r}.parquet" for r in ("train", "learn", "val", "eval")}
    model = root / "model"
    config = "model_index.json" if task == "diffusion" else "config.json"
    if not (model / config).exists() or not all(p.exists() for p in data.values()):
        log.info(f"building the {task} task in {root} (once; later runs reuse it)")
        example.build(root)
    return data, model, example.RECIPE


def _store(model: Path, data: Path, stores: Path, method: str, role: str) -> Store:
    projection = PROJECTION.get(method)  # None: featurize's default for the method
    options = FeaturizeOptions(
        model=str(model),
        data=str(data),
        out=stores,
        method=method,
        proj_dim=projection,
        batch_size=64,
        progress=not log.is_quiet(),
        # Exact gradients in float16 (featurize's default): half the cache, the same
        # rankings; DAS's p = 16 rows are small enough to keep in float32.
        store_dtype={"full": "float16", 16: "float32"}.get(projection),
        overwrite=True,
    )
    # Named by what featurize resolved: a cache made under other defaults is not reused.
    out = stores / f"{method}-p{options.proj_dim}-{options.store_dtype}" / role
    if not (out / "manifest.json").exists() or not Store(out).manifest.get("complete"):
        run_featurize(replace(options, out=out))
    return Store(out)


def run_demo(options: DemoOptions, on_answer=None) -> DemoResult:
    """The demo; `on_answer(result)` is called as soon as the query is explained, with `lds`
    still empty (its paired comparison follows)."""
    log.quiet_libraries()  # attrib reports progress; the libraries' own bars are noise here
    task, out, subsets = options.task, options.out, options.retrained_subsets
    root = options.root or cache_root() / task
    data, model, recipe = _build(task, root)
    candidates = CANDIDATES[task]
    roles = ("train", "val", "eval") if len(candidates) > 1 else ("train", "eval")
    stores = {
        m: {role: _store(model, data[role], root / "stores", m, role) for role in roles}
        for m in candidates
    }
    first = stores[candidates[0]]["train"]
    truths = quality.shipped(_shipped(task), data) if subsets is None else None
    if subsets is None and truths is None:
        log.info("the shipped ground truth was made for other data (another Python's pydoc "
                 "topics): retraining one here")  # fmt: skip
        subsets = DEFAULT_SUBSETS
    retraining = False
    if truths is None:
        retraining = not (root / f"groundtruth-{subsets}-val+eval.npz").exists()
        truths = quality.groundtruths(model, first, data, root, subsets, recipe)
    validation = quality.choose(stores, truths["val"]) if len(candidates) > 1 else {}
    method = max(validation, key=validation.get) if validation else candidates[0]
    chosen = stores[method]
    chosen["learn"] = _store(model, data["learn"], root / "stores", method, "learn")
    out.mkdir(parents=True, exist_ok=True)
    weights = root / f"weights-{method}.safetensors"
    if not weights.exists():
        log.info(f"learning group weights for {method} on the weight-learning queries")
        run_learn(
            LearnOptions(
                train=chosen["train"].path, queries=chosen["learn"].path, out=weights, method=method
            )
        )
    explained = explain.explain(chosen, weights, out, task, method, data["eval"])
    grid = out / "query-and-proponents.png" if task in ("image", "diffusion") else None
    if grid is not None:
        _grid(chosen["train"], chosen["eval"], explained.proponents, grid)
    else:  # an image task's grid left in the same folder would not show this report's query
        (out / "query-and-proponents.png").unlink(missing_ok=True)
    result = DemoResult(
        _query(chosen["eval"]), explained.proponents, {}, grid, weights,
        {role: store.path for role, store in chosen.items()}, method, retraining=retraining,
        model=model, data=data, validation=validation, report=explained.report,
        opponents=explained.opponents,
    )  # fmt: skip
    if on_answer is not None:
        on_answer(result)
    truth = truths["eval"]
    seeds = truth.extra.get("outputs_by_seed")
    per_subset = f" x {len(seeds)} seeds" if seeds is not None else ""
    shipped = " (shipped with attrib)" if subsets is None else ""
    result.groundtruth = f"{truth.subsets} retrained models{per_subset}{shipped}"
    records = quality.weights_effect(chosen["train"], chosen["eval"], truth, method, weights)
    for record in records:
        result.lds[record["weights"]] = (record["lds"], record["ci_subsets"])
    result.change = (records[1]["vs_first"], records[1]["vs_first_ci"])
    return result


def _shipped(task: str) -> Path:
    from importlib.resources import files

    return Path(str(files("attrib.examples").joinpath("groundtruth", SHIPPED_GROUNDTRUTH[task])))


def _query(store: Store) -> dict:
    """Evaluation query 0 as a person sees it: its row and its text or label."""
    from attrib.report.rows import RowReader

    row = int(store.column("index")[0])
    return {"index": row, **RowReader(store).previews([row]).get(row, {})}


def _grid(train: Store, queries: Store, records: list[dict], path: Path) -> None:
    """The query and its top training images side by side, with labels and scores."""
    from PIL import Image, ImageDraw

    from attrib.data import decode_image, open_dataset, ref_from_settings, undecoded

    def reader(store: Store):
        column = store.settings["task_options"]["columns"]["image"]
        dataset = undecoded(open_dataset(ref_from_settings(store.settings["dataset"])), column)
        return lambda row: (
            decode_image(dataset[row][column], row, column)
            .convert("L")
            .resize((64, 64), Image.NEAREST)
        )

    query_image, train_image = reader(queries), reader(train)
    tile, pad = 64, 18
    canvas = Image.new("L", ((len(records) + 1) * (tile + 6), tile + 2 * pad), 255)
    draw = ImageDraw.Draw(canvas)
    query = _query(queries)
    canvas.paste(query_image(query["index"]), (0, pad))
    draw.text((2, 2), f"query {query.get('label', '')}", fill=0)
    for i, record in enumerate(records, start=1):
        x = i * (tile + 6)
        canvas.paste(train_image(record["index"]), (x, pad))
        draw.text((x + 2, 2), f"#{record['index']} {record.get('label', '')}", fill=0)
        draw.text((x + 2, tile + pad + 2), f"{record['score']:.2g}", fill=0)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
