"""The retraining ground truth file (.npz, read without pickle).

- `masks` (M x N bool): which training examples (training-store order) subset m kept;
- `outputs` (M x Q float): each query's output (query-store order) under the model trained on
  subset m;
- `higher_is_better` (bool): False for losses, True for margins;
- optional strings: `recipe` (JSON), `output_function`, `train_fingerprint`, ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attrib.atomic import atomic_path
from attrib.errors import AttribError


@dataclass
class GroundTruth:
    masks: np.ndarray
    outputs: np.ndarray
    higher_is_better: bool
    extra: dict = field(default_factory=dict)

    @property
    def subsets(self) -> int:
        return self.masks.shape[0]

    def made_for(self) -> dict:
        """The fingerprints of the stores `evaluate retrain` made it for ({"train", "queries"}),
        or {} for ground truth from elsewhere."""
        from attrib.jsonio import parse_json

        try:
            recipe = parse_json(str(self.extra.get("recipe", "{}")), "the ground truth's recipe")
        except AttribError:
            return {}
        return {k: recipe[k] for k in ("train", "queries") if isinstance(recipe.get(k), str)}

    def made_for_rows(self) -> dict:
        """The rows keys (`Store.rows_key`) of the stores it was made for, where recorded."""
        return {
            role: str(self.extra[f"{role}_rows"])
            for role in ("train", "queries")
            if f"{role}_rows" in self.extra
        }

    def check(self, num_train: int, num_queries: int, where: str) -> None:
        m, n = self.masks.shape
        if n != num_train:
            raise AttribError(
                f"{where}: masks cover {n} training examples but the training store has "
                f"{num_train}; the ground truth was made for another store"
            )
        if self.outputs.shape != (m, num_queries):
            raise AttribError(
                f"{where}: outputs are {self.outputs.shape[0]} x {self.outputs.shape[1]} but "
                f"{m} subsets x {num_queries} queries were expected (query-store order)"
            )
        if m < 2:
            raise AttribError(f"{where}: LDS needs at least 2 subsets, the file has {m}")


def load_groundtruth(path: Path) -> GroundTruth:
    path = Path(path)
    if not path.is_file():
        raise AttribError(f"--groundtruth {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise AttribError(f"--groundtruth {path} is not a readable .npz file ({exc})") from None
    missing = [k for k in ("masks", "outputs", "higher_is_better") if k not in arrays]
    if missing:
        raise AttribError(f"--groundtruth {path} lacks {', '.join(missing)}")
    masks, outputs = arrays.pop("masks"), arrays.pop("outputs")
    if masks.ndim != 2 or outputs.ndim != 2:
        raise AttribError(f"--groundtruth {path}: masks and outputs must be 2-D arrays")
    if masks.dtype != bool and not np.isin(masks, (0, 1)).all():
        raise AttribError(f"--groundtruth {path}: masks must be 0/1 (subset membership)")
    if not np.issubdtype(outputs.dtype, np.number):
        raise AttribError(f"--groundtruth {path}: outputs must be numbers")
    if not np.isfinite(outputs).all():
        bad = np.argwhere(~np.isfinite(outputs))[0]
        raise AttribError(
            f"--groundtruth {path}: output of subset {bad[0]}, query {bad[1]} is not finite"
        )
    flag = arrays.pop("higher_is_better")
    if flag.size != 1 or flag.dtype.kind not in "bui":
        raise AttribError(f"--groundtruth {path}: higher_is_better must be one boolean")
    higher = bool(flag.item())
    extra = {k: (v.item() if v.ndim == 0 else v) for k, v in arrays.items()}
    return GroundTruth(masks.astype(bool), outputs.astype(np.float64), higher, extra)


def save_groundtruth(path: Path, truth: GroundTruth) -> None:
    extra = {k: np.asarray(v) for k, v in truth.extra.items()}
    with atomic_path(path, ".npz") as part:
        np.savez(
            part,
            masks=truth.masks.astype(bool),
            outputs=truth.outputs.astype(np.float64),
            higher_is_better=np.asarray(truth.higher_is_better),
            **extra,
        )
