"""A ground truth's part files: one per subset (and seed), written atomically into OUT.parts/,
so a killed run resumes and every process of a launch, and every array job, shares one
folder. Shared by `evaluate retrain` and its same-run form."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attrib import log
from attrib.atomic import atomic_path
from attrib.execution import Execution


def make_masks(num_examples: int, subsets: int, alpha: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keep = max(1, round(alpha * num_examples))
    masks = np.zeros((subsets, num_examples), dtype=bool)
    for m in range(subsets):
        masks[m, rng.permutation(num_examples)[:keep]] = True
    return masks


def part_path(parts: Path, subset: int, replicate: int = 0) -> Path:
    suffix = f"-seed{replicate}" if replicate else ""
    return parts / f"subset-{subset:05d}{suffix}.npy"


def read_back(path: Path) -> np.ndarray | None:
    """A saved array, or None when it is missing or does not read back whole (a kill or a
    full disk cut it short): such a piece of work is done again."""
    if not path.is_file():
        return None
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None


def part_done(parts: Path, subset: int, replicate: int = 0, queries: int | None = None) -> bool:
    """A part counts when it reads back whole: a damaged one is made again."""
    values = read_back(part_path(parts, subset, replicate))
    return values is not None and values.ndim == 1 and (queries is None or len(values) == queries)


def save_part(parts: Path, subset: int, replicate: int, values: np.ndarray) -> None:
    with atomic_path(part_path(parts, subset, replicate)) as tmp, open(tmp, "wb") as handle:
        np.save(handle, values.astype(np.float64))


def load_part(parts: Path, subset: int, replicate: int = 0) -> np.ndarray:
    return np.load(part_path(parts, subset, replicate), allow_pickle=False)


def say_cost(count: int, seconds: float) -> None:
    total = count * seconds
    hours, minutes = divmod(round(total / 60), 60)
    span = f"{hours} h {minutes} min" if hours else f"{max(minutes, 1)} min"
    if total < 120:  # "~1 min" for 37 s of work read as 60% too long
        span = f"{total:.0f} s"
    log.info(
        f"{count} models, ~{seconds:.0f} s each here: ~{span} in all; --subsets trades "
        "accuracy for time, and a killed run resumes where it stopped"
    )


def all_parts_done(
    execution: Execution, parts: Path, subsets: int, seeds: int, queries: int, out: Path
) -> bool:
    """After this worker's subsets: True on the one process that is to write the ground truth
    `out` (every part is there, and no other array task merges them); the launch's other
    processes, and an array task that finds parts missing or the merge taken, finish here."""
    execution.barrier()
    if execution.is_writer:
        done = sum(part_done(parts, m, r, queries) for m in range(subsets) for r in range(seeds))
        if done == subsets * seeds:
            if execution.claim_merge(parts, out):
                return True
        else:
            log.info(f"{done} of {subsets * seeds} models done in {parts}; run the other shards")
    execution.finish()
    return False
