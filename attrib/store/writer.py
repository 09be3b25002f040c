"""Creating, resuming and finishing a store, from one process or several.

Shard boundaries are a pure function of (example count, shard size), and worker w of W (a
process of a launch, within a task of an array job) writes shards w, w+W, w+2W, ...: so a
resumed or multi-process run writes exactly the shards, rows and values of an uninterrupted
single-process run. Each worker lists what it wrote in a small `.rank-W.json`; the main
process merges those into the manifest once, at the end. Under an array job the tasks share
the folder (a shared lock each) and the task that finds every shard written merges.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from attrib import __version__
from attrib.atomic import clean_stale, temporary_dir
from attrib.errors import AttribError
from attrib.store import replace, shards
from attrib.store.lock import lock_store, probe_unlocked, unlock_store
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
        self.target = Path(path)  # where the store ends up
        self.path = self.target  # where this run writes: a staging folder while replacing
        self.settings, self.schema = settings, schema
        self.command = command
        self.options = options  # every option of the run that made it (not compared on resume)
        self.created = False  # this run makes the folder (so a bad-input failure removes it)
        self.complete = False  # an equal, complete, intact store is already there
        self.locked = False  # this process holds the store's write lock
        self.known: dict[str, str] = {}  # shard file -> sha256 a complete manifest recorded

    # -- before any work -----------------------------------------------------------------
    def check(self, overwrite: bool) -> None:
        """Decide what to do with `path`; every rank runs this before anything is written."""
        replace.recover(self.target)
        if _absent_or_empty(self.target):
            self.created = True
            return
        if not replace.is_attrib_store(self.target):
            raise AttribError(
                f"--out {self.target} exists and is not an attrib store; attrib only replaces "
                "stores it made: choose another --out"
            )
        if overwrite:  # build beside the old store; swap it in when complete
            self.path = replace.staging(self.target)
            clean_stale(self.path)  # a killed run's temporary beside the staging folder
            if self.path.exists():
                # Another run may be building it right now: never remove a live writer's work.
                probe_unlocked(self.path)
            if _absent_or_empty(self.path) or not replace.is_attrib_store(self.path):
                if self.path.exists() and not replace.holds_only_store_files(self.path):
                    raise AttribError(
                        f"{self.path} holds files attrib did not write; move it away and rerun"
                    )
                shutil.rmtree(self.path, ignore_errors=True)
                self.created = True
                return
            old = read_json(self.path / MANIFEST)
            if settings_diff(old.get("settings", {}), self.settings):
                shutil.rmtree(self.path, ignore_errors=True)  # another replacement, abandoned
                self.created = True
                return
        else:
            old = read_json(self.path / MANIFEST)
            if old.get("format_version") != FORMAT_VERSION:
                raise AttribError(
                    f"--out {self.path} has store format {old.get('format_version')}; "
                    "pass --overwrite to replace it"
                )
            differing = settings_diff(old.get("settings", {}), self.settings)
            if differing:
                shown = ", ".join(differing[:6]) + (" ..." if len(differing) > 6 else "")
                raise AttribError(
                    f"--out {self.path} holds a store made with other settings ({shown}); "
                    "pass --overwrite to replace it or choose another --out"
                )
        if old.get("complete"):
            self.known = {s["file"]: s["sha256"] for s in old.get("shards", [])}
            self.complete = self._intact()

    def _intact(self) -> bool:
        """A complete store whose files still match their checksums (else it is resumed)."""
        for file, digest in self.known.items():
            path = self.path / SHARD_DIR / file
            if not path.is_file() or shards.sha256(path) != digest:
                return False
        return True

    def create(self, shared: bool = False) -> None:
        """Main process only: make the folder (whole: shards/ and the first manifest appear at
        once, so a kill leaves no folder that no run accepts) and take the write lock; `shared`
        (an array job's tasks): another task may have made it, and the lock is shared."""
        if self.created:
            tmp = temporary_dir(self.path)
            try:
                (tmp / SHARD_DIR).mkdir()
                write_json_atomic(tmp / MANIFEST, self._manifest(complete=False, shards=[]))
                if self.path.is_dir() and not any(self.path.iterdir()):
                    self.path.rmdir()
                _rename_into_place(tmp, self.path, self.target, shared and self._same_settings)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)  # gone after the rename
        lock_store(self.path, exclusive=not shared)
        self.locked = True
        if self.known:  # a complete store failed its checksums (check()): mark it incomplete
            write_json_atomic(self.path / MANIFEST, self._manifest(complete=False, shards=[]))

    # -- shards ----------------------------------------------------------------------------
    def ranges(self) -> list[tuple[int, int]]:
        """Every shard's rows; the processes of a launch share them (attrib/execution.py)."""
        return shard_ranges(self.settings["num_examples"], self.settings["shard_size"])

    def shard_path(self, start: int, end: int) -> Path:
        return self.path / SHARD_DIR / shard_name(start, end)

    def resumable(self, start: int, end: int) -> ShardRecord | None:
        """The record of a complete shard an earlier run left, or None (removing a bad one:
        unreadable, other rows, or bytes that differ from a recorded checksum)."""
        path = self.shard_path(start, end)
        for leftover in path.parent.glob(f".{path.name}.*.part"):  # from a killed writer
            leftover.unlink(missing_ok=True)
        if not path.exists():
            return None
        if shards.verify(path, self.schema, start, end):
            digest = shards.sha256(path)
            if self.known.get(path.name, digest) == digest:
                return ShardRecord(path.name, start, end, digest)
        path.unlink()
        return None

    def write_shard(self, start: int, end: int, data: pa.Table) -> ShardRecord:
        path = self.shard_path(start, end)
        return ShardRecord(path.name, start, end, shards.write_atomic(path, data))

    def _same_settings(self) -> bool:
        """The folder another array task made holds a store with these settings."""
        found = read_json(self.target / MANIFEST) if (self.target / MANIFEST).is_file() else {}
        return not settings_diff(found.get("settings", {}), self.settings)

    # -- after the work ----------------------------------------------------------------------
    def report(self, worker: int, records: list[ShardRecord]) -> None:
        write_json_atomic(self._rank_file(worker), {"shards": [asdict(r) for r in records]})

    def merged_records(self, workers: int, array: bool) -> list[dict] | None:
        """Every shard's record, from the workers' reports. Under an array job (`array`) a
        shard another task wrote and has not reported yet is read back and checked; None
        while shards are missing (the other tasks write them)."""
        records = []
        for worker in range(workers):
            path = self._rank_file(worker)
            if not array:
                records += read_json(path)["shards"]
            elif path.is_file():
                try:  # another task may be merging, and removing the reports, right now
                    records += read_json(path)["shards"]
                except (AttribError, OSError):
                    continue  # its shards are read back below
        if array:
            seen = {(r["start"], r["end"]) for r in records}
            for start, end in self.ranges():
                if (start, end) not in seen:
                    if not self.shard_path(start, end).exists():
                        return None  # (its writer's temporary is left alone: it may be live)
                    record = self.resumable(start, end)
                    if record is None:
                        return None
                    records.append(asdict(record))
        records.sort(key=lambda r: r["start"])
        if [(r["start"], r["end"]) for r in records] != self.ranges():
            raise RuntimeError("the workers' shards do not cover the dataset exactly once")
        return records

    def is_complete(self) -> bool:
        return bool(read_json(self.path / MANIFEST).get("complete"))

    def finish(self, records: list[dict], made_by: dict) -> None:
        """Main process only: the final manifest from every shard's record."""
        manifest = self._manifest(complete=True, shards=records)
        manifest["world_size"] = made_by["processes"]
        if "array_tasks" in made_by:
            manifest["array_tasks"] = made_by["array_tasks"]
        if made_by.get("fsdp"):
            manifest["fsdp"] = True
        write_json_atomic(self.path / MANIFEST, manifest)
        for report in self.path.glob(".rank-*.json"):  # an earlier launch's too (resumed)
            report.unlink(missing_ok=True)
        if "array_tasks" not in made_by:  # an array's other tasks may still be writing theirs
            self._clean_temporaries()
        unlock_store(self.path)
        if self.path != self.target:
            replace.swap_in(self.target, self.path)
            unlock_store(self.target)  # the retired store's lock
            self.path = self.target

    def discard(self) -> None:
        """After bad input: remove the folder if this run made it, else only temporary files
        (never another live writer's: only while holding the lock)."""
        if not self.locked:
            return
        if self.created and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            self._clean_temporaries()
        unlock_store(self.path)

    def _clean_temporaries(self) -> None:
        for part in (self.path / SHARD_DIR).glob(".*.part"):
            part.unlink(missing_ok=True)
        for part in self.path.glob(".*.part"):  # a killed run's rank report or manifest
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


def _absent_or_empty(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def _rename_into_place(tmp: Path, path: Path, target: Path, shared=None) -> None:
    """`shared`: a check that the folder another run made meanwhile is the same store (an
    array job's other task), which this run then writes into too."""
    try:
        os.rename(tmp, path)  # fails if another run made the folder meanwhile
    except OSError:
        if shared and shared():
            return
        raise AttribError(f"--out {target} was created by another run at the same time") from None
