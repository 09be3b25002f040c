"""A `--solver` solve's state, saved beside the store after every step (safetensors): a
killed solve, or one rerun with more `--iterations`, resumes where it stopped, and a solve
that finished answers a rerun at once. Keyed by the store, the solved vectors, the solver,
the damping and the rows G is averaged over, so another system never reads it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from attrib.methods.kernels import CACHE_DIR
from attrib.store import Store

STATE_VERSION = 1


class SolveState:
    def __init__(self, store: Store, b: torch.Tensor, solver: str, damping: float, rows):
        digest = hashlib.sha256(b.double().cpu().contiguous().numpy().tobytes()).hexdigest()
        payload = {
            "v": STATE_VERSION, "store": store.content_key(), "vectors": digest,
            "solver": solver, "damping": damping, "rows": list(rows),
        }  # fmt: skip
        key = hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:16]
        self.path: Path = store.path / CACHE_DIR / f"solve-{solver}-{key}.safetensors"

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        from safetensors.torch import load_file

        return load_file(self.path)

    def save(self, state: dict) -> None:
        from safetensors.torch import save_file

        from attrib.atomic import atomic_path

        with atomic_path(self.path, ".safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in state.items()}, tmp)
