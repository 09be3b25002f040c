"""What a file attrib wrote holds and what made it, as one plain dict (`attrib inspect`): a
store, a weights file (learn-weights) or a ground-truth file (evaluate retrain)."""

from __future__ import annotations

from pathlib import Path

from attrib.errors import AttribError
from attrib.options import Options, existing_store, option


class InspectOptions(Options):
    """Describe what attrib wrote: a store (model, task, the method it was featurized for and
    the methods it serves, groups with dims, examples, shards, size), a weights file (groups,
    weights, method, store fingerprint, settings) or a ground truth (subsets, queries, seeds,
    fraction kept)."""

    store: Path = option(
        help="A store folder, weights .safetensors or ground-truth .npz.", argument=True
    )
    verify: bool = option(
        False, help="Also compare every shard with its checksum (reads the whole store)."
    )

    def check(self) -> None:
        if Path(self.store).is_file():
            if Path(self.store).suffix not in (".safetensors", ".npz"):
                raise AttribError(
                    f"{self.store}: attrib writes stores (folders), weights (.safetensors) and "
                    "ground truths (.npz); this is none of them"
                )
            return
        existing_store(self.store, "STORE")


def summary(path: Path, verify: bool = False) -> dict:
    """A store's, weights file's or ground truth's summary, with `kind` saying which."""
    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        return weights_summary(path)
    if path.suffix == ".npz" and path.is_file():
        return groundtruth_summary(path)
    return {"kind": "store", **store_summary(path, verify)}


def weights_summary(path: Path) -> dict:
    from attrib.weights.artifact import load_weights

    artifact = load_weights(path)
    info = dict(artifact.info)
    return {
        "kind": "weights",
        "path": str(path),
        "method": info.pop("method", None),
        "k": info.pop("k", None),
        "groups": len(artifact.groups),
        "modules": len(artifact.module_to_group),
        "model": info.pop("model", None),
        "store_fingerprint": info.pop("store_fingerprint", None),
        "weights": {g: float(w) for g, w in zip(artifact.groups, artifact.weights)},
        "settings": info,
    }


def groundtruth_summary(path: Path) -> dict:
    import numpy as np

    from attrib.evaluate.groundtruth import load_groundtruth
    from attrib.jsonio import parse_json

    truth = load_groundtruth(path)
    try:
        recipe = parse_json(str(truth.extra.get("recipe", "{}")), "its recipe")
    except AttribError:
        recipe = {}
    by_seed = truth.extra.get("outputs_by_seed")
    return {
        "kind": "groundtruth",
        "path": str(path),
        "subsets": truth.subsets,
        "queries": int(truth.outputs.shape[1]),
        "training_rows": int(truth.masks.shape[1]),
        "seeds": int(by_seed.shape[0]) if isinstance(by_seed, np.ndarray) else 1,
        "kept": round(float(truth.masks.mean()), 4),
        "output_function": truth.extra.get("output_function"),
        "higher_is_better": truth.higher_is_better,
        "made_for": truth.made_for(),
        "recipe": recipe.get("recipe", {}),
    }


def store_summary(path: Path, verify: bool = False) -> dict:
    """The summary; with `verify`, every shard's checksum is checked first (damage: error)."""
    from attrib.store import Store
    from attrib.store.verify import require_intact

    store = Store(path)
    if verify:
        require_intact(store)
    return {**_summary(store), **({"verified": True} if verify else {})}


def _summary(store) -> dict:
    settings = store.settings
    model = settings["model"]
    from attrib.store.kinds import store_kind

    return {
        "path": str(store.path),
        "model": model["source"],
        "revision": model.get("revision"),
        "commit": model.get("commit"),
        "adapter": (model.get("adapter") or {}).get("source"),
        "holds": store_kind(store),
        "task": settings["task"],
        "output_function": settings["output_function"],
        "projection": settings["projection"],
        "dataset": settings["dataset"]["source"],
        "split": settings["dataset"]["split"],
        "examples": store.num_examples,
        "shards": len(store.shards),
        "bytes": store.size_bytes(),
        "store_dtype": settings["store_dtype"],
        "modules": [
            {
                "name": m.name,
                "kind": m.kind,
                "grad_shape": [m.d_out, m.d_in],
                "feature_dim": store.feature_dims[m.name],
            }
            for m in store.modules
        ],
        "feature_dim": sum(store.feature_dims.values()),
        "featurized_for": (store.manifest.get("options") or {}).get("method"),
        "serves": serving_methods(store),
        "command": " ".join(store.manifest.get("command", [])),
        "options": store.manifest.get("options"),
    }


def serving_methods(store) -> list[str]:
    """The score methods defined on what this store holds: its output function's gradients,
    and Kronecker factors for kfac/ekfac (others run too, with a warning); hidden states for
    repsim; bm25 on any language model's store (it reads the rows' words)."""
    from attrib.methods import METHODS
    from attrib.store.kinds import PERTURBED, store_kind
    from attrib.tasks.registry import TASK_OUTPUTS

    kind = store_kind(store)
    have = store.settings.get("output_function")
    task = store.settings.get("task")
    outputs = TASK_OUTPUTS.get(task, (have,))
    serving = []
    for name, method in METHODS.items():
        if method.requires.reads_words:  # the rows' words: any store of texts
            if task == "causal-lm":
                serving.append(name)
            continue
        needs = method.requires
        if needs.store != kind or (needs.factors and not store.settings.get("factors")):
            continue
        if needs.optimizer_state and not store.settings.get("projection", {}).get("normalizer"):
            continue  # TrackStar: gradients divided by the optimizer's second moments
        if needs.train_output not in outputs and not needs.fallback:
            continue  # defined only where the task has its output (a diffusion model's)
        if needs.query_output is not None and needs.query_output not in outputs:
            continue  # Journey-TRAK: queries along a sampling trajectory (diffusion only)
        wanted = needs.train_output if needs.train_output in outputs else "loss"
        if kind == PERTURBED or wanted == have:
            serving.append(name)
    return serving
