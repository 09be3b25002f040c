"""Datasets by hub id or local path, through the `datasets` library.

`datasets` keeps a split as memory-mapped Arrow on disk, so the whole dataset is never held in
memory: rows are read one batch at a time. Images are read undecoded and decoded here, so a
file that does not decode is reported by row instead of deep inside `datasets`.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
from PIL import Image, UnidentifiedImageError

from attrib import hub
from attrib.errors import AttribError

_FILE_BUILDERS = {
    ".parquet": "parquet",
    ".csv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".txt": "text",
    ".arrow": "arrow",
}


GENERATED_MARKER = "attrib-generate.json"
# Images past PIL's pixel limit (or within 2x of it, which PIL only warns about) are refused:
# a small file can decode to gigabytes.
IMAGE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    ValueError,
    Image.DecompressionBombError,
    Image.DecompressionBombWarning,
)


@dataclass(frozen=True)
class DataRef:
    source: str
    split: str = "train"
    config: str | None = None
    revision: str | None = None


def ref_from_settings(info: dict) -> DataRef:
    """The DataRef a store's manifest recorded for its dataset."""
    return DataRef(info["source"], info["split"], info.get("config"), info.get("revision"))


def open_dataset(ref: DataRef) -> datasets.Dataset:
    datasets.disable_progress_bars()
    path = Path(ref.source).expanduser()
    try:
        if path.is_file():
            builder = _FILE_BUILDERS.get(path.suffix.lower())
            if builder is None:
                known = ", ".join(sorted(_FILE_BUILDERS))
                raise AttribError(f"--data {ref.source}: unknown file type; use one of {known}")
            dataset = _load_file(builder, path, ref)
        elif (
            path.is_dir()
            and (path / "dataset_info.json").exists()
            and (path / "state.json").exists()
        ):
            dataset = datasets.load_from_disk(str(path))
        elif path.is_dir() and (path / GENERATED_MARKER).exists():
            # A folder from `attrib generate`: its parquet, not the PNG copies beside it.
            data_files = str(path / "queries.parquet")
            dataset = datasets.load_dataset("parquet", data_files=data_files, split="train")
        elif path.is_dir() and (path / "dataset_dict.json").exists():
            dataset = datasets.load_from_disk(str(path))[ref.split]
        elif path.is_dir():
            dataset = datasets.load_dataset(str(path), name=ref.config, split=ref.split)
        elif hub.looks_like_path(ref.source) or path.suffix.lower() in _FILE_BUILDERS:
            # `train.csv` is a file name, never a hub id: say it is missing, not unreachable.
            raise AttribError(f"--data {ref.source}: no such file or folder")
        else:
            hub.require_hub("--data", ref.source)
            dataset = datasets.load_dataset(
                ref.source, name=ref.config, split=ref.split, revision=ref.revision
            )
    except AttribError:
        raise
    except KeyError:
        raise AttribError(f"--data {ref.source}: no split {ref.split!r}; pass --split") from None
    except ValueError as exc:
        message = str(exc).splitlines()[0]
        if "corresponds to no data" in message:
            raise AttribError(f"--data {ref.source}: split {ref.split!r} has no rows") from None
        if "split" in message.lower():
            raise AttribError(f"--data {ref.source}: {message}; pass --split") from None
        raise AttribError(f"--data {ref.source}: {message}") from None
    except Exception as exc:  # FileNotFoundError, hub errors, connection errors
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AttribError(
            f"cannot load dataset {ref.source!r}: {message} "
            "(check the hub id or path, --split and --data-config; offline runs need a local copy)"
        ) from None
    if isinstance(dataset, datasets.DatasetDict):
        raise AttribError(f"--data {ref.source}: pass --split to choose one of {list(dataset)}")
    if len(dataset) == 0:
        raise AttribError(f"--data {ref.source}: split {ref.split!r} has no rows")
    return dataset


def _load_file(builder: str, path: Path, ref: DataRef):
    """A local data file; an empty one (no bytes, or a header or schema without rows) is
    "no rows", and a file that is not what its suffix says is named as such: no hub advice
    for a file on disk."""
    import datasets

    if path.stat().st_size == 0:
        raise AttribError(f"--data {ref.source}: the file is empty (no rows)")
    try:
        # datasets logs its reader's failure at ERROR level before raising; attrib says it.
        datasets.logging.set_verbosity(datasets.logging.CRITICAL)
        return datasets.load_dataset(builder, data_files=str(path), split=ref.split)
    except ValueError as exc:
        if "corresponds to no data" in str(exc):  # a CSV header without rows
            raise AttribError(f"--data {ref.source}: the file has no rows") from None
        raise  # a split that does not exist: said by the caller
    except KeyError:
        raise
    except Exception as exc:  # datasets wraps the reader's own error
        cause = exc
        while cause.__cause__ or cause.__context__:
            cause = cause.__cause__ or cause.__context__
        text = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
        if "greater than 0, got 0" in text or "at least one example" in text:
            raise AttribError(f"--data {ref.source}: the file has no rows") from None
        raise AttribError(
            f"--data {ref.source}: cannot read it as {builder} ({text}); check the file"
        ) from None


