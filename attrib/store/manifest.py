"""The store manifest: what made a store, and which shards hold which rows.

`manifest.json` has three parts:
- `settings`: everything that determines the stored values (model and its fingerprint, task,
  output function, projection, modules, dtypes, dataset and its fingerprint, example count,
  shard size). Two runs may only write into one store when their settings are equal.
- `shards`: file, row range [start, end), rows, sha256, filled in once the run completes.
- bookkeeping: format version, attrib version, command line, timestamps, `complete`.
"""

from __future__ import annotations

import json
from pathlib import Path

from attrib.atomic import write_text

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARD_DIR = "shards"


def write_json_atomic(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> dict:
    """A manifest or rank report: a JSON object, checked for depth and type (AttribError)."""
    from attrib.jsonio import load_json

    return load_json(path)


def settings_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two settings dicts."""
    keys = sorted(set(old) | set(new))
    differing = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            differing += settings_diff(a, b, f"{name}.")
        elif a != b:
            differing.append(name)
    return differing


def shard_name(start: int, end: int) -> str:
    return f"{start:010d}-{end:010d}.arrow"


def shard_ranges(num_examples: int, shard_size: int) -> list[tuple[int, int]]:
    return [(s, min(s + shard_size, num_examples)) for s in range(0, num_examples, shard_size)]
