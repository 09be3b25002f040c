"""Image classifiers (`AutoModelForImageClassification` + `AutoImageProcessor`).

Output functions: `loss` (cross-entropy, for TracIn-style methods) and `margin`
(log p_y - logsumexp_{c != y} logit_c, TRAK's choice). Since
dloss/dtheta = -(1 - p_y) dmargin/dtheta, the out-to-loss factor Q = 1 - p_y is stored per
example. Rows without a label (queries) use the model's predicted class.
"""

from __future__ import annotations

import datasets
import torch
from torch import nn
from transformers import AutoImageProcessor, AutoModelForImageClassification

from attrib import hub
from attrib.data import choose_column, decode_image
from attrib.errors import AttribError
from attrib.tasks.base import (
    ModelRef,
    Task,
    TaskOptions,
    TaskOutput,
    attach_adapter,
    load_pretrained,
    model_record,
    require_column,
)


class ImageClassifierTask(Task):
    name = "image-classification"
    query_role = "image"
    architecture_suffixes = ("ForImageClassification",)
    output_functions = ("loss", "margin")
    evaluation_output = "margin"
    cache_batches = True

    @classmethod
    def load(
        cls, ref: ModelRef, dtype: torch.dtype, options: TaskOptions, model=None
    ) -> ImageClassifierTask:
        if model is None:
            model = load_pretrained(AutoModelForImageClassification, ref, dtype)
        try:
            processor = AutoImageProcessor.from_pretrained(
                ref.source, revision=ref.revision, trust_remote_code=ref.trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise hub.load_error("image processor of", ref.source, ref.revision, exc) from None
        model, adapter = attach_adapter(model, ref)
        info = model_record(ref, model.config, cls.name, dtype, adapter)
        return cls(model, processor, options, info)

    def bind_columns(self, dataset) -> dict[str, str | None]:
        features = dataset.features
        images = [n for n, f in features.items() if isinstance(f, datasets.Image)]
        if not images:
            images = [n for n in ("image", "img", "path") if n in features]
        image = choose_column(dataset, "image", self.options.image_column, images)
        labels = [n for n, f in features.items() if isinstance(f, datasets.ClassLabel)]
        if not labels:
            labels = [n for n in ("label", "labels") if n in features]
        label = choose_column(dataset, "label", self.options.label_column, labels)
        return {"image": require_column(image, "image", dataset), "label": label}

    def prepare(self, rows: dict[str, list], positions: range, device, columns: dict) -> dict:
        column = columns["image"]
        mode = "L" if getattr(self.model.config, "num_channels", 3) == 1 else "RGB"
        images = [
            decode_image(value, positions[i], column).convert(mode)
            for i, value in enumerate(rows[column])
        ]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"]
        batch = {"pixel_values": pixels.to(device=device, dtype=self.model.dtype)}
        label_column = columns.get("label")
        if label_column is not None:
            labels = rows[label_column]
            num_labels = self.model.config.num_labels
            for i, label in enumerate(labels):
                if not isinstance(label, int) or not 0 <= label < num_labels:
                    raise AttribError(
                        f"row {positions[i]}: label {label!r} in column {label_column!r} is not "
                        f"a class index in [0, {num_labels}) of this model; check --label-column"
                    )
            batch["labels"] = torch.tensor(labels, device=device)
        return batch

    def outputs(self, batch: dict, output_function: str) -> TaskOutput:
        logits = self.model(pixel_values=batch["pixel_values"]).logits
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float64 stays
        labels = batch.get("labels")
        if labels is None:  # a query without a label: explain the predicted class
            labels = logits.detach().argmax(-1)
        picked = logits.gather(1, labels[:, None])[:, 0]
        log_p = picked - logits.logsumexp(-1)
        others = logits.scatter(1, labels[:, None], float("-inf")).logsumexp(-1)
        margin = picked - others
        loss = -log_p
        scalars = {"loss": loss.detach(), "out_to_loss": 1 - log_p.detach().exp()}
        scalars["explained"] = labels.detach()  # the class explained (not a store column)
        values = margin if output_function == "margin" else loss
        return TaskOutput(values, scalars)

    def loss_passes(self, batch: dict):
        logits = self.model(pixel_values=batch["pixel_values"]).logits
        labels = batch.get("labels")
        if labels is None:
            labels = logits.detach().argmax(-1)

        def loss_of(z):
            z = z.to(torch.promote_types(z.dtype, torch.float32))
            return torch.nn.functional.cross_entropy(z, labels, reduction="none")

        yield logits, loss_of

    def representation_site(self):
        head = getattr(self.model, "classifier", None)
        linear = [] if head is None else [m for m in head.modules() if isinstance(m, nn.Linear)]
        if not linear:
            raise AttribError(
                "--method repsim reads the features a classifier's head reads, and this model "
                "has no `classifier` with a linear layer; use a gradient method"
            )
        return head, "input", linear[0].in_features

    def predicted_labels(self, batch: dict):
        return self.model(pixel_values=batch["pixel_values"]).logits.argmax(-1)


TASK = ImageClassifierTask
