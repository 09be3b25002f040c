"""`featurize --fsdp`: the model's parameters sharded over the launch's processes with
PyTorch's fully_shard (FSDP2), for a model that does not fit on one device.

Each transformer block (the classes a Hugging Face model lists in `_no_split_modules`) and
then the whole model become FSDP units: a unit's weights are gathered for its forward and its
backward and freed after. The hooks that capture per-example gradients see the gathered
module's inputs and output gradients, so each process featurizes its own rows exactly as an
unsharded model would, and writes the same store. Every forward is a collective: the
processes must run the same number of batches, so the ones with fewer run discarded copies
of a batch at the end (`lockstep_padding`).
"""

from __future__ import annotations

import torch

from attrib.distributed import Runtime
from attrib.errors import AttribError


def shard_model(model: torch.nn.Module, runtime: Runtime) -> str:
    """Shard `model` in place over every process of the launch; says what each holds."""
    if runtime.world_size < 2:
        raise AttribError(
            "--fsdp shards the model over the processes of a launch: start 2 or more with "
            "torchrun or accelerate launch"
        )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(runtime.device.type, (runtime.world_size,))
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    units = [m for m in model.modules() if type(m).__name__ in blocks]  # before any wrap
    for module in units:
        fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    local = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
    return (
        f"{len(units) + 1} FSDP units; this process holds {local / 2**20:.2f} of "
        f"{total / 2**20:.2f} MiB of parameters"
    )


def lockstep_padding(runtime: Runtime, my_batches: int) -> int:
    """How many discarded batches this process runs so that every process runs as many
    forward and backward passes as the busiest one."""
    counts = runtime.gather(my_batches)
    most = runtime.broadcast(max(counts) if counts is not None else None)
    return most - my_batches
