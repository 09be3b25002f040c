"""How the factored projection's features are shared among modules.

uniform: every module gets p x p features (a side no larger than p kept whole).

sqrt-size: the same total, sum over modules of min(p, d_out) * min(p, d_in), shared in
proportion to the square root of each module's size d_out * d_in (a module never gets more
than its whole gradient; what it cannot take goes to the others), and each module's k_out x
k_in follows its own aspect, k_out / k_in = d_out / d_in. A language model's output head
(1024 x 64 on the test GPT-2) then gets a wide matrix instead of 45 x 45 of a 64-wide input,
and a 64 x 65 attention projection fewer features than a 256-wide MLP. Measured on exact
gradients at one byte budget (docs/quality.md, "Sharing the features among modules"): it
ranks better than uniform on both fine-tuning tasks, by 2.2 points on pydoc and 1.9 on digits.
The sides are a function of the module shapes and p alone, so a query featurized later gets
the same ones from the store's settings, where they are recorded.
"""

from __future__ import annotations

import math
from dataclasses import replace

from attrib.errors import AttribError
from attrib.featurize.projection import ProjectionSpec
from attrib.store.module_spec import ModuleSpec


def allocate(projection: ProjectionSpec, modules: list[ModuleSpec]) -> ProjectionSpec:
    """The projection with each module's sides, for a sqrt-size allocation; as it is for a
    uniform one, or one whose sides are already set (a store's, featurizing its queries)."""
    if projection.allocation == "uniform" or not projection.factored:
        return projection
    names = [m.name for m in modules]
    if projection.sides is not None:
        if [name for name, _, _ in projection.sides] != names:
            raise AttribError(
                "the model's modules differ from those the store's projection allocates: "
                "featurize with the model (and --modules) the store was made with"
            )
        return projection
    sizes = [(m.d_out, m.d_in) for m in modules]
    counts = feature_counts(projection.dim, sizes)
    sides = tuple((name, *aspect_sides(count, d_out, d_in))
                  for name, count, (d_out, d_in) in zip(names, counts, sizes))  # fmt: skip
    return replace(projection, sides=sides)


def feature_counts(p: int, sizes: list[tuple[int, int]]) -> list[float]:
    """Features a module under sqrt-size: the uniform total split by sqrt(size), water-filled
    so that no module gets more than its whole gradient."""
    budget = float(sum(min(p, d_out) * min(p, d_in) for d_out, d_in in sizes))
    caps = [float(d_out * d_in) for d_out, d_in in sizes]
    shares = [math.sqrt(cap) for cap in caps]
    whole: set[int] = set()
    while True:
        left = budget - sum(caps[i] for i in whole)
        free = [i for i in range(len(sizes)) if i not in whole]
        total = sum(shares[i] for i in free)
        counts = {i: left * shares[i] / total for i in free} if total else {}
        over = [i for i in free if counts[i] >= caps[i]]
        if not over:
            return [caps[i] if i in whole else counts[i] for i in range(len(sizes))]
        whole.update(over)


def aspect_sides(count: float, d_out: int, d_in: int) -> tuple[int, int]:
    """k_out x k_in of about `count` features in the matrix's own aspect, within its sides."""
    if count >= d_out * d_in:
        return d_out, d_in
    k_out = min(d_out, max(1, round(math.sqrt(count * d_out / d_in))))
    return k_out, min(d_in, max(1, round(count / k_out)))
