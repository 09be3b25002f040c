"""`featurize --fsdp` (the sharding itself is attrib/sharding.py): the hooks that capture
per-example gradients see each gathered unit's inputs and output gradients, so each process
featurizes its own rows exactly as an unsharded model would, and writes the same store. Every
forward is a collective: the processes must run the same number of batches, so the ones with
fewer run discarded copies of a batch at the end (`lockstep_padding`).
"""

from __future__ import annotations

from attrib.distributed import Runtime


def lockstep_padding(runtime: Runtime, my_batches: int) -> int:
    """How many discarded batches this process runs so that every process runs as many
    forward and backward passes as the busiest one."""
    counts = runtime.gather(my_batches)
    most = runtime.broadcast(max(counts) if counts is not None else None)
    return most - my_batches
