"""Checking a store before trusting it.

Cheap checks run whenever a store is opened or a shard is read: the manifest's structure,
shard names and paths (no `..`, no absolute paths), row ranges that tile [0, N) exactly once,
files that exist and are not empty, and, per shard read, its row count and `index` column.
Each shard's sha256 is compared with the manifest's when a process first reads it (in the
prefetch thread; `ATTRIB_VERIFY=0` skips it), and `verify_bytes` checks them all at once
(`attrib inspect --verify`; featurize before it calls an existing store complete).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from attrib.errors import AttribError
from attrib.store.manifest import SHARD_DIR, shard_name

# Checksums of shards are compared as each is first read by a process (hashing runs in the
# prefetch thread, beside the products); ATTRIB_VERIFY=0 skips it for stores you trust.
VERIFY = os.environ.get("ATTRIB_VERIFY", "1") != "0"
_checked: set[tuple[str, int, int, str]] = set()  # (path, size, mtime_ns, sha256) seen intact

REQUIRED_SETTINGS = ("model", "task", "modules", "scalars", "num_examples", "shard_size")
SHARD_FILE = re.compile(r"^\d{10}-\d{10}\.arrow$")


def damaged(path: Path, what: str) -> AttribError:
    return AttribError(
        f"{path} is damaged ({what}); run the featurize command that made it again to repair it"
    )


def check_manifest(path: Path, manifest: dict) -> None:
    """The manifest's structure and its shard list (cheap: no shard is read)."""
    settings = manifest.get("settings")
    if not isinstance(settings, dict) or any(k not in settings for k in REQUIRED_SETTINGS):
        raise damaged(path, "its manifest has no complete settings")
    count, size = settings["num_examples"], settings["shard_size"]
    if not isinstance(count, int) or not isinstance(size, int) or count < 1 or size < 1:
        raise damaged(path, f"num_examples {count!r} and shard_size {size!r} in its manifest")
    for module in settings["modules"]:
        dim = module.get("feature_dim") if isinstance(module, dict) else None
        if not isinstance(dim, int) or dim < 1 or "spec" not in module:
            raise damaged(path, "a module in its manifest has no valid feature_dim or spec")
    shards = manifest.get("shards")
    if not isinstance(shards, list) or not shards:
        raise damaged(path, "its manifest lists no shards")
    expected = 0
    for shard in shards:
        keys = ("file", "start", "end", "sha256")
        if not isinstance(shard, dict) or any(k not in shard for k in keys):
            raise damaged(path, "a shard entry in its manifest lacks file, start, end or sha256")
        file, start, end = shard["file"], shard["start"], shard["end"]
        if any(not isinstance(v, int) or isinstance(v, bool) for v in (start, end)):
            raise damaged(path, f"shard {file!r} has a row range that is not whole numbers")
        if not isinstance(file, str) or not SHARD_FILE.match(file):
            raise damaged(path, f"shard name {file!r} is not a plain shard file name")
        if (start, end) != (expected, min(expected + size, count)) or file != shard_name(
            start, end
        ):
            raise damaged(path, f"shard {file} does not continue the rows at {expected}")
        shard_path = path / SHARD_DIR / file
        if not shard_path.is_file() or shard_path.stat().st_size == 0:
            raise damaged(path, f"shard {file} is missing or empty")
        expected = end
    if expected != count:
        raise damaged(path, f"its shards hold {expected} of {count} rows")


def check_rows(path: Path, file: str, start: int, end: int, index: np.ndarray) -> None:
    """A shard read from disk holds the rows its name says (catches swapped or stale files)."""
    if len(index) != end - start or not np.array_equal(index, np.arange(start, end)):
        raise damaged(path, f"shard {file} does not hold rows {start}..{end}")


def check_checksum(store_path: Path, shard_path: Path, expected: str) -> None:
    """The shard's bytes hash to the manifest's sha256 (once per process and file version)."""
    from attrib.store.shards import sha256

    stat = shard_path.stat()
    key = (str(shard_path), stat.st_size, stat.st_mtime_ns, expected)
    if key in _checked:
        return
    if sha256(shard_path) != expected:
        raise damaged(store_path, f"shard {shard_path.name} differs from its checksum")
    _checked.add(key)


def verify_bytes(store) -> list[str]:
    """The shards whose sha256 differs from the manifest's (reads every byte)."""
    from attrib.store.shards import sha256

    return [
        shard.file
        for shard in store.shards
        if sha256(store.path / SHARD_DIR / shard.file) != shard.sha256
    ]


def require_intact(store) -> None:
    bad = verify_bytes(store)
    if bad:
        raise damaged(store.path, f"{len(bad)} shard(s) differ from their checksums: {bad[0]}")
