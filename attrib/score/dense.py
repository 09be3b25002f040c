"""The dense (queries x train) scores file of `score --out`, written by column blocks, from one
process or from every rank of a launched run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from attrib.atomic import atomic_path
from attrib.distributed import Runtime


class DenseWriter:
    """A (Q x N) float32 .npy filled by column blocks with plain writes: unlike a memory map,
    written pages do not count against the process's memory, whatever Q x N is."""

    def __init__(self, path: Path, shape: tuple[int, int], offset: int):
        self.offset, self.columns = offset, shape[1]
        self.handle = open(path, "r+b")

    @staticmethod
    def create(path: Path, shape: tuple[int, int]) -> int:
        """Write the .npy header and size the file; return where the values start."""
        header = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
        offset = header.offset
        del header  # only the header and the file's size were wanted
        return offset

    def write_columns(self, start: int, scores: torch.Tensor) -> None:
        values = scores.numpy().astype(np.float32, copy=False)
        for q, row in enumerate(values):
            self.handle.seek(self.offset + (q * self.columns + start) * 4)
            self.handle.write(row.tobytes())

    def close(self) -> None:
        self.handle.close()


@contextmanager
def shared_output(
    path: Path | None, shape: tuple[int, int], runtime: Runtime
) -> Iterator[DenseWriter | None]:
    """A writer for `path` on every rank (None when no file is wanted). Rank 0 creates the file
    under a temporary name and tells the others; it is renamed into place only after every
    rank has written its columns, so readers never see a partial matrix."""
    if path is None:
        yield None
        return
    if not runtime.is_main:
        part, offset = runtime.broadcast(None)
        writer = DenseWriter(Path(part), shape, offset)
        try:
            yield writer
        finally:
            writer.close()
        runtime.barrier()
        return
    with atomic_path(path) as part:
        offset = DenseWriter.create(part, shape)
        runtime.broadcast((str(part), offset))
        writer = DenseWriter(part, shape, offset)
        try:
            yield writer
        finally:
            writer.close()
        runtime.barrier()  # every rank's columns are written before the rename
