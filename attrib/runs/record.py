"""The run record: what `attrib train` writes so its run can be replayed exactly.

RUN/
  run.json            recipe, model and data (with fingerprints), task options and columns,
                      steps, snapshot steps, library versions, device, threads, `complete`
  batches.npz         the rows of every step: `rows` (all steps' rows, concatenated) and
                      `offsets` (step t's rows are rows[offsets[t]:offsets[t+1]])
  snapshots/step-NNNNNNNN.safetensors
                      trainable parameters (`param.NAME`), optimizer state (`STATE.NAME`)
                      and buffers such as normalization statistics (`buffer.NAME`) before
                      step N (the last one: after the final step)
  model/              the trained checkpoint in Hugging Face format (featurize reads it)
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from attrib.atomic import atomic_path, write_text
from attrib.errors import AttribError
from attrib.jsonio import load_json

RUN_FILE = "run.json"
FORMAT = "attrib-run/1"


def snapshot_path(run: Path, step: int) -> Path:
    return Path(run) / "snapshots" / f"step-{step:08d}.safetensors"


def save_snapshot(run: Path, step: int, params: dict, state: dict, buffers: dict) -> None:
    tensors = {f"param.{k}": v for k, v in params.items()}
    tensors.update({f"{k}": v for k, v in state.items()})
    tensors.update({f"buffer.{k}": v for k, v in buffers.items()})
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    path = snapshot_path(run, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def load_snapshot(run: Path, step: int) -> dict[str, torch.Tensor]:
    path = snapshot_path(run, step)
    if not path.is_file():
        raise AttribError(f"{run}: snapshot {path.name} is missing; train the run again")
    return load_file(str(path))


def save_batches(run: Path, batches: list[np.ndarray]) -> None:
    offsets = np.cumsum([0] + [len(b) for b in batches]).astype(np.int64)
    rows = np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, np.int64)
    with atomic_path(Path(run) / "batches.npz", ".npz") as tmp:
        np.savez(tmp, rows=rows, offsets=offsets)


def load_batches(run: Path) -> list[np.ndarray]:
    with np.load(Path(run) / "batches.npz", allow_pickle=False) as data:
        rows, offsets = data["rows"], data["offsets"]
    return [rows[offsets[t] : offsets[t + 1]] for t in range(len(offsets) - 1)]


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
        meta = load_json(path / RUN_FILE, f"{path / RUN_FILE}")
        if meta.get("format") != FORMAT:
            raise AttribError(
                f"{path}: run format {meta.get('format')!r}, this attrib reads {FORMAT}"
            )
        if not meta.get("complete"):
            raise AttribError(f"{path}: the run did not finish; run the same `attrib train` again")
        return cls(path, meta)

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
    def checkpoint(self) -> Path:
        return self.path / "model"

    def batches(self) -> list[np.ndarray]:
        return load_batches(self.path)


def write_meta(run: Path, meta: dict) -> None:
    import json

    write_text(Path(run) / RUN_FILE, json.dumps({"format": FORMAT, **meta}, indent=2) + "\n")
