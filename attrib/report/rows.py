"""A store's rows as people see them, read from the dataset the store's manifest names: short
previews for score's records and tables (a text snippet, a label, an image path), and for
the HTML report longer text fields and image thumbnails (PNG bytes). Rows are the store's
`index` values (rows of the source split). When the dataset cannot be opened (a hub dataset
offline, a moved file), rows are shown by number with one warning. The one row reader of
attrib: score, magic, the demo and the report all read through it."""

from __future__ import annotations

import io
from pathlib import Path

import datasets

from attrib import log
from attrib.data import decode_image, open_dataset, read_rows, ref_from_settings, undecoded
from attrib.errors import AttribError

TEXT_LIMIT = 600  # the report's text fields
SNIPPET = 80  # a preview's


class RowReader:
    """`store`: anything with a store's `settings` (its dataset and task columns); `without`
    says what is lost when the dataset cannot be opened."""

    def __init__(self, store, without: str = "no previews"):
        self.columns = store.settings["task_options"].get("columns", {})
        try:
            dataset = open_dataset(ref_from_settings(store.settings["dataset"]))
            self.dataset = undecoded(dataset, self.columns.get("image"))
        except AttribError as exc:
            log.warn(f"{without}: the training dataset cannot be opened ({exc})")
            self.dataset = None

    def previews(self, indices) -> dict[int, dict]:
        """Row -> {text/prompt/completion/messages snippet, label, image path}."""
        if self.dataset is None:
            return {}
        wanted = sorted({int(i) for i in indices})
        return {i: self._preview(row) for i, row in zip(wanted, self.dataset.select(wanted))}

    def label_name(self, index: int):
        """A class index as the training data names it (its ClassLabel names), else itself."""
        label = self.columns.get("label")
        feature = self.dataset.features.get(label) if self.dataset is not None and label else None
        if isinstance(feature, datasets.ClassLabel) and 0 <= index < feature.num_classes:
            return feature.int2str(index)
        return index

    def _preview(self, row: dict) -> dict:
        preview = {}
        for key in ("text", "prompt", "completion", "messages"):  # language-model data
            column = self.columns.get(key)
            if column:
                value = row[column]
                if isinstance(value, list):  # messages: their contents, in order
                    value = " | ".join(str(m.get("content", "")) for m in value)
                value = " ".join(str(value).split())
                preview[key] = value[:SNIPPET] + ("..." if len(value) > SNIPPET else "")
        if self.columns.get("label"):
            preview["label"] = self._label(row)
        image = self.columns.get("image")
        if image:
            cell = row[image]
            path = cell.get("path") if isinstance(cell, dict) else cell
            if path:
                preview["image"] = str(path)
        return preview

    def _label(self, row: dict):
        label = self.columns["label"]
        feature, value = self.dataset.features[label], row[label]
        return feature.int2str(value) if isinstance(feature, datasets.ClassLabel) else value

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
        if self.columns.get("label"):
            fields["label"] = self._label(row)
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
