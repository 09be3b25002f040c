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
from dataclasses import dataclass
from pathlib import Path

from attrib import log
from attrib.atomic import atomic_path
from attrib.demo.options import DemoOptions
from attrib.evaluate.groundtruth import load_groundtruth
from attrib.evaluate.lds import evaluate_lds
from attrib.evaluate.options import RetrainOptions
from attrib.evaluate.retrain import retrain
from attrib.featurize.options import FeaturizeOptions
from attrib.featurize.run import run_featurize
from attrib.score.options import ScoreOptions
from attrib.score.run import run_score, weight_vector
from attrib.store import Store
from attrib.weights.options import LearnOptions
from attrib.weights.run import run_learn

# Diffusion: DAS ranks best (README); its global kernel over the DDPM's 13k projected features
# comes from the 1,000 x 1,000 dual, seconds.
METHODS = {"image": "trak-block", "text": "trak-block", "diffusion": "das"}
# The diffusion task's ground truth for its evaluation queries, built once by
# benchmarks/quality_diffusion.py (models retrained from scratch: it depends on the data, the
# recipe and the seeds, not on the checkpoint the demo trains).
SHIPPED_GROUNDTRUTH = {"diffusion": "digits-ddpm-eval-64x2.npz"}


@dataclass
class DemoResult:
    query: dict  # the explained evaluation query: `index` (its row) and its text or label
    records: list[dict]  # its top proponents (score, preview)
    lds: dict[str, tuple[float, float]]  # "unweighted" / "weighted" -> (LDS, CI)
    grid: Path | None
    weights: Path
    stores: dict[str, Path]
    method: str = ""
    groundtruth: str = ""  # what the LDS is measured against, in words
    retraining: bool = False  # the ground truth is built in this run (not cached or shipped)
    model: Path | None = None  # the task's checkpoint and data, for `attrib featurize`
    data: dict[str, Path] | None = None


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


def _store(model: Path, data: Path, out: Path, method: str) -> Store:
    if not (out / "manifest.json").exists() or not Store(out).manifest.get("complete"):
        run_featurize(
            FeaturizeOptions(
                model=str(model),
                data=str(data),
                out=out,
                method=method,
                proj_dim=16,
                batch_size=64,
                progress=not log.is_quiet(),
                store_dtype="float32",
                overwrite=True,
            )
        )
    return Store(out)


def run_demo(options: DemoOptions, on_answer=None) -> DemoResult:
    """The demo; `on_answer(result)` is called as soon as the query is explained (before the
    minutes of retraining that measure LDS), with `lds` still empty."""
    log.quiet_libraries()  # attrib reports progress; the libraries' own bars are noise here
    task, out, subsets = options.task, options.out, options.retrained_subsets
    method = METHODS[task]
    root = options.root or cache_root() / task
    data, model, recipe = _build(task, root)
    stores = {
        role: _store(model, data[role], root / "stores" / method / role, method)
        for role in ("train", "learn", "eval")
    }
    out.mkdir(parents=True, exist_ok=True)
    weights = root / f"weights-{method}.safetensors"
    if not weights.exists():
        log.info("learning group weights on the weight-learning queries")
        run_learn(
            LearnOptions(
                train=stores["train"].path, queries=stores["learn"].path, out=weights, method=method
            )
        )
    records = _explain(stores, weights, out, task, method)
    grid = out / "query-and-proponents.png" if task in ("image", "diffusion") else None
    paths = {role: store.path for role, store in stores.items()}
    truth_path = _shipped(task) if subsets is None else root / f"groundtruth-{subsets}.npz"
    result = DemoResult(
        _query(stores["eval"]), records, {}, grid, weights, paths, method,
        retraining=not truth_path.exists(), model=model, data=data,
    )  # fmt: skip
    if on_answer is not None:
        on_answer(result)
    if not truth_path.exists():
        log.info(f"retraining {subsets} models on random halves of the training set for LDS")
        recipe_flags = {k: v for k, v in recipe.to_dict().items() if k != "momentum"}
        retrain(
            RetrainOptions(
                train=stores["train"].path,
                queries=stores["eval"].path,
                out=truth_path,
                subsets=subsets,
                progress=not log.is_quiet(),
                **recipe_flags,
            )
        )
    truth = load_groundtruth(truth_path)
    seeds = truth.extra.get("outputs_by_seed")
    per_subset = f" x {len(seeds)} seeds" if seeds is not None else ""
    shipped = " (shipped with attrib)" if subsets is None else ""
    result.groundtruth = f"{truth.subsets} retrained models{per_subset}{shipped}"
    for name, path in (("unweighted", None), ("weighted", weights)):
        vector = weight_vector(stores["train"], path)
        measured = evaluate_lds(stores["train"], stores["eval"], truth, method, None, vector)
        result.lds[name] = (measured.lds, measured.ci)
    return result


def _shipped(task: str) -> Path:
    from importlib.resources import files

    return Path(str(files("attrib.examples").joinpath("groundtruth", SHIPPED_GROUNDTRUTH[task])))


def _query(store: Store) -> dict:
    """Evaluation query 0 as a person sees it: its row and its text or label."""
    from attrib.score.preview import Previewer

    row = int(store.column("index")[0])
    return {"index": row, **Previewer(store)([row]).get(row, {})}


def _explain(stores, weights: Path, out: Path, task: str, method: str) -> list[dict]:
    eval_store = stores["eval"]
    records = run_score(
        ScoreOptions(
            train=stores["train"].path,
            method=method,
            weights=weights,
            top=8,
            queries=eval_store.path,
        )
    )
    first = [r for r in records if r["query"] == 0]
    if task in ("image", "diffusion"):
        _grid(stores["train"], eval_store, first, out / "query-and-proponents.png")
    return first


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
