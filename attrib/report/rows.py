"""A store's rows as a report shows them: image thumbnails (PNG bytes) and text fields
(text, prompt and completion, chat messages, caption, label), read from the dataset the
store's manifest names. Rows are the store's `index` values (rows of the source split)."""

from __future__ import annotations

import io
from pathlib import Path

import datasets

from attrib import log
from attrib.data import decode_image, open_dataset, read_rows, ref_from_settings, undecoded
from attrib.errors import AttribError

TEXT_LIMIT = 600


class RowReader:
    def __init__(self, store):
        self.columns = store.settings["task_options"].get("columns", {})
        try:
            dataset = open_dataset(ref_from_settings(store.settings["dataset"]))
            self.dataset = undecoded(dataset, self.columns.get("image"))
        except AttribError as exc:
            log.warn(f"the report shows row numbers only: {exc}")
            self.dataset = None

    @property
    def has_images(self) -> bool:
        return self.dataset is not None and bool(self.columns.get("image"))

    def thumbnails(self, indices, size: int) -> dict[int, bytes]:
        column = self.columns["image"]
        out = {}
        for index in indices:
            image = decode_image(read_rows(self.dataset, int(index))[column], int(index), column)
            out[int(index)] = _png(image, size)
        return out

    def texts(self, indices) -> dict[int, dict]:
        if self.dataset is None:
            return {}
        return {int(i): self._fields(read_rows(self.dataset, int(i))) for i in indices}

    def _fields(self, row: dict) -> dict:
        fields = {}
        pieces = []
        for key in ("text", "prompt", "completion", "caption"):
            column = self.columns.get(key)
            if column and row.get(column) is not None:
                pieces.append(str(row[column]))
        column = self.columns.get("messages")
        if column:
            pieces += [f"{m.get('role')}: {m.get('content')}" for m in row[column] or []]
        if pieces:
            text = " | ".join(" ".join(p.split()) for p in pieces)
            fields["text"] = text[:TEXT_LIMIT] + ("..." if len(text) > TEXT_LIMIT else "")
        label = self.columns.get("label")
        if label:
            feature = self.dataset.features[label]
            value = row[label]
            fields["label"] = (
                feature.int2str(value) if isinstance(feature, datasets.ClassLabel) else value
            )
        return fields

    @staticmethod
    def file_thumbnail(value: str, size: int) -> bytes | None:
        """A --query image file as a thumbnail, or None when the value is not one."""
        try:
            path = Path(value)
            if not path.is_file():
                return None
            return _png(decode_image(str(path), 0, "--query"), size)
        except (OSError, ValueError, AttribError):
            return None


def _png(image, size: int) -> bytes:
    from PIL import Image

    image = image.convert("RGB")
    image.thumbnail((size, size), Image.NEAREST if max(image.size) < size else Image.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
