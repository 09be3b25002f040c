"""Rows in, per-example projected gradient features out: the task, the hooks and projections.

Used both by `featurize` (which writes stores) and by on-the-fly query featurization, so a
query is featurized by exactly the code and settings that made the training store.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attrib.featurize.allocation import allocate
from attrib.featurize.capture import GradientCapture
from attrib.featurize.projection import ProjectionSpec
from attrib.store.module_spec import ModuleSpec
from attrib.tasks.base import Task


def _normalized(projection: ProjectionSpec, model, selected):
    """The projection with its normalizer's digest, and the per-module scales; a digest
    already recorded (a store's queries, featurized later) must be met again."""
    from dataclasses import replace

    from attrib.errors import AttribError
    from attrib.featurize.normalizer import digest, module_scales

    ref = projection.normalizer
    try:
        scales = module_scales(ref.source, model, selected)
    except AttribError as exc:
        if ref.sha256 is None:  # featurize's own --optimizer-state: said as it is
            raise
        raise AttribError(
            f"the store's gradients were divided by the optimizer state at {ref.source}, which "
            f"can no longer be read ({str(exc).removeprefix('--optimizer-state ')}); restore it "
            "to featurize queries for the store, or pass a query store"
        ) from None
    found = digest(scales)
    if ref.sha256 is not None and ref.sha256 != found:
        raise AttribError(
            f"the optimizer state {ref.source} is not the one the store was featurized with "
            "(its second moments changed): featurize the store again, or restore that file"
        )
    return replace(projection, normalizer=replace(ref, sha256=found)), scales


@dataclass
class FeatureBatch:
    positions: range
    features: dict[str, torch.Tensor]  # module -> (B, F) float32
    scalars: dict[str, torch.Tensor]  # name -> (B,) float32


class Featurizer:
    def __init__(
        self,
        task: Task,
        columns: dict,
        selected: list[tuple[ModuleSpec, torch.nn.Module]],
        projection: ProjectionSpec,
        output_function: str,
        factors: bool = False,
    ):
        self.task, self.columns, self.output_function = task, dict(columns), output_function
        self.modules = [spec for spec, _ in selected]
        self.device = task.device
        projection = allocate(projection, self.modules)  # sqrt-size: each module's sides
        scales = None
        if projection.normalizer is not None:  # TrackStar's (featurize --optimizer-state)
            projection, scales = _normalized(projection, task.model, selected)
        self.projection = projection  # with the normalizer's digest: the store records it
        self.capture = GradientCapture(
            selected, projection, self.device, stats=factors, scales=scales
        )

    def __call__(self, rows: dict[str, list], positions: range) -> FeatureBatch:
        batch = self.task.prepare(rows, positions, self.device, self.columns)
        return self.from_batch(batch, positions)

    def from_batch(self, batch: dict, positions: range) -> FeatureBatch:
        """Features of a prepared batch whose rows are `positions` (one per batch row)."""
        normalize = self.output_function in self.task.normalized_outputs
        features: dict[str, torch.Tensor] = {}
        scalars: dict[str, torch.Tensor] = {}
        count = 0
        with torch.enable_grad(), self.capture:
            for output in self.task.passes(batch, self.output_function):
                self.capture.backward(output.values.sum())
                part = self.capture.collect(len(positions))
                if normalize:  # each pass's per-example gradient to unit length (DAS)
                    norm = torch.cat(list(part.values()), dim=1).norm(dim=1, keepdim=True)
                    part = {k: v / norm.clamp(min=1e-30) for k, v in part.items()}
                for name, value in part.items():
                    features[name] = value if name not in features else features[name] + value
                for name, value in output.scalars.items():
                    value = value.detach().float()
                    scalars[name] = value if name not in scalars else scalars[name] + value
                count += 1
        if count > 1:  # the average over passes (timesteps)
            features = {k: v / count for k, v in features.items()}
            scalars = {k: v / count for k, v in scalars.items()}
        return FeatureBatch(positions, features, scalars)
