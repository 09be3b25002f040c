"""Running the steps of a recorded run: training, bitwise replay, and the replay of a run
with some rows' loss weights changed (the same-run counterfactual). One loop for all three,
so a replay performs exactly the operations the training did."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from attrib.training.meta_check import damaged
from attrib.training.optim import Optimizer
from attrib.training.record import Run, snapshot_name
from attrib.training.stepper import Stepper


@dataclass
class State:
    """Where a run is before a step: trainable parameters, optimizer state, buffers."""

    params: list[torch.Tensor]
    opt: list[list[torch.Tensor]]
    buffers: dict[str, torch.Tensor]

    def named(self, stepper: Stepper, optimizer: Optimizer) -> tuple[dict, dict, dict]:
        params = dict(zip(stepper.names, self.params))
        opt = {
            f"{kind}.{name}": tensor
            for kind, tensors in zip(optimizer.state_names(), self.opt)
            for name, tensor in zip(stepper.names, tensors)
        }
        return params, opt, self.buffers


def model_buffers(stepper: Stepper) -> dict[str, torch.Tensor]:
    return {n: b.detach().clone() for n, b in stepper.task.model.named_buffers()}


def set_buffers(stepper: Stepper, buffers: dict[str, torch.Tensor]) -> None:
    named = dict(stepper.task.model.named_buffers())
    with torch.no_grad():
        for name, value in buffers.items():
            named[name].copy_(value)


def state_from_snapshot(run: Run, step: int, stepper: Stepper, optimizer: Optimizer) -> State:
    tensors = run.load_snapshot(step)
    device = next(stepper.task.model.parameters()).device
    wanted = [f"param.{n}" for n in stepper.names]
    wanted += [f"{kind}.{n}" for kind in optimizer.state_names() for n in stepper.names]
    missing = [k for k in wanted if k not in tensors]
    if missing:
        raise damaged(run.path, f"{snapshot_name(step)} lacks {missing[0]}")
    own = stepper.own_part  # a sharded model's process keeps its shard of each
    params = [own(i, tensors[f"param.{n}"].to(device)) for i, n in enumerate(stepper.names)]
    opt = [
        [own(i, tensors[f"{kind}.{n}"].to(device)) for i, n in enumerate(stepper.names)]
        for kind in optimizer.state_names()
    ]
    buffers = {
        k[len("buffer.") :]: v.to(device) for k, v in tensors.items() if k.startswith("buffer.")
    }
    return State(params, opt, buffers)


def run_steps(
    stepper: Stepper,
    optimizer: Optimizer,
    source,
    batches: list[np.ndarray],
    state: State,
    start: int,
    stop: int,
    weights: np.ndarray | None = None,
    after_step: Callable[[int, State], None] | None = None,
) -> State:
    """Steps start..stop-1 from `state` (the state before step `start`). `weights`: one loss
    weight per training row (None: all 1, a normal run). `after_step(t + 1, state)` sees the
    state after each step (snapshots, progress). The model's buffers follow the run."""
    set_buffers(stepper, state.buffers)
    params, opt = state.params, state.opt
    dtype = params[0].dtype
    for t in range(start, stop):
        rows = batches[t]
        batch = source.batch(rows.tolist())
        if weights is None:
            w = torch.ones(len(rows), dtype=dtype, device=params[0].device)
        else:
            w = torch.as_tensor(weights[rows], dtype=dtype, device=params[0].device)
        leaves = [p.detach().requires_grad_(True) for p in params]
        grads = stepper.gradient(leaves, batch, w, t, rows=rows)
        with torch.no_grad():
            params, opt = optimizer.step([p.detach() for p in leaves], opt, grads, t)
        if after_step is not None:
            after_step(t + 1, State(params, opt, model_buffers(stepper)))
    return State(params, opt, model_buffers(stepper))


def replay(run: Run, loaded, weights: np.ndarray | None = None, start: State | None = None):
    """A recorded run's steps again from its start, each row's loss weighted by `weights`
    (None: the run itself); `loaded` is the run's `load.Loaded`. The same-run ground truth
    and the smoothness check are this with rows left out; callers that replay many times
    pass the `start` state once read (`state_from_snapshot(run, 0, ...)`)."""
    if start is None:
        start = state_from_snapshot(run, 0, loaded.stepper, loaded.optimizer)
    return run_steps(
        loaded.stepper, loaded.optimizer, loaded.source, loaded.batches, start, 0, run.steps,
        weights=weights,
    )  # fmt: skip
