"""`evaluate retrain --start-from MODEL`: where each subset's fine-tuning starts when the
training store's model is itself the fine-tuned result (retraining from it would start from
a model that has already seen every removed row)."""

from __future__ import annotations

from attrib.errors import AttribError
from attrib.tasks.loading import DTYPES, load_task, recorded_options
from attrib.tasks.options import ModelRef


def start_from(task, settings: dict, source: str) -> tuple[dict, str]:
    """`source`'s weights for `task.model` (same architecture, checked), and their
    fingerprint, recorded with the ground truth's parts. The caller loads them once the
    store's own model has done its part (the predicted labels of unlabeled queries)."""
    model = settings["model"]
    if model.get("adapter"):
        raise AttribError(
            "--start-from applies to full models; for a LoRA store, fine-tuning already starts "
            "from the base model with the adapter as recorded"
        )
    start = load_task(
        ModelRef(source), settings["task"], DTYPES[model["dtype"]],
        recorded_options(settings["task_options"]),
    )  # fmt: skip
    ours, theirs = task.model.state_dict(), start.model.state_dict()
    mismatched = [k for k in ours if k not in theirs or theirs[k].shape != ours[k].shape]
    if mismatched or len(ours) != len(theirs):
        raise AttribError(
            f"--start-from {source} is not the architecture of the store's model "
            f"({len(mismatched)} tensors differ, e.g. {(mismatched or ['(extra keys)'])[0]})"
        )
    return theirs, start.info["fingerprint"]
