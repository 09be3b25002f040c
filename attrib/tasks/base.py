"""The Task interface: how a model family is loaded, batched, and turned into outputs.

A task owns the model and its processor. It binds dataset columns to the roles it needs,
turns rows into tensors, and computes the per-example output function f whose gradients
become features. Output functions: `loss` and, for classifiers, `margin` (TRAK's
log p_y - logsumexp over other classes); the out-to-loss factor Q = 1 - p_y is stored with each
example, as TRAK applies it on the training side.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from attrib import hub
from attrib.errors import AttribError
from attrib.tasks.options import ModelRef, TaskOptions


@dataclass
class TaskOutput:
    values: torch.Tensor  # (B,) the output function per example; its gradient is the feature
    scalars: dict[str, torch.Tensor] = field(default_factory=dict)  # (B,) each, stored per row


class Task(ABC):
    name: ClassVar[str]
    output_functions: ClassVar[tuple[str, ...]]
    scalar_columns: ClassVar[tuple[str, ...]] = ("loss", "out_to_loss")
    # The output retraining records for LDS by default (classifiers: the margin).
    evaluation_output: ClassVar[str] = "loss"
    # Prepared batches are cached across epochs and subsets when rows are fixed tensors.
    cache_batches: ClassVar[bool] = False
    query_role: ClassVar[str]  # what a --query value is: "text" or "image" (a file path)
    architecture_suffixes: ClassVar[tuple[str, ...]] = ()  # transformers classes it handles
    # Output functions whose gradient is L2-normalized per example before passes are averaged.
    normalized_outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: nn.Module, processor, options: TaskOptions, info: dict):
        self.model, self.processor, self.options, self.info = model, processor, options, info

    @classmethod
    def matches(cls, checkpoint: dict) -> bool:
        """Whether this task handles a checkpoint (`tasks.loading.describe_checkpoint`)."""
        config = checkpoint.get("config")
        names = getattr(config, "architectures", None) or []
        return any(name.endswith(cls.architecture_suffixes) for name in names)

    @classmethod
    @abstractmethod
    def load(cls, ref: ModelRef, dtype: torch.dtype, options: TaskOptions) -> Task:
        """Load model and processor; `info` records what identifies them."""

    @abstractmethod
    def bind_columns(self, dataset) -> dict[str, str | None]:
        """Choose and check the dataset columns this task reads: role -> column name.
        Callers pass the result to `prepare` (and record it in the store's settings)."""

    @abstractmethod
    def prepare(self, rows: dict[str, list], positions: range, device, columns: dict) -> dict:
        """Tensors for one batch of rows, read through the bound `columns`."""

    @abstractmethod
    def outputs(self, batch: dict, output_function: str) -> TaskOutput:
        """Per-example output function values (and the scalars stored beside features)."""

    def passes(self, batch: dict, output_function: str):
        """The output function as one or more backward passes whose per-example gradients
        are averaged (diffusion: one per timestep). Default: a single pass."""
        yield self.outputs(batch, output_function)

    def loss_passes(self, batch: dict):
        """The training loss split at the model's output, for Gauss-Newton products
        (`--solver`): (z, loss_of) per pass, z the model's output on the batch (its graph
        kept) and loss_of(z) each example's loss from it, convex in z. Passes are averaged."""
        raise AttribError(
            f"--solver needs the training loss split from the model's output, which {self.name} "
            "models do not provide; drop --solver"
        )

    def training_loss(self, batch: dict) -> torch.Tensor:
        """The scalar a training step minimizes (retraining, tail-patch)."""
        return self.training_losses(batch).mean()

    def training_losses(self, batch: dict) -> torch.Tensor:
        """Each example's training loss, (B,): `attrib train` weights them per example."""
        return self.outputs(batch, "loss").values

    def to(self, device) -> Task:
        """Move the model (and any frozen components) to a device."""
        self.model.to(device)
        return self

    def query_rows(self, values: list[str], stored: dict) -> tuple[dict, dict[str, list]]:
        """(columns, rows) of `--query` values for a store bound to the `stored` columns:
        by default each value is the query-role column itself (an image path, a text)."""
        columns = self.query_columns()
        return columns, {columns[self.query_role]: list(values)}

    def query_columns(self) -> dict[str, str | None]:
        """Columns for on-the-fly queries: the value itself (in the column named after
        `query_role`), no label: the model's own prediction is explained."""
        return {self.query_role: self.query_role}

    def settings(self, columns: dict) -> dict:
        """What the store records of the task: its columns and all its options (enough to
        load it again), plus values derived from them that change the features."""
        return {"columns": dict(columns), "options": self.options.record()}

    def available_outputs(self, columns: dict) -> tuple[str, ...]:
        """Output functions this task can compute on the bound columns."""
        return self.output_functions

    def output_for(self, method, columns: dict) -> str:
        """The output function featurize uses for a method: its query-side function when the
        data provides it (Journey-TRAK's trajectories), else its training-side one, else the
        loss (a margin asked of a language model)."""
        needs = method.requires
        for wanted in (needs.query_side_output, needs.train_output):
            if wanted in self.available_outputs(columns):
                return wanted
        if not needs.fallback:
            raise AttribError(
                f"--method {method.name} is defined on {needs.train_output} gradients, which "
                f"{self.name} models do not have (a diffusion model's); use trak-block or ekfac"
            )
        return "loss"

    def representation_site(self) -> tuple[nn.Module, str, int]:
        """Where `--method repsim` reads the model's own representation: the module, whether
        its "input" or its "output" is read, and the pooled width."""
        raise AttribError(f"--method repsim has no representation to read from {self.name} models")

    def pool_representation(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:
        """The site's tensor for a batch -> one (B, H) row per example."""
        return hidden.flatten(1)

    def predicted_labels(self, batch: dict):
        """The class the model predicts for each example of a batch, for tasks whose queries
        may come without a label (classifiers), else None."""
        return None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def load_pretrained(loader, ref: ModelRef, dtype: torch.dtype, what: str = "model"):
    hub.check_source(ref.source, "--model")
    pinned = hub.pinned_snapshot(ref.source, ref.revision)
    try:
        return loader.from_pretrained(
            pinned or ref.source,
            revision=None if pinned else ref.revision,
            dtype=dtype,
            trust_remote_code=ref.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise hub.load_error(what, ref.source, ref.revision, exc) from None


def attach_adapter(model: nn.Module, ref: ModelRef) -> tuple[nn.Module, dict | None]:
    """Wrap the model with a PEFT adapter (id or path); returns the model and its record."""
    if not ref.adapter:
        return model, None
    from peft import PeftModel

    source, commit = adapter_source(ref)
    if not isinstance(model, PeftModel):  # an in-memory PeftModel carries its adapter
        try:
            model = PeftModel.from_pretrained(model, source, is_trainable=False)
        except (OSError, ValueError, KeyError) as exc:
            raise hub.load_error("adapter", ref.adapter, ref.adapter_revision, exc) from None
    record = {
        "source": hub.absolute_if_local(ref.adapter),
        "revision": ref.adapter_revision,
        "fingerprint": hub.fingerprint(source, commit),
    }
    return model, record


def adapter_source(ref: ModelRef) -> tuple[str, str | None]:
    """The adapter's local path (downloaded from the hub when not a path) and its commit."""
    hub.check_source(ref.adapter, "--adapter")
    if Path(ref.adapter).expanduser().exists():
        return ref.adapter, None
    return _download_adapter(ref)


def _download_adapter(ref: ModelRef) -> tuple[str, str]:
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(ref.adapter, revision=ref.adapter_revision)
    except Exception as exc:  # hub errors, no network
        raise hub.load_error("adapter", ref.adapter, ref.adapter_revision, exc) from None
    return folder, Path(folder).name  # snapshot folders are named by commit hash


def model_record(ref: ModelRef, config, task: str, dtype: torch.dtype, adapter: dict | None):
    local = Path(ref.source).expanduser().exists()
    commit = getattr(config, "_commit_hash", None) or hub.resolved_commit(
        ref.source, ref.revision, "config.json"
    )
    return {
        "source": hub.absolute_if_local(ref.source),
        "revision": ref.revision,
        "commit": None if local else commit,
        "fingerprint": hub.fingerprint(ref.source, None if local else commit),
        "architecture": (getattr(config, "architectures", None) or [type(config).__name__])[0],
        "task": task,
        "dtype": str(dtype).removeprefix("torch."),
        "adapter": adapter,
    }


def require_column(column: str | None, role: str, dataset) -> str:
    if column is None:
        raise AttribError(
            f"the dataset has no {role} column; pass --{role}-column "
            f"(columns: {list(dataset.column_names)})"
        )
    return column
