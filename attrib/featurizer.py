"""Rows in, per-example projected gradient features out: the task, the hooks and projections.

Used both by `featurize` (which writes stores) and by on-the-fly query featurization, so a
query is featurized by exactly the code and settings that made the training store.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .capture import GradientCapture
from .modules import ModuleSpec
from .projection import ProjectionSpec
from .tasks import Task


@dataclass
class FeatureBatch:
    positions: range
    features: dict[str, torch.Tensor]  # module -> (B, F) float32
    scalars: dict[str, torch.Tensor]  # name -> (B,) float32


class Featurizer:
    def __init__(
        self,
        task: Task,
        selected: list[tuple[ModuleSpec, torch.nn.Module]],
        projection: ProjectionSpec,
        output_function: str,
        factors: bool = False,
    ):
        self.task, self.output_function = task, output_function
        self.modules = [spec for spec, _ in selected]
        self.device = task.device
        self.capture = GradientCapture(selected, projection, self.device, stats=factors)

    def __call__(self, rows: dict[str, list], positions: range) -> FeatureBatch:
        batch = self.task.prepare(rows, positions, self.device)
        with torch.enable_grad(), self.capture:
            output = self.task.outputs(batch, self.output_function)
            self.capture.backward(output.values.sum())
        features = self.capture.collect(len(positions))
        scalars = {k: v.detach().float() for k, v in output.scalars.items()}
        return FeatureBatch(positions, features, scalars)
