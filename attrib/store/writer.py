"""Creating, resuming and finishing a store, from one process or several.

Shard boundaries are a pure function of (example count, shard size), and rank r of W writes
shards r, r+W, r+2W, ...: so a resumed or multi-process run writes exactly the shards, rows and
values of an uninterrupted single-process run. Each rank lists what it wrote in a small
`.rank-R.json`; rank 0 merges those into the manifest once, at the end.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from attrib import __version__
from attrib.errors import AttribError
from attrib.store import shards
from attrib.store.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    SHARD_DIR,
    read_json,
    settings_diff,
    shard_name,
    shard_ranges,
    write_json_atomic,
)


@dataclass
class ShardRecord:
    file: str
    start: int
    end: int
    sha256: str


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class StoreWriter:
    def __init__(
        self,
        path: Path,
        settings: dict,
        schema: pa.Schema,
        command: list[str],
        options: dict | None = None,
    ):
        self.path, self.settings, self.schema = Path(path), settings, schema
        self.command = command
        self.options = options  # every option of the run that made it (not compared on resume)
        self.created = False  # this run made the folder (so a bad-input failure removes it)
        self.complete = False  # an equal, complete store was already there

    # -- before any work -----------------------------------------------------------------
    def check(self, overwrite: bool) -> None:
        """Decide what to do with `path`; every rank runs this before anything is written."""
        manifest = self.path / MANIFEST
        if not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir())):
            self.created = True
            return
        if not self.path.is_dir() or not manifest.exists():
            raise AttribError(
                f"--out {self.path} exists and is not an attrib store; choose another folder"
            )
        if overwrite:
            self.created = True
            return
        try:
            old = read_json(manifest)
        except ValueError:
            raise AttribError(
                f"{manifest} is unreadable; pass --overwrite to start again"
            ) from None
        if old.get("format_version") != FORMAT_VERSION:
            raise AttribError(
                f"--out {self.path} has store format {old.get('format_version')}; "
                "pass --overwrite to start again"
            )
        differing = settings_diff(old.get("settings", {}), self.settings)
        if differing:
            shown = ", ".join(differing[:6]) + (" ..." if len(differing) > 6 else "")
            raise AttribError(
                f"--out {self.path} holds a store made with other settings ({shown}); "
                "pass --overwrite to replace it or choose another --out"
            )
        self.complete = bool(old.get("complete"))

    def create(self) -> None:
        """Rank 0 only: (re)make the folder and write the incomplete manifest."""
        if not self.created:
            return
        if self.path.exists():
            shutil.rmtree(self.path)
        (self.path / SHARD_DIR).mkdir(parents=True)
        write_json_atomic(self.path / MANIFEST, self._manifest(complete=False, shards=[]))

    # -- shards ----------------------------------------------------------------------------
    def my_ranges(self, rank: int, world_size: int) -> list[tuple[int, int]]:
        ranges = shard_ranges(self.settings["num_examples"], self.settings["shard_size"])
        return ranges[rank::world_size]

    def shard_path(self, start: int, end: int) -> Path:
        return self.path / SHARD_DIR / shard_name(start, end)

    def resumable(self, start: int, end: int) -> ShardRecord | None:
        """The record of a complete shard an earlier run left, or None (removing a bad one)."""
        path = self.shard_path(start, end)
        for leftover in path.parent.glob(f".{path.name}.*.part"):  # from a killed writer
            leftover.unlink(missing_ok=True)
        if not path.exists():
            return None
        if shards.verify(path, self.schema, start, end):
            return ShardRecord(path.name, start, end, shards.sha256(path))
        path.unlink()
        return None

    def write_shard(self, start: int, end: int, data: pa.Table) -> ShardRecord:
        path = self.shard_path(start, end)
        return ShardRecord(path.name, start, end, shards.write_atomic(path, data))

    # -- after the work ----------------------------------------------------------------------
    def report(self, rank: int, records: list[ShardRecord]) -> None:
        write_json_atomic(self._rank_file(rank), {"shards": [asdict(r) for r in records]})

    def finish(self, world_size: int) -> None:
        """Rank 0 only: merge the ranks' reports into the final manifest."""
        records = []
        for rank in range(world_size):
            records += read_json(self._rank_file(rank))["shards"]
        records.sort(key=lambda r: r["start"])
        expected = shard_ranges(self.settings["num_examples"], self.settings["shard_size"])
        if [(r["start"], r["end"]) for r in records] != expected:
            raise RuntimeError("the ranks' shards do not cover the dataset exactly once")
        manifest = self._manifest(complete=True, shards=records)
        manifest["world_size"] = world_size
        write_json_atomic(self.path / MANIFEST, manifest)
        for rank in range(world_size):
            self._rank_file(rank).unlink(missing_ok=True)

    def discard(self) -> None:
        """After bad input: remove the folder if this run made it, else only temporary files."""
        if self.created and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for part in (self.path / SHARD_DIR).glob(".*.part"):
            part.unlink(missing_ok=True)

    def _rank_file(self, rank: int) -> Path:
        return self.path / f".rank-{rank}.json"

    def _manifest(self, complete: bool, shards: list) -> dict:
        previous = {}
        if (self.path / MANIFEST).exists():
            previous = read_json(self.path / MANIFEST)
        return {
            "format_version": FORMAT_VERSION,
            "attrib_version": __version__,
            "command": self.command or sys.argv,
            "options": self.options,
            "created": previous.get("created", _now()),
            "finished": _now() if complete else None,
            "complete": complete,
            "settings": self.settings,
            "shards": shards,
        }
