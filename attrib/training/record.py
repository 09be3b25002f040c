"""The run record: what `attrib train` writes so its run can be replayed exactly, verified on
every read as a store is.

RUN/
  run.json            recipe, model and data (with fingerprints), task options and columns,
                      steps, snapshot steps, library versions, device, threads, `complete`,
                      and `files`: every file below with its size and sha256
  batches.npz         the rows of every step: `rows` (all steps' rows, concatenated) and
                      `offsets` (step t's rows are rows[offsets[t]:offsets[t+1]])
  snapshots/step-NNNNNNNN.safetensors
                      trainable parameters (`param.NAME`), optimizer state (`STATE.NAME`)
                      and buffers such as normalization statistics (`buffer.NAME`) before
                      step N (the last one: after the final step)
  model/              the trained checkpoint in Hugging Face format (featurize reads it)

Opening a run checks run.json's structure (`runs.meta_check`) and that every listed file is
there with its size; each file's sha256 is compared when it is read (once per process and
file version), so a file copied from another run, truncated or replaced is named in one line.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attrib import log
from attrib.atomic import atomic_path, write_text
from attrib.errors import AttribError
from attrib.jsonio import load_json
from attrib.training.meta_check import check_meta, damaged

RUN_FILE = "run.json"
FORMAT = "attrib-run/2"
OLD_FORMATS = ("attrib-run/1",)  # no `files`: read without checksums, with a warning
BATCHES = "batches.npz"
_verified: set[tuple[str, int, int, str]] = set()  # (path, size, mtime_ns, sha256) seen intact


def snapshot_name(step: int) -> str:
    return f"snapshots/step-{step:08d}.safetensors"


def snapshot_path(run: Path, step: int) -> Path:
    return Path(run) / snapshot_name(step)


def file_entry(path: Path) -> dict:
    from attrib.store.shards import sha256

    return {"size": path.stat().st_size, "sha256": sha256(path)}


def save_snapshot(run: Path, step: int, params: dict, state: dict, buffers: dict) -> dict:
    """Write the state before `step`; returns its file entry for run.json."""
    from safetensors.torch import save_file

    tensors = {f"param.{k}": v for k, v in params.items()}
    tensors.update({f"{k}": v for k, v in state.items()})
    tensors.update({f"buffer.{k}": v for k, v in buffers.items()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    path = snapshot_path(run, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
    return file_entry(path)


def save_batches(run: Path, batches: list[np.ndarray]) -> dict:
    offsets = np.cumsum([0] + [len(b) for b in batches]).astype(np.int64)
    rows = np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, np.int64)
    path = Path(run) / BATCHES
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, rows=rows, offsets=offsets)
    return file_entry(path)


def environment(device: torch.device) -> dict:
    import transformers

    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
    }


@dataclass
class Run:
    """A recorded run, opened for replay."""

    path: Path
    meta: dict

    @classmethod
    def open(cls, path: Path) -> Run:
        path = Path(path)
        if not (path / RUN_FILE).is_file():
            raise AttribError(
                f"{path} is not a run attrib recorded (no {RUN_FILE}); `attrib train`"
            )
        meta = read_meta(path)
        if meta.get("complete") is not True:
            raise AttribError(f"{path}: the run did not finish; run the same `attrib train` again")
        run = cls(path, meta)
        if meta.get("files") is None:
            log.warn(f"{path} was recorded before runs had checksums: its files are not verified")
        else:
            run.check_sizes()
        return run

    @property
    def steps(self) -> int:
        return int(self.meta["steps"])

    @property
    def snapshots(self) -> list[int]:
        return [int(s) for s in self.meta["snapshots"]]

    @property
    def seed(self) -> int:
        return int(self.meta["recipe"]["seed"])

    @property
    def rows(self) -> int:
        return int(self.meta["rows"])

    @property
    def checkpoint(self) -> Path:
        return self.path / "model"

    def identity(self) -> str:
        """What makes this run this run (its settings and every file's checksum): results
        derived from it (magic's blocks, same-run parts) are bound to it."""
        import hashlib

        keep = {k: v for k, v in self.meta.items() if k not in ("environment", "seconds")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:32]

    def check_sizes(self) -> None:
        """Every file of a complete run is listed, and there with its recorded size (cheap:
        nothing is read)."""
        files = self.meta["files"]
        needed = [snapshot_name(s) for s in self.snapshots] + [BATCHES]
        unlisted = [n for n in needed if n not in files]
        if not any(n.startswith("model/") for n in files):
            unlisted.append("model/")
        if unlisted:
            raise damaged(self.path, f"{unlisted[0]} is not listed in its {RUN_FILE}")
        for name, entry in files.items():
            file = self.path / name
            if not file.is_file():
                raise damaged(self.path, f"{name} is missing")
            if file.stat().st_size != entry["size"]:
                raise damaged(
                    self.path, f"{name} is {file.stat().st_size} bytes, not {entry['size']}"
                )

    def verified(self, name: str) -> Path:
        """The path of a listed file whose bytes match run.json's sha256 (once per process)."""
        file = self.path / name
        if not file.is_file():
            raise damaged(self.path, f"{name} is missing")
        files = self.meta.get("files")
        if files is None:
            return file
        entry = files.get(name)
        if entry is None:
            raise damaged(self.path, f"{name} is not listed in its {RUN_FILE}")
        stat = file.stat()
        key = (str(file.resolve()), stat.st_size, stat.st_mtime_ns, entry["sha256"])
        if key not in _verified:
            if file_entry(file) != {"size": entry["size"], "sha256": entry["sha256"]}:
                raise damaged(self.path, f"{name} differs from its checksum")
            _verified.add(key)
        return file

    def verify_all(self) -> None:
        for name in self.meta.get("files") or {}:
            self.verified(name)

    def load_snapshot(self, step: int) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        name = snapshot_name(step)
        path = self.verified(name)
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors' own error types differ by version
            raise damaged(self.path, f"{name} is not a readable snapshot ({exc})") from None

    def batches(self) -> list[np.ndarray]:
        """Every step's rows, checked: in range, whole numbers, and the batches the recipe's
        seed makes (a batches.npz of another run or permutation is refused)."""
        from attrib.training.batches import make_batches

        path = self.verified(BATCHES)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as exc:  # BadZipFile, ValueError, OSError, EOFError
            raise damaged(self.path, f"{BATCHES} is not a readable .npz ({exc})") from None
        rows, offsets = arrays.get("rows"), arrays.get("offsets")
        if rows is None or offsets is None:
            raise damaged(self.path, f"{BATCHES} lacks `rows` or `offsets`")
        for name, array in (("rows", rows), ("offsets", offsets)):
            if array.ndim != 1 or array.dtype.kind not in "iu":
                raise damaged(self.path, f"{BATCHES}: `{name}` is not a 1-D array of integers")
        if len(offsets) != self.steps + 1 or offsets[0] != 0 or offsets[-1] != len(rows):
            raise damaged(
                self.path, f"{BATCHES}: `offsets` do not cut `rows` into {self.steps} steps"
            )
        if np.any(np.diff(offsets) < 0) or (
            len(rows) and (rows.min() < 0 or rows.max() >= self.rows)
        ):
            raise damaged(self.path, f"{BATCHES}: rows out of range 0..{self.rows - 1}")
        batches = [rows[offsets[t] : offsets[t + 1]] for t in range(self.steps)]
        expected = make_batches(self.rows, self.meta["recipe"])
        if len(expected) != len(batches) or any(
            not np.array_equal(a, b) for a, b in zip(expected, batches)
        ):
            raise damaged(self.path, f"{BATCHES} is not the batches of this run's recipe and seed")
        return batches


def read_meta(path: Path) -> dict:
    """run.json, checked: its format and its structure (types, ranges, snapshot order)."""
    meta = load_json(Path(path) / RUN_FILE, f"{Path(path) / RUN_FILE}")
    if meta.get("format") not in (FORMAT, *OLD_FORMATS):
        raise AttribError(f"{path}: run format {meta.get('format')!r}, this attrib reads {FORMAT}")
    check_meta(Path(path), meta)
    return meta


def write_meta(run: Path, meta: dict) -> None:
    record = {"format": FORMAT, **{k: v for k, v in meta.items() if k != "format"}}
    write_text(Path(run) / RUN_FILE, json.dumps(record, indent=2) + "\n")
