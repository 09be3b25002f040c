"""Processes launched by `accelerate launch` or `torchrun`: rank, world size, device, barrier.

A single process never initializes a process group. Under a launcher (WORLD_SIZE > 1)
accelerate's PartialState sets up the group: NCCL on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from attrib.errors import AttribError


@dataclass
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    _state: object = None
    owns_group: bool = True  # False inside a Trainer's process group: left open at the end

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self._state is None:
            return
        import torch.distributed as dist

        # Not accelerate's wait_for_everyone: it passes CUDA device ids even to a gloo group
        # on a GPU machine, which fails when there are more CPU processes than GPUs.
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[self.device.index or 0])
        else:
            dist.barrier()

    def finish(self) -> None:
        """Leave together: a barrier, then the process group is closed. A rank that exits
        while another is still receiving from it (gloo) aborts that one at exit."""
        if self._state is None:
            return
        import torch.distributed as dist

        self.barrier()
        if self.owns_group:
            dist.destroy_process_group()

    def broadcast(self, value):
        """Rank 0's `value` on every rank (a small picklable object between our own ranks)."""
        if self._state is None:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list | None:
        """Every rank's `value`, in rank order, on rank 0 (None on the others)."""
        if self._state is None:
            return [value]
        import torch.distributed as dist

        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(value, out, dst=0)
        return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AttribError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AttribError("--device cuda was asked for but no CUDA GPU is available; use cpu")
    return device


def init(device_name: str = "auto") -> Runtime:
    device = resolve_device(device_name)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Runtime(device)
    from accelerate import PartialState

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and local_rank >= torch.cuda.device_count():
        raise AttribError(
            f"process {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
            "start at most one process per GPU, or pass --device cpu"
        )
    import torch.distributed as dist

    joined = dist.is_available() and dist.is_initialized()  # a Trainer's group, say
    state = PartialState(cpu=device.type == "cpu")
    return Runtime(state.device, state.process_index, state.num_processes, state, not joined)


def lost_peer_message(exc: BaseException) -> str | None:
    """One line for a collective that failed because another process of the launch died (a
    kill, an out-of-memory, a lost node); None for anything else."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    text = str(exc)
    # DistError covers NCCL and gloo failures; the strings, gloo's RuntimeErrors of old.
    lost = isinstance(exc, getattr(torch.distributed, "DistError", ())) or any(
        sign in text for sign in ("Connection closed by peer", "Connection reset by peer")
    )
    if not lost:
        return None
    rank, world = os.environ.get("RANK", "0"), os.environ.get("WORLD_SIZE")
    first = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
    return (
        f"process {rank} of {world} lost another process of its launch ({first}); the "
        "launcher's summary names it; run the same command again to resume (finished work is kept)"
    )
