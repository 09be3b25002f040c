"""Who does which unit of a stage's work, and who writes what they made.

A stage's work is a list of independent units (shard ranges, retrain subsets, magic's query
blocks, perturbed copies). Units go to workers round-robin; a worker is one process of a
launch (torchrun or accelerate, on one machine or many) within one task of an array job (a
scheduler's independent jobs, `--shard i/n`; on SLURM,
`--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`).
Each unit is kept on disk as it is finished, so a killed stage, or one resumed under another
number of processes, redoes only what is missing. Within a launch, only the main process writes
merged outputs; across array tasks, whichever finds every unit done merges.
No launcher lives here: torchrun, accelerate and the scheduler start the processes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from attrib.errors import AttribError

if TYPE_CHECKING:  # torch is imported by start_execution(), not by options parsing --shard
    from attrib.distributed import Runtime

T = TypeVar("T")


@dataclass(frozen=True)
class ArrayTask:
    """One of `count` independent jobs sharing an output folder (`--shard index/count`)."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str, flag: str = "--shard") -> ArrayTask:
        try:
            index, count = (int(x) for x in str(text).split("/"))
        except ValueError:
            raise AttribError(
                f"{flag} must look like i/n (e.g. $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), "
                f"got {text!r}"
            ) from None
        if count < 1 or not 0 <= index < count:
            raise AttribError(f"{flag} must be i/n with 0 <= i < n, got {text!r}")
        return cls(index, count)


@dataclass
class Execution:
    runtime: Runtime
    array: ArrayTask = ArrayTask()

    @property
    def workers(self) -> int:
        return self.runtime.world_size * self.array.count

    @property
    def worker(self) -> int:
        return self.array.index * self.runtime.world_size + self.runtime.rank

    @property
    def is_writer(self) -> bool:
        """The one process of this launch that writes merged outputs and talks on stdout."""
        return self.runtime.is_main

    @property
    def device(self):
        return self.runtime.device

    def mine(self, units: Sequence[T]) -> list[T]:
        """This worker's units: every `workers`-th, from its own place. Together the workers
        cover each unit exactly once, whatever the mix of processes and array tasks."""
        return list(units)[self.worker :: self.workers]

    def record(self) -> dict:
        """How many processes made an output (recorded in it, as stores record theirs)."""
        made = {"processes": self.runtime.world_size}
        if self.array.count > 1:
            made["array_tasks"] = self.array.count
        return made

    def agree(self, settings: dict, what: str) -> None:
        """Refuse, on every process, a launch whose processes were given different work (one
        node started with another model, say): rank 0 compares every rank's `settings`."""
        if self.runtime.world_size == 1:
            return
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
        seen = self.runtime.gather(digest.hexdigest())
        odd = None
        if seen is not None:
            odd = next((r for r, d in enumerate(seen) if d != seen[0]), None)
        odd = self.runtime.broadcast(odd)
        if odd is not None:
            raise AttribError(
                f"process {odd} of this launch was given other {what} than process 0; "
                "start every process with the same command"
            )

    def first_then_rest(self, fit: Callable[[], T]) -> T:
        """`fit` on the main process first (it fits a kernel and caches it beside the store),
        then on the others, which read that cache: a kernel is fitted once per launch."""
        if self.runtime.world_size == 1:
            return fit()
        value = fit() if self.runtime.is_main else None
        self.runtime.barrier()
        return value if self.runtime.is_main else fit()

    def barrier(self) -> None:
        self.runtime.barrier()

    def finish(self) -> None:
        self.runtime.finish()


def start_execution(device: str = "auto", shard: str = "0/1") -> Execution:
    """This process's place: the launcher's rank and world size, and the array task."""
    from attrib import distributed

    array = ArrayTask.parse(shard)
    return Execution(distributed.init(device), array)
