"""Training a model whose parameters are sharded over the launch's processes (FSDP2,
attrib/sharding.py): `train --fsdp`, `evaluate retrain --fsdp` and `perturb --fsdp`, for a
model too large for one device.

Every process runs every step on the same batch. What is split is memory: each process
holds its shard of the parameters, of their gradients and of the optimizer's state, and FSDP
gathers one unit's weights at a time for the forward and the backward pass. The gradients
FSDP reduce-scatters are the same on every process, so their mean is each of them (exactly
when the count of processes is a power of two; it may round with 3 or 6). The optimizer,
elementwise, updates each shard as it would the whole tensor: the model trained is the one
a single process trains, bitwise. The optimizer is attrib's functional one (optim.py), run
on the shards.
"""

from __future__ import annotations

import torch

from attrib.errors import AttribError
from attrib.sharding import is_sharded
from attrib.tasks.base import Task
from attrib.training.stepper import Stepper, exact_attention


class ShardedStepper(Stepper):
    """A Stepper whose `params` are this process's shards of the trainable parameters: they
    are written into the sharded model before each forward, and FSDP's backward (not
    functional_call, which would bypass its gathers) yields the gradients' shards."""

    def __init__(self, task: Task, seed: int, objective=None):
        super().__init__(task, seed, objective)
        named = dict(task.model.named_parameters())
        self.sharded = [named[n] for n in self.names]
        for param in self.sharded:  # tasks load models frozen; FSDP's backward needs leaves
            param.requires_grad_(True)

    def initial_params(self) -> list[torch.Tensor]:
        return [p.to_local().detach().clone() for p in self.sharded]

    def own_part(self, index: int, full: torch.Tensor) -> torch.Tensor:
        """This process's shard of a whole tensor of trainable parameter `index` (a snapshot's
        parameter or optimizer state)."""
        from torch.distributed.tensor import distribute_tensor

        param = self.sharded[index]
        local = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
        return local.to_local()

    def whole(self, index: int, part: torch.Tensor) -> torch.Tensor:
        from torch.distributed.tensor import DTensor

        param = self.sharded[index]
        return DTensor.from_local(
            part, param.device_mesh, param.placements, shape=param.shape, stride=param.stride()
        ).full_tensor()

    def load_into_model(self, params: list[torch.Tensor]) -> None:
        # FSDP keeps the root unit gathered after a forward without backward (the outputs
        # of the queries): free every gathered copy first, or the next forward would use
        # the stale weights instead of gathering these.
        from torch.distributed.fsdp import FSDPModule

        for module in self.task.model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()
        with torch.no_grad():
            for sharded, local in zip(self.sharded, params):
                sharded.to_local().copy_(local)

    def call(self, params: list[torch.Tensor], function, *args):
        """`function(*args)` with `params` written into the sharded model (FSDP's forward
        gathers them)."""
        self.load_into_model(params)
        with exact_attention():
            return function(*args)

    def gradient(self, params, batch, weights, step, create_graph=False, rows=None):
        if create_graph:
            raise AttribError(
                "the metagradient differentiates through each step, which fully_shard's "
                "gathers do not allow: magic --fsdp shards a run its own way (gathered.py)"
            )
        return super().gradient(params, batch, weights, step, rows=rows)

    def _differentiate(self, loss, params: list[torch.Tensor], create_graph: bool) -> list:
        return sharded_gradients(loss, self.sharded)


def sharded_gradients(value: torch.Tensor, params: list) -> list[torch.Tensor]:
    """d value / d params for a sharded model's parameters, through FSDP's backward
    (autograd.grad cannot differentiate with respect to the shards): this process's shard of
    each gradient. The parameters' .grad are left empty."""
    for param in params:
        param.grad = None
    value.backward()
    grads = [
        torch.zeros_like(p.to_local()) if p.grad is None else p.grad.to_local().detach()
        for p in params
    ]
    for param in params:
        param.grad = None
    return grads


def stepper_for(task: Task, seed: int, objective=None) -> Stepper:
    """The stepper that trains `task.model` as it is: sharded or whole."""
    if is_sharded(task.model):
        return ShardedStepper(task, seed, objective)
    return Stepper(task, seed, objective)
