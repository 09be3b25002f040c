"""The rows of every step of a recorded run: a function of the row count and the recipe (its
seed, epochs and batch size), so a recorded batches.npz can be checked against it."""

from __future__ import annotations

import numpy as np

from attrib.errors import AttribError
from attrib.memory import GIB, size
from attrib.training.recipe import Recipe

ROW_BYTES = 8  # one int64 per row visit, in memory and in batches.npz


def _recipe(recipe: Recipe | dict) -> Recipe:
    return recipe if isinstance(recipe, Recipe) else Recipe(**recipe)


def check_batches_fit(count: int, recipe: Recipe, memory_gb: float) -> None:
    """Refuse, before building them, batches whose record would not fit the memory budget
    (`--epochs 100000000` used to build every batch and die with a MemoryError)."""
    needed = recipe.epochs * count * ROW_BYTES
    if needed > memory_gb * GIB:
        raise AttribError(
            f"--epochs {recipe.epochs} over {count} rows makes {recipe.epochs * count:,} row "
            f"visits, whose record takes {size(needed)}, more than --memory-gb {memory_gb:g}; "
            "lower --epochs or --max-examples"
        )


def make_batches(count: int, recipe: Recipe | dict) -> list[np.ndarray]:
    """Every step's rows of a recorded run over rows 0..count-1."""
    recipe = _recipe(recipe)
    return epoch_batches(np.arange(count), recipe, recipe.seed)


def epoch_batches(positions: np.ndarray, recipe: Recipe, seed: int) -> list[np.ndarray]:
    """The rows of every step: each epoch a permutation of `positions` drawn from `seed`,
    cut into batches (retraining on a subset draws from its own seed)."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(recipe.epochs):
        order = rng.permutation(positions)
        batches += [
            order[s : s + recipe.batch_size] for s in range(0, len(order), recipe.batch_size)
        ]
    return batches
