"""What a store holds and what made it, as one plain dict (`attrib inspect`)."""

from __future__ import annotations

from pathlib import Path

from attrib.options import Options, existing_store, option


class InspectOptions(Options):
    """Print a store's summary: model, task, method, groups with dims, examples, shards, size."""

    store: Path = option(help="A store folder written by `attrib featurize`.", argument=True)
    verify: bool = option(
        False, help="Also compare every shard with its checksum (reads the whole store)."
    )

    def check(self) -> None:
        existing_store(self.store, "STORE")


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
    return {
        "path": str(store.path),
        "model": model["source"],
        "revision": model.get("revision"),
        "commit": model.get("commit"),
        "adapter": (model.get("adapter") or {}).get("source"),
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
        "command": " ".join(store.manifest.get("command", [])),
        "options": store.manifest.get("options"),
    }
