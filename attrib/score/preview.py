"""Short previews of training examples for score output: a text snippet, a label, an image path.

The training dataset is reopened from the store's manifest; when that is not possible (a hub
dataset offline, a moved file) previews are left out with one warning.
"""

from __future__ import annotations

import datasets

from attrib import log
from attrib.data import open_dataset, ref_from_settings, undecoded
from attrib.errors import AttribError
from attrib.store import Store

SNIPPET = 80


class Previewer:
    def __init__(self, store: Store):
        info = store.settings["dataset"]
        self.columns = store.settings["task_options"].get("columns", {})
        try:
            dataset = open_dataset(ref_from_settings(info))
            self.dataset = undecoded(dataset, self.columns.get("image"))
        except AttribError as exc:
            log.warn(f"no previews: the training dataset cannot be opened ({exc})")
            self.dataset = None

    def __call__(self, indices) -> dict[int, dict]:
        if self.dataset is None:
            return {}
        wanted = sorted({int(i) for i in indices})
        rows = self.dataset.select(wanted)
        out = {}
        for i, row in zip(wanted, rows):
            out[i] = self._one(row)
        return out

    def label_name(self, index: int):
        """A class index as the training data names it (its ClassLabel names), else itself."""
        label = self.columns.get("label")
        feature = self.dataset.features.get(label) if self.dataset is not None and label else None
        if isinstance(feature, datasets.ClassLabel) and 0 <= index < feature.num_classes:
            return feature.int2str(index)
        return index

    def _one(self, row: dict) -> dict:
        preview = {}
        for key in ("text", "prompt", "completion", "messages"):  # language-model data
            column = self.columns.get(key)
            if column:
                value = row[column]
                if isinstance(value, list):  # messages: their contents, in order
                    value = " | ".join(str(m.get("content", "")) for m in value)
                value = " ".join(str(value).split())
                preview[key] = value[:SNIPPET] + ("..." if len(value) > SNIPPET else "")
        label = self.columns.get("label")
        if label:
            feature = self.dataset.features[label]
            value = row[label]
            preview["label"] = (
                feature.int2str(value) if isinstance(feature, datasets.ClassLabel) else value
            )
        image = self.columns.get("image")
        if image:
            cell = row[image]
            path = cell.get("path") if isinstance(cell, dict) else cell
            if path:
                preview["image"] = str(path)
        return preview
