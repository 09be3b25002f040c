"""The feature store: Arrow shards plus a manifest (see DESIGN.md, "Store format").

`Store` and friends are imported on first use: the CLI reads `attrib.summary`'s options
at start-up without loading pyarrow."""

from __future__ import annotations

from importlib import import_module

__all__ = ["Layout", "ShardInfo", "Store", "column_matrix"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(import_module("attrib.store.reader"), name)
    raise AttributeError(f"module 'attrib.store' has no attribute {name!r}")
