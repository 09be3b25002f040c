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

import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from attrib import log
from attrib.atomic import atomic_path
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


MERGE_LOCK = ".merge.lock"  # in a stage's folder of units: held by the task that merges


@dataclass
class Execution:
    runtime: Runtime
    array: ArrayTask = ArrayTask()
    # The launch's processes hold one model sharded over them (--fsdp): together they are
    # one worker, running each unit in step, and the main process writes what they make.
    sharded: bool = False
    _merge_lock: int | None = field(default=None, repr=False)

    @property
    def workers(self) -> int:
        return self.array.count if self.sharded else self.runtime.world_size * self.array.count

    @property
    def worker(self) -> int:
        if self.sharded:
            return self.array.index
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

    def pending(self, mine: Sequence[T], done: Callable[[T], bool]) -> list[T]:
        """Of this worker's units, those not `done`. When sharded, the main process reads
        the disk and every process gets its list, so that all run the same units in step."""
        if not self.sharded:
            return [u for u in mine if not done(u)]
        todo = [u for u in mine if not done(u)] if self.runtime.is_main else None
        return self.runtime.broadcast(todo)

    @property
    def saves_units(self) -> bool:
        """Whether this process writes the units it makes (when sharded, only the main)."""
        return not self.sharded or self.runtime.is_main

    def record(self) -> dict:
        """How many processes made an output (recorded in it, as stores record theirs)."""
        made = {"processes": self.runtime.world_size}
        if self.array.count > 1:
            made["array_tasks"] = self.array.count
        if self.sharded:
            made["fsdp"] = True
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

    def claim_merge(self, units: Path, out: Path | None, merged: Callable[[], bool] | None = None):
        """Whether this writer merges the finished units in `units` into `out`. Within one
        launch the main process always does; of an array job's tasks that find every unit
        done, exactly one: the first to take the folder's merge lock (held until `finish`, or
        the process's end), and only while `out` is older than the units, or `merged()` is
        false (a task that finishes after another merged finds nothing to do). No two
        processes write `out`."""
        if self.array.count == 1:
            return True
        fd = os.open(Path(units) / MERGE_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            log.info(f"another array task is merging {units}; this one has nothing left to do")
            return False
        done = (
            merged()
            if merged is not None
            else out is not None and _newer_than_units(Path(out), Path(units))
        )
        if done:
            os.close(fd)
            log.info(f"{out or units} was merged by another array task; nothing left to do")
            return False
        self._merge_lock = fd
        return True

    def barrier(self) -> None:
        self.runtime.barrier()

    def finish(self) -> None:
        if self._merge_lock is not None:
            os.close(self._merge_lock)  # releases the flock
            self._merge_lock = None
        self.runtime.finish()


def _newer_than_units(out: Path, units: Path) -> bool:
    if not out.is_file():
        return False
    made = [p.stat().st_mtime_ns for p in units.iterdir() if p.suffix == ".npy"]
    return not made or out.stat().st_mtime_ns >= max(made)


def write_provenance(out: Path, record: dict) -> None:
    """`OUT.json` beside a matrix a stage wrote (`score --out`, `magic --out`): what made it,
    including how many processes (a .npy has no room for it, as a store's manifest has)."""
    path = Path(f"{out}.json")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")


def start_execution(device: str = "auto", shard: str = "0/1", sharded: bool = False) -> Execution:
    """This process's place: the launcher's rank and world size, and the array task.
    `sharded` (--fsdp) is refused outside a launch of 2 or more processes."""
    from attrib import distributed

    array = ArrayTask.parse(shard)
    runtime = distributed.init(device)
    if sharded:
        from attrib.sharding import require_launch

        require_launch(runtime)
    return Execution(runtime, array, sharded)
