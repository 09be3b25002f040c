"""Reading a complete store: manifest, modules, shards as memory-mapped Arrow tables."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa

from attrib.errors import AttribError
from attrib.store import shards
from attrib.store.lock import lock_store
from attrib.store.manifest import FORMAT_VERSION, MANIFEST, SHARD_DIR, read_json
from attrib.store.module_spec import ModuleSpec
from attrib.store.shards import column_matrix, feature_matrix  # noqa: F401 (re-exported)
from attrib.store.verify import VERIFY, check_checksum, check_manifest, check_rows, damaged


@dataclass(frozen=True)
class Layout:
    """Where each module's features sit in the concatenated (D,) feature vector."""

    names: tuple[str, ...]
    dims: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.dims)

    @property
    def slices(self) -> list[slice]:
        out, start = [], 0
        for dim in self.dims:
            out.append(slice(start, start + dim))
            start += dim
        return out

    def expand(self, per_module: np.ndarray) -> np.ndarray:
        """A per-module vector repeated over each module's features: (M,) -> (D,)."""
        return np.repeat(np.asarray(per_module, dtype=np.float64), self.dims)


@dataclass(frozen=True)
class ShardInfo:
    file: str
    start: int
    end: int
    sha256: str

    @property
    def rows(self) -> int:
        return self.end - self.start


