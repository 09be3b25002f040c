"""`magic --fsdp`: the metagradient of a run whose weights and state are sharded over a
launch's processes, for a model larger than one process's memory.

FSDP's fully_shard gathers weights and reduces gradients in hooks outside autograd's graph,
so a double backward (the metagradient differentiates each step's gradient) cannot go
through it. Here the gather is inside the graph: each process holds a flat shard of every
parameter (and of the optimizer state, the recorded states and the queries' adjoints, which
share its layout), and the model is called with `Gather(shard)`, an all-gather whose backward
is a reduce-scatter and the reverse, so autograd differentiates through it to any order.

Memory follows FSDP's: a unit (each transformer block a Hugging Face model lists in
`_no_split_modules`; the rest of the model is the root unit) has its weights gathered for its
forward and freed after, and a weight autograd saves for backward is saved as its shard and
gathered again when backward needs it (`_Regathered`), in the first backward and in the
metagradient's second.

Every process replays every step on the same whole batch, so that the run's random draws are
the run's. Each process therefore differentiates 1/N of the objective (N processes): the
reduce-scatter sums the N equal shares, and a shard's gradient is the whole gradient's slice.
The same holds to second order: the cotangent of each process's gradient shard is gathered
whole, each process's Hessian-vector product is 1/N of the whole one, and the reduce-scatter
sums them. What each process holds alone and unsharded (a row's loss weight, BatchNorm's
running statistics) gets 1/N of its adjoint there (`replicas`). Every process runs the same
graph, so the gathers of backward come in the same order on all of them.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch.multiprocessing.reductions import StorageWeakRef

from attrib.tasks.base import Task
from attrib.training.stepper import Stepper


class Gather(torch.autograd.Function):
    """All processes' flat shards, concatenated; its backward sums a cotangent over the
    processes and keeps this one's part (Scatter), so it is differentiable to any order."""

    @staticmethod
    def forward(ctx, shard: torch.Tensor) -> torch.Tensor:
        whole = shard.new_empty(shard.numel() * dist.get_world_size())
        dist.all_gather_into_tensor(whole, shard.contiguous())
        return whole

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return Scatter.apply(grad)


