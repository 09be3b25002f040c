"""The weights artifact: a small safetensors file, one non-negative weight per group.

Tensors: `weights` (M,) float32. Metadata (strings, JSON where structured): `groups` (names
in order), `module_to_group` (every module of the store it was learned on -> its group), and
what made it: method, k, lambda, model, store fingerprint, attrib version. A weight vector is
tied to group names, not to a method: weights learned with one method apply to another on the
same architecture (the paper's Tables 11-12).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from attrib import __version__
from attrib.atomic import atomic_path
from attrib.errors import AttribError
from attrib.jsonio import parse_json


@dataclass
class WeightsArtifact:
    weights: np.ndarray  # (M,) non-negative
    groups: list[str]
    module_to_group: dict[str, str]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, dtype=np.float32)
        if self.weights.shape != (len(self.groups),):
            raise AttribError("the weights file has a different number of weights and groups")
        if not np.isfinite(self.weights).all() or (self.weights < 0).any():
            raise AttribError("the weights file holds negative, NaN or infinite weights")
        if not self.weights.max(initial=0.0) >= np.finfo(np.float32).tiny:
            # All zero, or only subnormal values: every score would be 0 or lose its digits.
            raise AttribError(
                "the weights file holds only zeros or subnormal values (every score would be 0)"
            )
        unknown = set(self.module_to_group.values()) - set(self.groups)
        if unknown:
            raise AttribError(f"the weights file maps modules to unknown groups {sorted(unknown)}")

    def module_weights(self, modules: list[str]) -> np.ndarray:
        """One weight per store module, refusing a store whose modules differ. An ensemble
        store's `member-J/` modules take their module's weight (weights learned on one
        checkpoint apply to its ensemble)."""
        from attrib.store.ensemble import member_module

        if not any(m in self.module_to_group for m in modules):
            modules = [member_module(m) for m in modules]
        else:
            modules = list(modules)
        missing = [m for m in modules if m not in self.module_to_group]
        extra = [m for m in self.module_to_group if m not in set(modules)]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"store modules without a weight: {_few(missing)}")
            if extra:
                parts.append(f"weighted modules not in the store: {_few(extra)}")
            raise AttribError(
                "the weights do not match the store's groups (" + "; ".join(parts) + "); "
                "learn weights on a store of the same model and modules"
            )
        index = {g: i for i, g in enumerate(self.groups)}
        return np.array([self.weights[index[self.module_to_group[m]]] for m in modules])


def _few(names: list[str], count: int = 4) -> str:
    shown = ", ".join(names[:count])
    return shown + (f" and {len(names) - count} more" if len(names) > count else "")


FORMAT_KEY = "attrib-weights/2"


def save_weights(path: Path, artifact: WeightsArtifact) -> None:
    """One metadata key holding sorted JSON: safetensors writes several keys in a random
    order, and the same weights must give the same bytes (CLI == library, reruns)."""
    record = {
        "groups": artifact.groups,
        "module_to_group": artifact.module_to_group,
        "info": artifact.info,
        "attrib_version": __version__,
    }
    metadata = {FORMAT_KEY: json.dumps(record, sort_keys=True)}
    weights = {"weights": torch.from_numpy(artifact.weights.copy())}
    with atomic_path(path) as tmp:
        save_file(weights, str(tmp), metadata=metadata)


def load_weights(path: Path) -> WeightsArtifact:
    path = Path(path)
    if not path.is_file():
        raise AttribError(f"--weights {path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise AttribError(f"--weights {path} is not a safetensors file ({exc})") from None
    what = f"--weights {path}: its metadata"
    if FORMAT_KEY in metadata:
        record = parse_json(metadata[FORMAT_KEY], what)
    elif metadata.get("format") == "attrib-weights/1":  # one JSON value per key
        keys = ("groups", "module_to_group", "info")
        record = {k: parse_json(metadata.get(k, "{}"), what, None) for k in keys}
    else:
        record = None
    shapes = {"groups": list, "module_to_group": dict, "info": dict}
    if (
        not isinstance(record, dict)
        or "weights" not in tensors
        or any(not isinstance(record.get(k, {}), t) for k, t in shapes.items())
        or "groups" not in record
        or "module_to_group" not in record
    ):
        raise AttribError(f"--weights {path} is not an attrib weights file")
    return WeightsArtifact(
        tensors["weights"].float().numpy(),
        record["groups"],
        record["module_to_group"],
        record.get("info", {}),
    )
