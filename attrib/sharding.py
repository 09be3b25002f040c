"""A model's parameters sharded over the processes of a launch with PyTorch's fully_shard
(FSDP2), for a model that does not fit on one device: `featurize --fsdp` and `evaluate
retrain --fsdp` share it.

Each transformer block (the classes a Hugging Face model lists in `_no_split_modules`) and
then the whole model become FSDP units: a unit's weights are gathered for its forward and its
backward and freed after, so a device holds its own share plus one block at a time. Every
forward is a collective: every process of the launch must run it.
"""

from __future__ import annotations

import torch

from attrib.distributed import Runtime
from attrib.errors import AttribError

# Set once this process has sharded a model: the console script then ends it without the
# interpreter's teardown (cli/__init__.py), because FSDP's objects keep the gloo process
# group alive past destroy_process_group, and its destructor at interpreter exit aborted a
# process now and then (4 launches in 20 in a probe: "terminate called without an active
# exception").
SHARDED_HERE: list[bool] = []


def require_launch(runtime: Runtime) -> None:
    """Refuse --fsdp in a single process (called before anything is written)."""
    if runtime.world_size < 2:
        raise AttribError(
            "--fsdp shards the model over the processes of a launch: start 2 or more with "
            "torchrun or accelerate launch"
        )


def shard_model(model: torch.nn.Module, runtime: Runtime) -> str:
    """Shard `model` in place over every process of the launch; says what each holds. Call it
    before moving the model to the device: fully_shard moves one unit at a time there and
    keeps each process's pieces, so the whole model never has to fit on one device."""
    require_launch(runtime)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(runtime.device.type, (runtime.world_size,))
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    units = [m for m in model.modules() if type(m).__name__ in blocks]  # before any wrap
    for module in units:
        fully_shard(module, mesh=mesh)
    fully_shard(model, mesh=mesh)
    SHARDED_HERE.append(True)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    local = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
    return (
        f"{len(units) + 1} FSDP units; this process holds {local / 2**20:.2f} of "
        f"{total / 2**20:.2f} MiB of parameters"
    )


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def load_state(model: torch.nn.Module, state: dict, strict: bool = True):
    """Load a whole (unsharded) state dict into `model`; a sharded one keeps its pieces.
    Returns load_state_dict's (missing keys, unexpected keys)."""
    if not is_sharded(model):
        return model.load_state_dict(state, strict=strict)
    from torch.distributed.tensor import DTensor, distribute_tensor

    current = model.state_dict()
    pieces = {}
    for key, value in state.items():
        target = current.get(key)
        if isinstance(target, DTensor):
            value = value.to(target.device)  # one whole tensor on the device at a time
            value = distribute_tensor(
                value, target.device_mesh, target.placements, src_data_rank=None
            )
        pieces[key] = value
    return model.load_state_dict(pieces, strict=strict)


def whole_state_dict(model: torch.nn.Module) -> dict:
    """A sharded model's state dict with whole tensors (every process gathers them). Tied
    weights (GPT-2's embedding and head) stay one tensor, so the checkpoint saves them once,
    as an unsharded model's does."""
    from torch.distributed.tensor import DTensor

    owner = {name: id(p) for name, p in model.named_parameters(remove_duplicate=False)}
    gathered: dict[int, torch.Tensor] = {}
    out = {}
    for key, value in model.state_dict().items():
        if isinstance(value, DTensor):
            tie = owner.get(key, id(value))
            if tie not in gathered:
                gathered[tie] = value.full_tensor()
            value = gathered[tie]
        out[key] = value
    return out
