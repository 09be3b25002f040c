"""`attrib evaluate retrain`: the LDS ground truth for the built-in tasks.

M random subsets of the training store (each keeps round(alpha * N) examples, seeded), a
model trained on each with a recipe, every query's output recorded. Work is kept per subset
in `OUT.parts/` (written atomically), so a killed run resumes and `--shard i/n` splits the
subsets across processes or machines sharing that folder; whichever run finds all subsets
done writes OUT.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from attrib import log
from attrib.atomic import atomic_path, check_or_write_meta
from attrib.distributed import resolve_device
from attrib.errors import AttribError
from attrib.evaluate.groundtruth import GroundTruth, save_groundtruth
from attrib.evaluate.options import RetrainOptions
from attrib.evaluate.sources import fixed_query_labels, store_source
from attrib.progress import progress_bar
from attrib.store import Store
from attrib.tasks import load_task_from_settings
from attrib.train import InitialState, outputs, train


def make_masks(num_examples: int, subsets: int, alpha: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = max(1, round(alpha * num_examples))
    masks = np.zeros((subsets, num_examples), dtype=bool)
    for m in range(subsets):
        masks[m, rng.permutation(num_examples)[:keep]] = True
    return masks


def subset_seed(seed: int, subset: int) -> int:
    digest = hashlib.sha256(f"retrain:{seed}:{subset}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def retrain(config: RetrainOptions) -> GroundTruth | None:
    train_store, query_store = Store(config.train), Store(config.queries)
    settings = train_store.settings
    recipe = config.recipe_resolved
    task = load_task_from_settings(settings)
    device = resolve_device(config.device)
    task.to(device)
    output = config.output or task.evaluation_output
    if output not in task.output_functions:
        raise AttribError(f"--output {output} is not available for {task.name}")
    parts = Path(f"{config.out}.parts")
    meta = {
        "train": train_store.fingerprint(),
        "queries": query_store.fingerprint(),
        "subsets": config.subsets,
        "alpha": config.alpha,
        "seed": config.seed,
        "recipe": recipe.to_dict(),
        "output": output,
    }
    check_or_write_meta(parts, meta, "subsets")
    masks = make_masks(train_store.num_examples, config.subsets, config.alpha, config.seed)
    train_source = store_source(task, train_store, device)
    labels = fixed_query_labels(task, query_store, device)  # before any retraining
    query_source = store_source(task, query_store, device, labels)
    query_count = query_store.num_examples
    initial = InitialState(task)
    index, count = config.shard_pair
    todo = [m for m in range(index, config.subsets, count) if not _part(parts, m).exists()]
    with progress_bar(config.progress, unit="subsets") as bar:
        bar_task = bar.add_task("retrain", total=len(todo))
        for m in todo:
            seed = subset_seed(config.seed, m)
            initial.restore(recipe, seed)
            torch.manual_seed(seed)
            train(task, train_source, np.flatnonzero(masks[m]), recipe, seed)
            values = outputs(task, query_source, query_count, output)
            _save_part(parts, m, values)
            bar.advance(bar_task)
    done = [m for m in range(config.subsets) if _part(parts, m).exists()]
    if len(done) < config.subsets:
        log.info(f"{len(done)} of {config.subsets} subsets done in {parts}; run the other shards")
        return None
    truth = GroundTruth(
        masks,
        np.stack([np.load(_part(parts, m)) for m in range(config.subsets)]),
        higher_is_better=output == "margin",
        extra={"recipe": json.dumps(meta), "output_function": output},
    )
    save_groundtruth(config.out, truth)
    log.info(f"wrote {config.out}: {config.subsets} subsets x {query_count} queries")
    return truth


def _part(parts: Path, subset: int) -> Path:
    return parts / f"subset-{subset:05d}.npy"


def _save_part(parts: Path, subset: int, values: np.ndarray) -> None:
    with atomic_path(_part(parts, subset)) as tmp, open(tmp, "wb") as handle:
        np.save(handle, values.astype(np.float64))