class Scatter(torch.autograd.Function):
    """A whole flat tensor summed over the processes, this one's part kept (reduce-scatter);
    its backward is Gather."""

    @staticmethod
    def forward(ctx, whole: torch.Tensor) -> torch.Tensor:
        shard = whole.new_empty(whole.numel() // dist.get_world_size())
        dist.reduce_scatter_tensor(shard, whole.contiguous(), op=dist.ReduceOp.SUM)
        return shard

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return Gather.apply(grad)


class _Regathered(torch.autograd.graph.saved_tensors_hooks):
    """Saves a gathered weight (or any tensor on its storage: a view, the copy autograd
    makes when it unpacks one) that autograd keeps for backward as its shard, and gathers it
    again when backward unpacks it: the whole weights of every unit are never held at once.

    Gathered storages are known through weak references to the storages themselves: a
    tensor is on one while that storage lives, whatever Python's garbage collector has or
    has not freed yet, so every process saves the same tensors as shards and gathers them
    in the same order (a collective)."""

    def __init__(self):
        self.gathered: dict[int, tuple[StorageWeakRef, torch.Tensor]] = {}
        self.packed = 0  # tensors saved as shards (read by the tests)

        def pack(tensor):
            known = self.gathered.get(tensor.untyped_storage()._cdata)
            if known is None or known[0].expired():
                return tensor
            self.packed += 1
            return (known[1], tensor.size(), tensor.stride(), tensor.storage_offset())

        def unpack(packed):
            if isinstance(packed, torch.Tensor):
                return packed
            shard, size, stride, offset = packed
            with torch.no_grad():
                whole = self.gather(shard)
            return whole.as_strided(size, stride, offset)

        super().__init__(pack, unpack)

    def gather(self, shard: torch.Tensor) -> torch.Tensor:
        """The whole flat tensor of `shard`; tensors on its storage are saved as the shard."""
        whole = Gather.apply(shard)
        if len(self.gathered) > 1024:  # the freed ones: their weak references let go
            self.gathered = {k: v for k, v in self.gathered.items() if not v[0].expired()}
        # The weak reference keeps the storage's record (not its memory) until it is let go,
        # so no other storage gets this key meanwhile.
        reference = StorageWeakRef(whole.untyped_storage())
        self.gathered[reference.cdata] = (reference, shard.detach())
        return whole


class GatheredStepper(Stepper):
    """A Stepper whose `params` are this process's flat shards (zero-padded to equal length)
    of the trainable parameters; the model's own tensors are emptied, and each unit's
    weights are gathered from the shards when it runs."""

    batched_backward = False  # vmap has no rule for the collectives: one cotangent at a time

    def __init__(self, task: Task, seed: int, world_size: int, rank: int):
        super().__init__(task, seed)
        self.replicas, self.rank = world_size, rank
        model = task.model
        self.objects = list(dict.fromkeys(model.parameters()))  # tied weights once
        place = {id(p): k for k, p in enumerate(self.objects)}
        self.shapes = [p.shape for p in self.objects]
        self.shards = [self._own(k, p.detach()) for k, p in enumerate(self.objects)]
        named = dict(model.named_parameters())
        self.trainable = [place[id(named[n])] for n in self.names]
        self.saved = _Regathered()
        self.units, self.root = _units(model, place)
        for module, places in self.units:
            module.register_forward_pre_hook(lambda _m, _a, places=places: self._put(places))
            module.register_forward_hook(lambda _m, _a, _o, places=places: self._empty(places))
        model.register_forward_pre_hook(lambda *_: self._enter())
        model.register_forward_hook(lambda *_: self._leave())
        self._depth = 0
        with torch.no_grad():  # what this process holds from now on is its shards
            for p in self.objects:
                p.data = p.data.new_empty(0)

    def describe(self) -> str:
        whole = sum(math.prod(s) for s in self.shapes) * self.shards[0].element_size()
        held = sum(s.numel() * s.element_size() for s in self.shards)
        units = len(self.units) + 1
        return (
            f"{units} unit{'s' if units > 1 else ''} gathered as they run; this process holds "
            f"{held / 2**20:.2f} of {whole / 2**20:.2f} MiB of weights"
        )

    def to(self, device: torch.device) -> None:
        self.shards = [s.to(device) for s in self.shards]

    def _own(self, k: int, full: torch.Tensor) -> torch.Tensor:
        span = math.ceil(math.prod(self.shapes[k]) / self.replicas)
        flat = full.reshape(-1)
        padded = torch.nn.functional.pad(flat, (0, span * self.replicas - flat.numel()))
        return padded[self.rank * span : (self.rank + 1) * span].clone()

    def own_part(self, index: int, full: torch.Tensor) -> torch.Tensor:
        return self._own(self.trainable[index], full)

    def whole(self, index: int, part: torch.Tensor) -> torch.Tensor:
        shape = self.shapes[self.trainable[index]]
        with torch.no_grad():
            return Gather.apply(part)[: math.prod(shape)].view(shape)

    def initial_params(self) -> list[torch.Tensor]:
        return [self.shards[k].clone() for k in self.trainable]

    def load_into_model(self, params: list[torch.Tensor]) -> None:
        for k, p in zip(self.trainable, params):
            self.shards[k] = p.detach()

    def share(self, value: torch.Tensor) -> torch.Tensor:
        return value / self.replicas

    def call(self, params: list[torch.Tensor], function, *args):
        """`function(*args)` with the trainable parameters' shards `params` (leaves autograd
        differentiates), each unit gathered as it runs; the root unit's weights stay
        gathered for the whole call (a task may use them outside the model's forward)."""
        resting = list(self.shards)
        for k, p in zip(self.trainable, params):
            self.shards[k] = p
        try:
            with self.saved, self._entered():
                return function(*args)
        finally:
            self.shards = resting

    def _differentiate(self, loss, params: list[torch.Tensor], create_graph: bool) -> list:
        with self.saved:  # a double backward's graph saves the weights as shards too
            return super()._differentiate(loss, params, create_graph)

    @contextmanager
    def _entered(self):
        self._enter()
        try:
            yield
        finally:
            self._leave()

    def _enter(self) -> None:
        """Entering the model (a call, or a forward of it outside one): the root gathered."""
        self._depth += 1
        if self._depth == 1:
            self._put(self.root)

    def _leave(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._empty(self.root)

    def _put(self, places) -> None:
        for module, name, k in places:
            whole = self.saved.gather(self.shards[k])
            module._parameters[name] = whole[: math.prod(self.shapes[k])].view(self.shapes[k])

    def _empty(self, places) -> None:
        for module, name, k in places:
            module._parameters[name] = self.objects[k]


def _units(model: torch.nn.Module, place: dict) -> tuple[list, list]:
    """([(block module, its places)], the root's places): a place is (module, parameter name,
    parameter number), each in the innermost block around it, as fully_shard's units."""
    blocks = set(getattr(model, "_no_split_modules", None) or ())
    prefixes = {
        name: module
        for name, module in model.named_modules()
        if name and type(module).__name__ in blocks
    }
    owned: dict[str, list] = {name: [] for name in prefixes}
    root = []
    for name, module in model.named_modules(remove_duplicate=False):
        for leaf, param in module._parameters.items():
            if param is None:
                continue
            unit = max(
                (p for p in prefixes if name == p or name.startswith(p + ".")),
                key=len,
                default=None,
            )
            (root if unit is None else owned[unit]).append((module, leaf, place[id(param)]))
    return [(prefixes[name], places) for name, places in owned.items()], root
