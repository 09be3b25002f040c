"""Kronecker factors for K-FAC / EK-FAC, accumulated while featurizing.

For a linear map with inputs x and output gradients dy (per token or pixel), K-FAC
approximates the Fisher block by A (x) S with A = E[x x^T] and S = E[dy dy^T]. attrib keeps
them in the space the stored features live in: P_in^T A P_in and P_out^T S P_out on the
factored path (p x p per side), unprojected with `--proj-dim full`. Only positions that
received a gradient count (padding tokens do not). Sums are kept per shard in
`STORE/factors/<shard>.safetensors`, so resumed and multi-process runs add up to the same totals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from attrib.atomic import atomic_path

FACTOR_DIR = "factors"


@dataclass
class Factors:
    a: torch.Tensor  # (k_in x k_in) sum of x x^T, float64
    s: torch.Tensor  # (k_out x k_out) sum of dy dy^T, float64
    a_count: float = 0.0
    s_count: float = 0.0

    @classmethod
    def zeros(cls, k_out: int, k_in: int, device) -> Factors:
        z = torch.zeros
        return cls(
            z(k_in, k_in, dtype=torch.float64, device=device),
            z(k_out, k_out, dtype=torch.float64, device=device),
        )

    def update(self, x_rows: torch.Tensor, dy_rows: torch.Tensor) -> None:
        x_rows, dy_rows = x_rows.double(), dy_rows.double()
        self.a += x_rows.T @ x_rows
        self.s += dy_rows.T @ dy_rows
        self.a_count += len(x_rows)
        self.s_count += len(dy_rows)

    def add(self, other: Factors) -> None:
        self.a += other.a.to(self.a.device)
        self.s += other.s.to(self.s.device)
        self.a_count += other.a_count
        self.s_count += other.s_count

    def means(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a / max(self.a_count, 1.0), self.s / max(self.s_count, 1.0)


def shard_factor_path(store: Path, shard_file: str) -> Path:
    return Path(store) / FACTOR_DIR / (Path(shard_file).stem + ".safetensors")


def save_factors(path: Path, factors: dict[str, Factors]) -> None:
    tensors = {}
    for name, f in factors.items():
        tensors[f"a.{name}"] = f.a.cpu().contiguous()
        tensors[f"s.{name}"] = f.s.cpu().contiguous()
        tensors[f"n.{name}"] = torch.tensor([f.a_count, f.s_count], dtype=torch.float64)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))


def load_factors(path: Path) -> dict[str, Factors]:
    tensors = load_file(str(path))
    out = {}
    for key in tensors:
        if key.startswith("a."):
            name = key[2:]
            counts = tensors[f"n.{name}"]
            out[name] = Factors(
                tensors[key], tensors[f"s.{name}"], float(counts[0]), float(counts[1])
            )
    return out


def total_factors(store) -> dict[str, Factors]:
    """The factors summed over every shard of a complete store."""
    from attrib.errors import AttribError

    total: dict[str, Factors] = {}
    for shard in store.shards:
        path = shard_factor_path(store.path, shard.file)
        if not path.exists():
            raise AttribError(
                f"{store.path} has no Kronecker factors for shard {shard.file}; featurize with "
                "--method kfac or ekfac (factored projection or --proj-dim full)"
            )
        for name, f in load_factors(path).items():
            if name in total:
                total[name].add(f)
            else:
                total[name] = f
    return total
