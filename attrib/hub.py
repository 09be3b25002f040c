"""Resolving models and adapters by hub id or local path, with clear errors.

What gets recorded identifies the weights: for a hub id the resolved commit hash, for a local
folder a content hash of its weight files (size and modification time instead, past 2 GiB, so
a large local checkpoint does not cost a full read on every run).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from attrib.errors import AttribError

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".json", ".model", ".txt")
_FULL_HASH_LIMIT = 2 * 2**30
# What a Trainer saves beside a checkpoint's model: its own state, not the model's (and
# training_args.bin holds the output folder's path, so a copied checkpoint would differ).
_TRAINER_STATE = re.compile(
    r"^(optimizer\.pt|scheduler\.pt|scaler\.pt|rng_state(_\d+)?\.pth|training_args\.bin|"
    r"trainer_state\.json)$"
)


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.count("/") > 1 or Path(source).exists()


def check_source(source: str, what: str) -> None:
    """Fail fast on a path that does not exist, before asking the hub about it."""
    if looks_like_path(source) and not Path(source).expanduser().exists():
        raise AttribError(f"{what} {source}: no such folder (pass a hub id or an existing path)")


def check_data_source(source: str, what: str = "--data") -> None:
    """Fail fast on a data path that does not exist or an empty data file, before anything
    heavy is imported (an empty file used to take 10 s to be refused)."""
    path = Path(source).expanduser()
    if looks_like_path(source) and not path.exists():
        raise AttribError(f"{what} {source}: no such file or folder")
    if path.is_file() and path.stat().st_size == 0:
        raise AttribError(f"{what} {source}: the file is empty (no rows)")


def offline() -> bool:
    return any(
        os.environ.get(v, "0").upper() in ("1", "ON", "YES", "TRUE")
        for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )


def require_hub(what: str, source: str) -> None:
    """Before asking the hub for `source`: say at once when it cannot be reached (the hub
    libraries retry for tens of seconds). Offline mode (HF_HUB_OFFLINE=1) uses the cache."""
    if offline():
        return
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=3).close()
    except OSError as exc:
        raise AttribError(
            f"{what} {source}: the Hugging Face hub ({url.hostname}) cannot be reached ({exc}); "
            "pass a local path, or set HF_HUB_OFFLINE=1 to use a copy in the local cache"
        ) from None


def load_error(what: str, source: str, revision: str | None, exc: Exception) -> AttribError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    at = f" at revision {revision!r}" if revision else ""
    return AttribError(
        f"cannot load {what} {source!r}{at}: {first[:300]} "
        "(check the id or path; without network access use a local folder)"
    )


def cached_file(source: str, filename: str, revision: str | None = None) -> str | None:
    """The path of a hub repo's file in huggingface_hub's cache, or None (not cached)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(source, filename, revision=revision)
    except Exception:  # not a valid repo id
        return None
    return found if isinstance(found, str) else None


def pinned_snapshot(source: str, revision: str | None) -> str | None:
    """The cache folder of a hub model pinned to a full commit hash whose config and
    safetensors weights are all cached, else None. A commit cannot change, so loading from
    the folder is loading the same files without asking the hub anything (transformers would
    otherwise probe for adapter_config.json and check every file for updates)."""
    import json
    import re

    if revision is None or not re.fullmatch(r"[0-9a-f]{40}", revision):
        return None
    config = cached_file(source, "config.json", revision)
    if config is None:
        return None
    folder = Path(config).parent
    if (folder / "model.safetensors").is_file():
        return str(folder)
    index = folder / "model.safetensors.index.json"
    try:
        shards = set(json.loads(index.read_text())["weight_map"].values())
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    return str(folder) if all((folder / name).is_file() for name in shards) else None


def resolved_commit(source: str, revision: str | None, filename: str) -> str | None:
    """The commit a hub id was loaded from: the snapshot folder huggingface_hub's cache holds
    `filename` in (loading put it there, or found it there offline). None for local folders.
    transformers 5 no longer records it on the config, so attrib looks it up here."""
    if Path(source).expanduser().exists():
        return None
    found = cached_file(source, filename, revision)
    if found is None:
        return None
    snapshot = Path(found).parent
    while snapshot.parent.name != "snapshots" and snapshot != snapshot.parent:
        snapshot = snapshot.parent  # files in subfolders (a pipeline's unet/...)
    return snapshot.name if snapshot.parent.name == "snapshots" else None


def fingerprint(source: str, commit: str | None) -> str:
    """A string that changes when the weights change."""
    if commit:
        return f"commit:{commit}"
    path = Path(source).expanduser()
    if not path.exists():
        return "unknown"
    if path.is_file():  # e.g. one LoRA .safetensors file
        path, files = path.parent, [path]
    else:
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix in _WEIGHT_SUFFIXES and not _TRAINER_STATE.match(p.name)
        )
    total = sum(p.stat().st_size for p in files)
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(path)).encode())
        if total <= _FULL_HASH_LIMIT:
            with open(file, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        else:
            stat = file.stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns}".encode())
    kind = "sha256" if total <= _FULL_HASH_LIMIT else "stat"
    return f"{kind}:{digest.hexdigest()[:32]}"


def absolute_if_local(source: str) -> str:
    path = Path(source).expanduser()
    return str(path.resolve()) if path.exists() else source
