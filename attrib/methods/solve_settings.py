"""What `--solver` asks of an iterative solve (methods/solvers.py), without importing torch:
the options that `--help` builds read it."""

from __future__ import annotations

from dataclasses import dataclass

SOLVERS = ("none", "cg", "astra", "lissa")


@dataclass(frozen=True)
class SolveSettings:
    """What `--solver`, `--iterations`, `--tolerance` and `--curvature-rows` ask for."""

    solver: str = "cg"
    iterations: int = 20
    tolerance: float = 1e-3
    rows: int | None = None  # training rows G is averaged over (None: all)
    batch_size: int = 16