class Store:
    """A featurized store. Opening checks the manifest; shards are read lazily."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            raise AttribError(f"{self.path} is not an attrib store (no {MANIFEST}); run featurize")
        try:
            self.manifest = read_json(manifest_path)
        except AttribError as exc:
            raise AttribError(f"{exc}; featurize again") from None
        version = self.manifest.get("format_version")
        if version != FORMAT_VERSION:
            raise AttribError(
                f"{self.path} has store format {version}; this attrib reads {FORMAT_VERSION}"
            )
        if not self.manifest.get("complete"):
            raise AttribError(
                f"{self.path} is incomplete (a featurize run stopped early); "
                "run the same featurize command again to resume it"
            )
        check_manifest(self.path, self.manifest)
        lock_store(self.path, exclusive=False)  # no writer replaces it while we read
        self.settings: dict = self.manifest["settings"]
        try:
            self.modules = [ModuleSpec.from_dict(m["spec"]) for m in self.settings["modules"]]
        except (TypeError, KeyError):
            raise damaged(self.path, "a module spec in its manifest is malformed") from None
        self.feature_dims = {m["spec"]["name"]: m["feature_dim"] for m in self.settings["modules"]}
        self.shards = [
            ShardInfo(s["file"], s["start"], s["end"], s["sha256"]) for s in self.manifest["shards"]
        ]
        # Rows per block when streaming features (None: whole shards); set from a memory
        # budget by `attrib.memory.plan_streaming`.
        self.block_rows: int | None = None

    @property
    def num_examples(self) -> int:
        return int(self.settings["num_examples"])

    @property
    def module_names(self) -> list[str]:
        return [m.name for m in self.modules]

    @property
    def scalar_names(self) -> list[str]:
        return list(self.settings["scalars"])

    @property
    def layout(self) -> Layout:
        return Layout(
            tuple(self.module_names), tuple(self.feature_dims[n] for n in self.module_names)
        )

    def iter_features(
        self, device="cpu"
    ) -> Iterator[tuple[ShardInfo, dict[str, np.ndarray], object]]:
        """Per block of rows: (the block as a ShardInfo of its rows, scalar columns incl.
        `index`, features as one (rows x D) float32 tensor in layout order). A block is a whole
        shard, or at most `block_rows` rows of one when a memory budget set it. The next block
        is read in a background thread while the caller works on the current one."""
        yield from self._prefetched(self._blocks(), self._load, device)

    def iter_parts(
        self, device="cpu", rank: int = 0, world_size: int = 1
    ) -> Iterator[tuple[ShardInfo, dict[str, np.ndarray], list]]:
        """Like iter_features, but the features as one (rows x d_m) tensor per module, in
        layout order, with no copy where none is needed: on the CPU a float32 store's modules
        are read-only views of the memory-mapped shard (a float16 store's are converted to
        float32); on a GPU they travel through pinned memory in the store's dtype. Scoring
        multiplies module by module, so no (rows x D) copy is made. With several processes,
        rank r reads shards r, r + world_size, ..."""
        import torch

        device = torch.device(device)
        load = partial(self._parts, device=device)
        yield from self._prefetched(self._blocks(rank, world_size), load)

    def _prefetched(self, blocks, load, device=None):
        """(block, scalars, features) for each (shard, block), `load`ed in a background
        thread one block ahead: the next block is read while the caller uses this one (not
        earlier, so at most two blocks are held)."""
        from concurrent.futures import ThreadPoolExecutor

        blocks = list(blocks)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(load, *blocks[0]) if blocks else None
            for i, (_, block) in enumerate(blocks):
                columns, features = pending.result()
                pending = None
                if i + 1 < len(blocks):
                    pending = pool.submit(load, *blocks[i + 1])
                yield block, columns, features if device is None else features.to(device)
                del columns, features

    def _parts(self, shard: ShardInfo, block: ShardInfo, device):
        data = self.read_shard(shard)
        try:
            data = data.slice(block.start - shard.start, block.rows)
            columns = self._scalar_columns(data, shard, block)
            parts = []
            for name in self.module_names:
                values = feature_matrix(data, name, self.feature_dims[name], dtype=None)
                part = _readonly_tensor(values)
                parts.append(part.float() if device.type == "cpu" else part)  # float(): a view
        except (KeyError, ValueError, RuntimeError) as exc:
            raise damaged(self.path, f"shard {shard.file}: {exc}") from None
        if device.type == "cuda":
            parts = _to_gpu(parts, device)
        return columns, parts

    def _scalar_columns(self, data: pa.Table, shard: ShardInfo, block: ShardInfo) -> dict:
        names = ["index", *self.scalar_names]
        columns = {name: data.column(name).to_numpy().copy() for name in names}
        check_rows(self.path, shard.file, block.start, block.end, columns["index"])
        return columns

    def _blocks(self, rank: int = 0, world_size: int = 1) -> Iterator[tuple[ShardInfo, ShardInfo]]:
        """(shard, block) pairs: the shard a block is read from, and the block's own rows."""
        for shard in self.shards[rank::world_size]:
            step = self.block_rows or shard.rows
            for start in range(shard.start, shard.end, step):
                end = min(start + step, shard.end)
                yield shard, ShardInfo(shard.file, start, end, shard.sha256)

    def _load(self, shard: ShardInfo, block: ShardInfo):
        """One block's scalars and features, copied out of the memory-mapped shard; the map
        is released on return, so read pages do not pile up in the process's memory."""
        import torch

        data = self.read_shard(shard)
        try:
            data = data.slice(block.start - shard.start, block.rows)
            columns = self._scalar_columns(data, shard, block)
            phi = torch.empty(block.rows, self.layout.total, dtype=torch.float32)
            for name, part in zip(self.module_names, self.layout.slices):
                values = feature_matrix(data, name, self.feature_dims[name], dtype=None)
                phi[:, part].copy_(_readonly_tensor(values))
        except (KeyError, ValueError, RuntimeError) as exc:  # missing columns, wrong widths
            raise damaged(self.path, f"shard {shard.file}: {exc}") from None
        return columns, phi

    def fingerprint(self) -> str:
        """What the manifest says the shards hold (their checksums): the store's identity,
        recorded by later stages and equal for a copy of the store."""
        import hashlib

        digest = hashlib.sha256()
        for shard in self.shards:
            digest.update(f"{shard.file}:{shard.sha256};".encode())
        return digest.hexdigest()[:20]

    def rows_key(self) -> str:
        """Which rows the store holds, whatever their features: its dataset's fingerprint and
        its `index` column. Two featurizations of the same rows (trak and ekfac stores, other
        --proj-dim) share it, so a ground truth serves them all."""
        import hashlib

        digest = hashlib.sha256(str(self.settings["dataset"].get("fingerprint")).encode())
        digest.update(np.ascontiguousarray(self.column("index"), dtype=np.int64).tobytes())
        return digest.hexdigest()[:20]

    def content_key(self) -> str:
        """The fingerprint plus each shard file's size and modification time: changes when a
        shard's bytes change on disk even if the manifest does not (keys the caches)."""
        import hashlib

        digest = hashlib.sha256(self.fingerprint().encode())
        for shard in self.shards:
            stat = (self.path / SHARD_DIR / shard.file).stat()
            digest.update(f"{stat.st_size}:{stat.st_mtime_ns};".encode())
        return digest.hexdigest()[:20]

    def read_shard(self, shard: ShardInfo, columns: list[str] | None = None) -> pa.Table:
        """One shard (memory-mapped), checked for its row count; damage is a clear error."""
        path = self.path / SHARD_DIR / shard.file
        if VERIFY:
            check_checksum(self.path, path, shard.sha256)
        try:
            data = shards.read(path, columns)
        except (pa.ArrowInvalid, OSError, KeyError) as exc:
            raise damaged(self.path, f"shard {shard.file}: {exc}") from None
        if data.num_rows != shard.rows:
            raise damaged(
                self.path, f"shard {shard.file} holds {data.num_rows} rows, not {shard.rows}"
            )
        return data

    def iter_shards(self, columns: list[str] | None = None) -> Iterator[tuple[ShardInfo, pa.Table]]:
        for shard in self.shards:
            yield shard, self.read_shard(shard, columns)

    def matrix(self, module: str, dtype=np.float32) -> np.ndarray:
        """All rows of one module's features as an (N x F) array (for tests and small stores)."""
        columns = [module]
        if self.settings.get("store_dtype") in shards.QUANTIZED_BITS:
            columns.append(shards.scale_column(module))
        dim = self.feature_dims[module]
        parts = [feature_matrix(t, module, dim, dtype) for _, t in self.iter_shards(columns)]
        return np.concatenate(parts, axis=0)

    def column(self, name: str) -> np.ndarray:
        """A scalar column (`index`, `loss`, ...) over all rows."""
        return np.concatenate([t.column(name).to_numpy() for _, t in self.iter_shards([name])])

    def size_bytes(self) -> int:
        return sum((self.path / SHARD_DIR / s.file).stat().st_size for s in self.shards)


def _to_gpu(parts: list, device) -> list:
    """Copy tensors to the GPU on a side stream through pinned memory, so the copy overlaps
    the products running on the default stream; returned once the copy is complete."""
    import torch

    side = torch.cuda.Stream(device)
    consumer = torch.cuda.current_stream(device)
    with torch.cuda.stream(side):
        moved = [part.pin_memory().to(device, non_blocking=True) for part in parts]
    side.synchronize()
    for tensor in moved:  # freed memory is reused only after the consumer's work on it
        tensor.record_stream(consumer)
    return moved


def _readonly_tensor(values: np.ndarray):
    """A tensor view of a read-only (memory-mapped) array, for reading only: no copy."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(values)
