"""Replacing a store without losing it: `--overwrite` builds the new store beside the old one
(`.NAME.new`), and swaps it in only once it is complete; a kill at any point leaves either the
old store or the new one under NAME, never neither, and the next run finishes the swap.

Only folders attrib made are ever removed: a store (a manifest with attrib's keys) or one of
its own `.NAME.new` / `.NAME.old` folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from attrib.jsonio import load_json_or_none
from attrib.store.lock import lock_store
from attrib.store.manifest import MANIFEST


def staging(target: Path) -> Path:
    return target.parent / f".{target.name}.new"


def retired(target: Path) -> Path:
    return target.parent / f".{target.name}.old"


def _attrib_manifest(folder: Path) -> dict | None:
    """The manifest of a folder attrib wrote (complete or not), else None."""
    manifest = load_json_or_none(folder / MANIFEST)
    keys = ("format_version", "attrib_version", "settings", "shards")
    return manifest if isinstance(manifest, dict) and all(k in manifest for k in keys) else None


def is_attrib_store(folder: Path) -> bool:
    return _attrib_manifest(folder) is not None


def is_complete_store(folder: Path) -> bool:
    manifest = _attrib_manifest(folder)
    return bool(manifest and manifest.get("complete"))


def recover(target: Path) -> None:
    """Finish a swap a killed run left halfway (the new store complete, the old retired),
    and remove a retired store whose removal a kill cut short (its manifest may be gone
    already: it is recognised by holding nothing but a store's files)."""
    new, old = staging(target), retired(target)
    try:
        if not target.exists() and is_complete_store(new):
            os.rename(new, target)
    except OSError:  # another rank of the same run got there first
        pass
    if old.exists() and is_attrib_store(target) and holds_only_store_files(old):
        shutil.rmtree(old, ignore_errors=True)


# What a store folder holds: shards, factors, caches (kernels, indexes), rank reports, locks.
STORE_SUFFIXES = (".arrow", ".json", ".safetensors", ".npy", ".faiss", ".lock")


def holds_only_store_files(folder: Path) -> bool:
    """True for a folder (or what is left of one) that attrib's store writer made: every file
    in it is one a store holds. A folder with anything else in it is never removed."""
    if is_attrib_store(folder):
        return True
    if not folder.is_dir() or folder.is_symlink():
        return False
    for path in folder.rglob("*"):
        if path.is_symlink():
            return False
        if path.is_file() and not (path.name.endswith(STORE_SUFFIXES) or ".part" in path.name):
            return False
    return True


def swap_in(target: Path, new: Path) -> None:
    """Put the complete store at `new` in place of `target` (whose readers must be done)."""
    lock_store(target, exclusive=True)  # fails, naming the reader, while one reads it
    old = retired(target)
    os.rename(target, old)
    os.rename(new, target)
    shutil.rmtree(old, ignore_errors=True)
