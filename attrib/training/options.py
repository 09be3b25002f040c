"""`attrib train`'s options, defined once (the CLI is built from this class)."""

from __future__ import annotations

from pathlib import Path

from attrib.errors import AttribError
from attrib.hub import check_data_source, check_source
from attrib.option_groups import OnDevice, TaskColumns, WithMemory
from attrib.options import Options, at_least, option
from attrib.tasks import task_names
from attrib.tasks.options import ModelRef, TaskOptions
from attrib.training.recipe_flags import RecipeFlags

TRAIN_DTYPES = ("float32", "float64")


class TrainOptions(RecipeFlags, TaskColumns, WithMemory, OnDevice, Options):
    """Train or fine-tune a checkpoint on a dataset and record the run so it can be replayed
    exactly: every step's rows, parameter and optimizer-state snapshots, and the trained
    checkpoint in Hugging Face format (RUN/model, which featurize reads). The loss is
    sum_i w_i l_i / batch size with w = 1: the run is a function of per-example weights,
    which `evaluate retrain --same-run` and `attrib magic` use. `--check RUN` replays a
    recorded run and says whether it reproduces the checkpoint bitwise."""

    model: str | None = option(None, help="Model hub id or local folder to start from.", short="-m")
    data: str | None = option(
        None, help="Training dataset: hub id, folder or data file.", short="-d"
    )
    out: Path | None = option(None, help="Run folder to write.", short="-o", output="folder")
    check_run: Path | None = option(
        None,
        flag="--check",
        help="Replay this recorded run instead, and compare with its checkpoint.",
    )
    split: str = option("train", help="Dataset split.")
    adapter: str | None = option(
        None, help="PEFT adapter id or folder: only its LoRA weights train."
    )
    task: str | None = option(
        None, help="Model family (default: read from the model).", choices=task_names
    )
    max_examples: int | None = option(None, help="Train on the first N rows only.")
    snapshot_every: int | None = option(
        None,
        help="Steps between snapshots (default: about sqrt(steps), more apart if "
        "--memory-gb would not hold the segment a metagradient recomputes).",
    )
    dtype: str = option(
        "float32", choices=TRAIN_DTYPES, help="Parameter dtype (float64: exact checks)."
    )
    fsdp: bool = option(
        False,
        help="Shard the model over the launch's processes (FSDP2), for a model larger than "
        "one device: every process runs every step, so it saves memory, not time; the run "
        "recorded is the one an unsharded process records.",
    )
    trust_remote_code: bool = option(False, help="Allow model code from the hub to run.")
    progress: bool = option(True, help="Show a progress bar on stderr.", cli=False)

    def check(self) -> None:
        super().check()
        if self.check_run is not None:
            if not (Path(self.check_run) / "run.json").is_file():
                raise AttribError(f"--check {self.check_run} is not a recorded run (no run.json)")
            given = [f for f in ("model", "data", "out") if getattr(self, f) is not None]
            given += ["fsdp"] if self.fsdp else []
            if given:
                flags = ", ".join("--" + f for f in given)
                raise AttribError(f"--check replays the recorded run as it is: drop {flags}")
            return
        if self.model is None or self.data is None or self.out is None:
            raise AttribError("pass --model, --data and --out (or --check RUN)")
        check_source(self.model, "--model")
        if self.adapter:
            check_source(self.adapter, "--adapter")
        check_data_source(self.data)
        for name in ("max_examples", "snapshot_every"):
            at_least(getattr(self, name), 1, "--" + name.replace("_", "-"))

    @property
    def model_ref(self) -> ModelRef:
        return ModelRef(self.model, None, self.adapter, None, self.trust_remote_code)

    @property
    def data_ref(self):
        from attrib.data import DataRef

        return DataRef(self.data, self.split)

    @property
    def task_options(self) -> TaskOptions:
        return self.compose(TaskOptions)
