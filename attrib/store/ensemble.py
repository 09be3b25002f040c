"""Ensemble stores: several members' stores of the same rows (checkpoints a training run saved,
perturbed copies, independently trained models) as one store whose modules are every
member's modules, named `member-J/<module>`.

For methods whose score is a sum of per-module terms (tracin, kfac, ekfac; trak-block, whose
out-to-loss factor is kept per member), the score on the ensemble store is exactly the sum of
the members' scores: TracIn's checkpoint sum (TracInCP) and TRAK over checkpoints.
A member weight w_j scales member j's features (and its output-gradient Kronecker factor) by
sqrt(w_j) on both the training and the query side, so tracin sums w_j tau_j (TracInCP's
learning rates); a kernel fit to the features themselves (EK-FAC) is unchanged by it.
Parameter groups ignore the member prefix: one weight per group, shared by every member, and
weights learned on one checkpoint apply to its ensemble as they are.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np

from attrib.errors import AttribError
from attrib.jsonio import load_json
from attrib.store.reader import Store
from attrib.store.shards import feature_matrix

PREFIX = "member-"
_MEMBER = re.compile(r"^member-\d+/")


def member_ranges(store: Store) -> list[tuple[slice, str]]:
    """For an ensemble store: each member's feature columns (its modules are contiguous) and
    the name of its out-to-loss scalar column."""
    ranges: dict[str, list[int]] = {}
    for name, part in zip(store.module_names, store.layout.slices):
        member = name.split("/", 1)[0]
        ranges.setdefault(member, [part.start, part.stop])[1] = part.stop
    return [(slice(lo, hi), f"{member}/out_to_loss") for member, (lo, hi) in ranges.items()]


def member_module(name: str) -> str:
    """A module's name in its member's own store (`member-3/layer1.conv` -> `layer1.conv`)."""
    return _MEMBER.sub("", name)


def is_ensemble(store: Store) -> bool:
    return "ensemble" in store.settings


def trainer_learning_rates(paths: list[Path]) -> list[float]:
    """Each member's learning rate at its checkpoint's step, from the `trainer_state.json`
    the Hugging Face Trainer saves in `checkpoint-*` folders (TracInCP's weights)."""
    rates = []
    for path in paths:
        model = Path(Store(path).settings["model"]["source"])
        state_file = model / "trainer_state.json"
        try:
            state = load_json(state_file)
        except (OSError, AttribError):
            raise AttribError(
                f"member {path}: its model {model} has no readable trainer_state.json; "
                "pass --member-weights"
            ) from None
        step = state.get("global_step", 0)
        logged = [
            (entry["step"], entry["learning_rate"])
            for entry in state.get("log_history", [])
            if "learning_rate" in entry and "step" in entry and entry["step"] <= step
        ]
        if not logged:
            raise AttribError(
                f"member {path}: {state_file} logs no learning rate up to step {step}; "
                "pass --member-weights"
            )
        rates.append(float(max(logged)[1]))  # the last one logged at or before the step
    return rates


def _check_members(stores: list[Store]) -> None:
    first = stores[0]
    for store in stores[1:]:
        what = f"ensemble member {store.path}"
        if store.num_examples != first.num_examples:
            raise AttribError(
                f"{what} has {store.num_examples} rows, {first.path} {first.num_examples}: "
                "featurize every member on the same data"
            )
        if [(s.start, s.end) for s in store.shards] != [(s.start, s.end) for s in first.shards]:
            raise AttribError(f"{what} has other shards than {first.path}; use one --shard-size")
        if not np.array_equal(store.column("index"), first.column("index")):
            raise AttribError(f"{what} holds other rows than {first.path}; use the same data")
        for key in ("task", "projection", "output_function", "factors"):
            if store.settings.get(key) != first.settings.get(key):
                raise AttribError(
                    f"{what} differs from {first.path} in {key}; featurize every member with "
                    "the same --method, --proj-dim and --seed"
                )
        if is_ensemble(store):
            raise AttribError(f"{what} is itself an ensemble; list its members instead")


def merge(
    out: Path, paths: list[Path], weights: list[float] | None = None, overwrite: bool = True
) -> Path:
    """Write the ensemble store of the member stores at `paths` (in this order) to `out`.
    A rerun after a kill finishes the job (complete shards kept); an equal complete store is
    left as it is; without `overwrite` another store at `out` is refused."""
    from attrib.store.arrays import write_generated

    if len(paths) < 2:
        raise AttribError("an ensemble needs at least two member stores")
    weights = [1.0] * len(paths) if weights is None else list(weights)
    if len(weights) != len(paths) or any(not w > 0 for w in weights):
        raise AttribError("--member-weights: one positive weight per member store")
    stores = [Store(p) for p in paths]
    _check_members(stores)
    first = stores[0]
    dims = {
        f"{PREFIX}{j}/{name}": store.feature_dims[name]
        for j, store in enumerate(stores)
        for name in store.module_names
    }
    members = [
        {
            "store": str(Path(s.path).resolve()),
            "fingerprint": s.fingerprint(),
            "model": s.settings["model"],
            "weight": w,
        }
        for s, w in zip(stores, weights)
    ]
    identity = json.dumps([(m["model"]["fingerprint"], m["weight"]) for m in members])
    settings = {
        key: first.settings[key]
        for key in (
            "kind",
            "task",
            "task_options",
            "dataset",
            "output_function",
            "projection",
            "factors",
        )
        if key in first.settings
    }
    settings["model"] = {
        **first.settings["model"],
        "source": "ensemble",
        "fingerprint": "ensemble:" + hashlib.sha256(identity.encode()).hexdigest()[:32],
        "adapter": None,
    }
    settings["ensemble"] = {"members": members}
    settings["modules"] = [
        {**module, "spec": {**module["spec"], "name": f"{PREFIX}{j}/{module['spec']['name']}"}}
        for j, store in enumerate(stores)
        for module in store.settings["modules"]
    ]
    by_range = [{(s.start, s.end): s for s in store.shards} for store in stores]

    def rows(start: int, end: int):
        features, scalars = {}, {}
        for j, store in enumerate(stores):
            data = store.read_shard(by_range[j][(start, end)])
            scale = math.sqrt(weights[j])
            for name in store.module_names:
                matrix = feature_matrix(data, name, store.feature_dims[name])
                features[f"{PREFIX}{j}/{name}"] = matrix * scale if scale != 1 else matrix
            if j == 0:  # the rows' own scalars (index, loss) are the first member's
                scalars = {n: data.column(n).to_numpy() for n in ["index", *store.scalar_names]}
            # Each member's out-to-loss factor, for TRAK over members (trak-block).
            scalars[f"{PREFIX}{j}/out_to_loss"] = data.column("out_to_loss").to_numpy()
        return features, scalars

    path = write_generated(
        Path(out),
        dims,
        first.num_examples,
        rows,
        [*first.scalar_names, *(f"{PREFIX}{j}/out_to_loss" for j in range(len(stores)))],
        settings,
        int(first.settings.get("shard_size", 1024)),
        # Weighted members are kept in float32: float16 would round the scaled features again.
        "float32" if any(w != 1 for w in weights) else first.settings.get("store_dtype", "float32"),
        overwrite=overwrite,
        # The factors are written with their shards, before the store replaces --out (which
        # may be one of the members: its factors are read before it is retired).
        beside=_factor_merger(stores, weights) if first.settings.get("factors") else None,
    )
    return path


def _factor_merger(stores: list[Store], weights: list[float]):
    from attrib.store.factors import load_factors, save_factors, shard_factor_path

    def merge_shard(folder: Path, start: int, end: int, shard_file: str) -> None:
        target = shard_factor_path(folder, shard_file)
        if target.exists():  # written by an earlier run that was stopped after it
            return
        combined = {}
        for j, store in enumerate(stores):
            member_shard = next(s for s in store.shards if s.start == start)
            path = shard_factor_path(store.path, member_shard.file)
            if not path.exists():
                raise AttribError(f"ensemble member {store.path} has no factors for {path.name}")
            for name, factor in load_factors(path).items():
                factor.s = factor.s * weights[j]  # dy scaled by sqrt(w): S by w
                combined[f"{PREFIX}{j}/{name}"] = factor
        save_factors(target, combined)

    return merge_shard
