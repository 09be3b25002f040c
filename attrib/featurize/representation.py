"""Rows in, the model's own pooled hidden states out: the features of `--method repsim`.

Representation similarity is the baseline every gradient method must beat (DATE-LM finds it
ahead of them on toxicity filtering). Its store is written and read like a gradient store:
one "module" whose features are the pooled hidden states at the task's representation site
(a language model's last layer over its predicted tokens, the features a classifier's head
reads, a UNet's mid-block averaged over positions and timesteps), never projected. The
store records `projection.kind = "representation"` (store/kinds.py).
"""

from __future__ import annotations

import torch

from attrib.featurize.batch import FeatureBatch, Featurizer
from attrib.store.kinds import REPRESENTATION
from attrib.store.module_spec import ModuleSpec
from attrib.tasks.base import Task

MODULE = "representation"  # the one module name of a representation store


class RepresentationFeaturizer:
    """The same interface as `Featurizer` (call on rows, or `from_batch`), no gradients."""

    projection = {"kind": REPRESENTATION, "dim": None, "seed": 0}  # recorded in the store

    def __init__(self, task: Task, columns: dict, output_function: str):
        self.task, self.columns, self.output_function = task, dict(columns), output_function
        self.site, self.side, width = task.representation_site()
        self.modules = [ModuleSpec(MODULE, REPRESENTATION, 1, width, False)]
        self.device = task.device

    def __call__(self, rows: dict[str, list], positions: range) -> FeatureBatch:
        batch = self.task.prepare(rows, positions, self.device, self.columns)
        return self.from_batch(batch, positions)

    def from_batch(self, batch: dict, positions: range) -> FeatureBatch:
        seen: list[torch.Tensor] = []

        def keep(hidden) -> None:
            seen.append(self.task.pool_representation(hidden.detach(), batch).float())

        if self.side == "input":
            hook = self.site.register_forward_pre_hook(lambda _m, args: keep(args[0]))
        else:
            hook = self.site.register_forward_hook(lambda _m, _args, out: keep(out))
        scalars: dict[str, torch.Tensor] = {}
        count = 0
        try:
            with torch.no_grad():
                for output in self.task.passes(batch, self.output_function):
                    for name, value in output.scalars.items():
                        value = value.float()
                        scalars[name] = value if name not in scalars else scalars[name] + value
                    count += 1
        finally:
            hook.remove()
        # The mean over passes (a diffusion model's timesteps), like gradients are averaged.
        features = {MODULE: torch.stack(seen).mean(0)}
        scalars = {k: v / max(count, 1) for k, v in scalars.items()}
        return FeatureBatch(positions, features, scalars)


def featurizer_for(task: Task, columns: dict, selected, projection, output_function: str,
                   factors: bool = False, representation: bool = False):  # fmt: skip
    """The featurizer a store's kind needs: hidden states, or projected gradients."""
    if representation:
        return RepresentationFeaturizer(task, columns, output_function)
    return Featurizer(task, columns, selected, projection, output_function, factors)
