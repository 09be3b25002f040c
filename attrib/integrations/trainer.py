"""`AttribCallback`: featurize every checkpoint a Hugging Face `Trainer` (or TRL's
`SFTTrainer`, a Trainer) saves, with the model as it is in memory, and end with the TracInCP
ensemble over them.

    trainer = Trainer(..., callbacks=[AttribCallback("stores/run", data="train.parquet",
                                                     queries={"eval": "eval.parquet"})])

At each save, for checkpoint-N: OUT/checkpoint-N/train (the training data) and
OUT/checkpoint-N/NAME per query set, each the store `attrib featurize --model
OUTPUT_DIR/checkpoint-N --data ... --dtype (the model's)` writes, through the same code:
the same manifest, fingerprints (of the saved folder) and shards, resumable the same way.
A PEFT model's checkpoint holds its adapter only: the stores read `--model BASE --adapter
OUTPUT_DIR/checkpoint-N`, and only the adapter's layers are featurized. At the end of
training, OUT/tracincp/train and OUT/tracincp/NAME combine the checkpoints, each weighted by
the learning rate the Trainer logs at that step (TracInCP), so `attrib score --train
OUT/tracincp/train --queries OUT/tracincp/eval` works at once.

The list of featurized checkpoints lives on disk, not only in memory: each finished
checkpoint's stores get OUT/checkpoint-N/attrib-checkpoint.json (its step, learning rate and
the training's id, from OUT/attrib-training.json), so a killed training resumed with
`trainer.train(resume_from_checkpoint=True)` ends with every checkpoint's stores in its
ensemble, and a new training into the same folder never mixes in an earlier one's.

The data is read the way featurize reads it (a hub id, a folder or a data file, the raw
columns, not the Trainer's tokenized dataset): the store's rows are the dataset's rows.
Under the Trainer's own DDP/accelerate setup every rank featurizes its share of the shards,
as featurize does under a launcher.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from transformers import TrainerCallback

from attrib import log
from attrib.atomic import write_text
from attrib.featurize.options import FEATURIZE_METHOD, FeaturizeOptions
from attrib.featurize.run import run_featurize
from attrib.jsonio import load_json_or_none
from attrib.methods import method_class
from attrib.store.ensemble import merge

TRAINING_FILE = "attrib-training.json"
CHECKPOINT_FILE = "attrib-checkpoint.json"
DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class AttribCallback(TrainerCallback):
    def __init__(
        self,
        out: str | Path,
        data: str,
        queries: dict[str, str | dict] | None = None,
        method: str = FEATURIZE_METHOD,
        base_model: str | None = None,
        ensemble: bool = True,
        **options,
    ):
        """`out`: the folder of the stores. `data`: the training data as featurize reads it.
        `queries`: name -> data source, or name -> dict of featurize options for that set
        (`{"data": ..., "split": "test"}`). `method`: the method the stores are made for
        (default: featurize's for the models a Trainer trains, shampoo). `base_model`: for a
        PEFT model, the base model's id or folder (default: the one the adapter's config
        names). `options`: any other `attrib featurize` option, by its Python name
        (`max_examples=1000`, `proj_dim=2048`, `text_column="text"`)."""
        self.out, self.base_model, self.ensemble = Path(out), base_model, ensemble
        self.sets = {"train": {"data": data}}
        for name, value in (queries or {}).items():
            if name == "train":
                raise ValueError("the query set name 'train' is taken by the training data")
            self.sets[name] = {"data": value} if isinstance(value, str) else dict(value)
        self.options = {"method": method, **options}
        # TrackStar: each checkpoint's gradients over its own saved optimizer state (the
        # Trainer writes optimizer.pt before it calls on_save), unless one state is given.
        self._own_state = (
            method_class(method).requires.optimizer_state and "optimizer_state" not in options
        )
        self.checkpoints: list[tuple[Path, float]] = []  # (stores folder, learning rate)
        self._training: str | None = None
        self._step_lr: float | None = None
        state = {"optimizer_state": "."} if self._own_state else {}  # a checkpoint's, later
        FeaturizeOptions(
            model="check", out=self.out / "check", **self.sets["train"], **self.options, **state
        )  # fmt: skip  (bad options fail before training)

    def on_train_begin(self, args, state, control, processing_class=None, model=None, **kwargs):
        # featurize (and the callback, which must match it) loads the tokenizer or image
        # processor from the checkpoint folder; the Trainer saves one there only if given one.
        peft = bool(getattr(model, "peft_config", None))  # PEFT: read from the base model
        if processing_class is None and not peft:
            raise ValueError(
                "AttribCallback: the Trainer saves no tokenizer or image processor with its "
                "checkpoints, so they cannot be featurized; pass processing_class=... to the "
                "Trainer"
            )
        self._training = self._training_id(fresh=state.global_step == 0)
        if state.global_step > 0:
            self._catch_up(args, state.global_step, model)
        self.checkpoints = self._saved_checkpoints(state.global_step)
        return control

    def _catch_up(self, args, resumed_at: int, model) -> None:
        """Featurize the checkpoints a killed training saved but did not featurize (the kill
        came between the Trainer's save and the callback's): the one it resumes from is the
        model in memory; earlier ones are read from their folders."""
        done = {folder.name for folder, _ in self._saved_checkpoints(resumed_at)}
        for folder in sorted(Path(args.output_dir).glob("checkpoint-*")):
            step = folder.name.removeprefix("checkpoint-")
            if not step.isdigit() or int(step) > resumed_at or folder.name in done:
                continue
            rate = _logged_rate(folder, int(step))
            in_memory = model if int(step) == resumed_at else None
            self._featurize_checkpoint(folder, int(step), rate, model, in_memory)

    def _training_id(self, fresh: bool) -> str:
        """The id of this training (kept when it resumes), shared by every rank."""
        path = self.out / TRAINING_FILE
        if _rank() == 0 and (fresh or load_json_or_none(path) is None):
            import uuid

            write_text(path, json.dumps({"training": uuid.uuid4().hex}) + "\n")
        _wait_for_every_rank()
        return load_json_or_none(path)["training"]

    def _saved_checkpoints(self, up_to: int) -> list[tuple[Path, float]]:
        """(stores folder, learning rate) of this training's featurized checkpoints on disk."""
        found = []
        for record_path in self.out.glob(f"checkpoint-*/{CHECKPOINT_FILE}"):
            record = load_json_or_none(record_path)
            if not record or record.get("training") != self._training:
                continue
            step = record.get("step")
            if isinstance(step, int) and step <= up_to:
                found.append((step, record_path.parent, float(record["learning_rate"])))
        return [(folder, rate) for _, folder, rate in sorted(found)]

    def on_step_begin(self, args, state, control, optimizer=None, **kwargs):
        # The learning rate this step uses (the one the Trainer logs for it); by on_save the
        # scheduler has moved on to the next step's (0 after a linear schedule's last step).
        if optimizer is not None:
            self._step_lr = float(optimizer.param_groups[0]["lr"])
        return control

    def on_save(self, args, state, control, model=None, **kwargs):
        _wait_for_every_rank()  # the main process wrote the checkpoint folder
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        rate = self._learning_rate(state)
        self._featurize_checkpoint(folder, state.global_step, rate, model, model)
        return control

    def _featurize_checkpoint(self, folder: Path, step: int, rate: float, model, in_memory):
        """Every set's store of one checkpoint, then its record (what makes it count)."""
        stores = self.out / folder.name
        reference = self._model_reference(model, folder)
        was_training = model.training
        flags = {name: p.requires_grad for name, p in model.named_parameters()}
        try:
            with _full_precision(model):
                state = {"optimizer_state": str(folder)} if self._own_state else {}
                self._featurize(model, reference, stores, in_memory, state)
        finally:
            model.train(was_training)
            for name, p in model.named_parameters():
                p.requires_grad_(flags[name])
        if _rank() == 0:
            record = {"training": self._training, "step": step, "learning_rate": rate}
            write_text(stores / CHECKPOINT_FILE, json.dumps(record) + "\n")
        self.checkpoints = [c for c in self.checkpoints if c[0] != stores] + [(stores, rate)]
        log.info(f"attrib: featurized {folder.name} into {stores}")

    def _featurize(self, model, reference: dict, stores: Path, in_memory, state: dict) -> None:
        """`model` gives the dtype and device; `in_memory`: the model to featurize as it is,
        or None to read the checkpoint folder; `state`: the checkpoint's optimizer state."""
        for name, data_options in self.sets.items():
            first = next(model.parameters())
            defaults = {  # the model's own dtype and device; the user's options win
                "dtype": DTYPE_NAMES.get(first.dtype, "float32"),
                "device": str(first.device),
                "progress": False,
                "command": ("attrib.integrations.AttribCallback",),
            }
            values = {**defaults, **self.options, **state, **data_options}
            options = FeaturizeOptions(**reference, out=stores / name, **values)
            run_featurize(options, model=in_memory)

    def on_train_end(self, args, state, control, **kwargs):
        _wait_for_every_rank()  # rank 0 wrote the last checkpoint's record
        self.checkpoints = self._saved_checkpoints(state.global_step)
        # A checkpoint saved at a learning rate of 0 (a schedule's end) adds nothing to
        # TracInCP's lr-weighted sum.
        members = [(stores, rate) for stores, rate in self.checkpoints if rate > 0]
        if self.ensemble and self._own_state:
            log.info("attrib: no TracInCP ensemble of TrackStar stores (each checkpoint's "
                     "gradients are divided by its own optimizer state)")  # fmt: skip
            return control
        if not self.ensemble or len(members) < 2:
            if self.ensemble:
                log.info("attrib: fewer than two checkpoints trained at a learning rate above 0; "
                         "no TracInCP ensemble")  # fmt: skip
            return control
        rates = [rate for _, rate in members]
        if _rank() == 0:
            for name in self.sets:
                stores = [folder / name for folder, _ in members]
                merge(self.out / "tracincp" / name, stores, rates)
            log.info(f"attrib: TracInCP ensemble of {len(rates)} checkpoints in "
                     f"{self.out / 'tracincp'}")  # fmt: skip
        _wait_for_every_rank()
        return control

    def _learning_rate(self, state) -> float:
        if self._step_lr is not None:
            return self._step_lr
        logged = [e["learning_rate"] for e in state.log_history if "learning_rate" in e]
        if not logged:
            raise ValueError("attrib: no learning rate known at this checkpoint")
        return float(logged[-1])

    def _model_reference(self, model, folder: Path) -> dict:
        """The featurize options that name this checkpoint (model, and adapter for PEFT)."""
        peft_config = getattr(model, "peft_config", None)
        if not peft_config:
            return {"model": str(folder)}
        base = self.base_model or next(iter(peft_config.values())).base_model_name_or_path
        return {"model": base, "adapter": str(folder)}


@contextlib.contextmanager
def _full_precision(model):
    """Without the Trainer's mixed precision: accelerate wraps a prepared model's forward in
    autocast (bf16/fp16) and keeps the original as `_original_forward`; featurize must run the
    model as `attrib featurize` runs the saved checkpoint, in its own dtype."""
    wrapped = model.__dict__.get("forward")
    original = model.__dict__.get("_original_forward")
    if wrapped is None or original is None:
        yield
        return
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapped


def _logged_rate(folder: Path, step: int) -> float:
    """The learning rate the Trainer logged at `step` (the last one logged before it), from
    the checkpoint's trainer_state.json."""
    state = load_json_or_none(folder / "trainer_state.json") or {}
    logged = [(e["step"], e["learning_rate"]) for e in state.get("log_history", [])
              if "learning_rate" in e and e.get("step", step + 1) <= step]  # fmt: skip
    if not logged:
        raise ValueError(f"attrib: no learning rate logged up to {folder.name}")
    return float(max(logged)[1])


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _wait_for_every_rank() -> None:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