def dataset_info(dataset: datasets.Dataset, ref: DataRef) -> dict:
    local = Path(ref.source).expanduser()
    return {
        "source": str(local.resolve()) if local.exists() else ref.source,
        "split": ref.split,
        "config": ref.config,
        "revision": ref.revision,
        "fingerprint": dataset._fingerprint,
        "num_rows": len(dataset),
    }


def rows_fingerprint(dataset: datasets.Dataset, rows: int, columns: dict) -> str:
    """sha256 of the used columns' values in the first `rows` rows: equal for a byte-identical
    copy of the data anywhere, different when a row, a label or the order changed (datasets'
    own fingerprint of a local file follows its path and modification time instead)."""
    import hashlib

    import pyarrow as pa

    used = sorted({c for c in columns.values() if c in dataset.column_names})
    digest = hashlib.sha256(",".join(used).encode())
    table = dataset.select_columns(used).with_format("arrow")
    for start in range(0, rows, 4096):
        chunk = table[start : min(start + 4096, rows)].replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, chunk.schema) as writer:
            writer.write_table(chunk.combine_chunks())
        digest.update(sink.getvalue())
    return "rows:" + digest.hexdigest()[:32]


def choose_column(
    dataset: datasets.Dataset, role: str, requested: str | None, candidates: list[str]
) -> str | None:
    """The column for a role: the one asked for, else the only candidate; None if none."""
    names = list(dataset.column_names)
    if requested is not None:
        if requested not in names:
            raise AttribError(
                f"the dataset has no column {requested!r} for --{role}-column; columns: {names}"
            )
        return requested
    if len(candidates) == 1:
        return candidates[0]
    if len(candidates) > 1:
        raise AttribError(
            f"several columns could be the {role} column {candidates}; pass --{role}-column"
        )
    return None


def undecoded(dataset: datasets.Dataset, image_column: str | None) -> datasets.Dataset:
    """The dataset with images left as bytes/paths, decoded later by `decode_image`."""
    if image_column and isinstance(dataset.features[image_column], datasets.Image):
        return dataset.cast_column(image_column, datasets.Image(decode=False))
    return dataset


def decode_image(value, row: int, column: str) -> Image.Image:
    """A PIL image from a datasets image cell ({bytes, path}), a path string, or an image."""
    try:
        return _decode(value)
    except IMAGE_ERRORS as exc:
        raise AttribError(
            f"row {row}: the image in column {column!r} cannot be decoded ({exc}); "
            "fix or drop that row"
        ) from None


def image_problem(value) -> str | None:
    """Why a value does not decode as an image, or None when it does."""
    try:
        _decode(value)
    except IMAGE_ERRORS as exc:
        return str(exc)
    return None


def _decode(value) -> Image.Image:
    with warnings.catch_warnings():  # an image just under PIL's bomb limit: refuse it too
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return _open(value)


def _open(value) -> Image.Image:
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, dict) and value.get("bytes") is not None:
        image = Image.open(io.BytesIO(value["bytes"]))
    elif isinstance(value, dict) and value.get("path"):
        image = Image.open(value["path"])
    elif isinstance(value, str):
        image = Image.open(value)
    else:
        raise ValueError(f"unsupported value of type {type(value).__name__}")
    image.load()
    return image


def read_rows(dataset: datasets.Dataset, key):
    """`dataset[key]`, with text that is not UTF-8 said in one line naming the rows (pyarrow
    accepts such a file and fails only when the rows are read)."""
    try:
        return dataset[key]
    except UnicodeDecodeError as exc:
        where = f"rows {key.start}..{key.stop - 1}" if isinstance(key, slice) else f"row(s) {key}"
        raise AttribError(
            f"the data's {where} hold text that is not valid UTF-8 ({exc.reason} at byte "
            f"{exc.start}); fix or drop those rows"
        ) from None


def batches(
    dataset: datasets.Dataset, start: int, end: int, batch_size: int
) -> Iterator[tuple[range, dict[str, list]]]:
    """(row positions, columns as lists) for consecutive batches of rows [start, end)."""
    for lo in range(start, end, batch_size):
        hi = min(lo + batch_size, end)
        yield range(lo, hi), read_rows(dataset, slice(lo, hi))
