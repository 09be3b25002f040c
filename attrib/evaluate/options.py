"""The options of every `attrib evaluate` command, defined once (the CLI is built from them)."""

from __future__ import annotations

from pathlib import Path

from attrib.errors import AttribError
from attrib.execution import ArrayTask
from attrib.hub import check_source
from attrib.methods import STORE_DEFAULT_HELP, default_for_store, method_names
from attrib.option_groups import ExactSolve, OnDevice, Rescaled, WithMemory
from attrib.options import (
    Options,
    at_least,
    device_option,
    existing_file,
    existing_store,
    option,
    positive,
)
from attrib.training.recipe import INITS, OPTIMIZERS, SCHEDULES, Recipe
from attrib.weights.groups import groups_help

OUTPUTS = ("margin", "loss")


def _train() -> Path:
    return option(help="Training store.", short="-t")


def _methods() -> tuple[str, ...]:
    return option(
        (),
        flag="--method",
        separator=",",
        choices=method_names,
        help="Methods, comma-separated or repeated " + STORE_DEFAULT_HELP + ".",
    )


def _weights() -> tuple[str, ...]:
    return option(
        ("none",),
        separator=",",
        help="Weights files, comma-separated or repeated; 'none' for unweighted.",
    )


def _damping() -> float | None:
    return option(None, flag="--lambda", help="Relative kernel damping (default: each method's).")


# RetrainOptions' flags that override a --recipe file's fields (None: the file's, else the
# Recipe default).
RECIPE_OVERRIDES = ("init", "epochs", "lr", "batch_size", "optimizer", "weight_decay", "schedule")


class _Evaluation(Options):
    """Every evaluation reads a training store, most a query store, some an input file:
    checked first, before anything heavy is imported."""

    def __post_init__(self) -> None:
        existing_store(self.train, "--train")
        existing_store(getattr(self, "queries", None), "--queries")
        for name in ("groundtruth", "mislabeled", "contributors"):
            existing_file(getattr(self, name, None), "--" + name)
        super().__post_init__()


class _Compared(Rescaled, WithMemory, OnDevice, _Evaluation):
    """Options of the commands that compare methods x weights files."""

    device: str = device_option("scoring (and tail-patch's steps)")

    def check(self) -> None:
        if not self.methods:
            object.__setattr__(self, "methods", (default_for_store(self.train),))
        super().check()
        at_least(getattr(self, "damping", None), 0, "--lambda")

    def weight_paths(self) -> list[Path | None]:
        return [None if w == "none" else Path(w) for w in self.weights]


class LdsOptions(ExactSolve, _Compared):
    """Linear datamodeling score: Spearman between retrained outputs and summed scores."""

    train: Path = _train()
    queries: Path = option(help="Query store (evaluation queries).")
    groundtruth: Path = option(help="Ground truth .npz from `evaluate retrain`.")
    methods: tuple[str, ...] = _methods()
    weights: tuple[str, ...] = _weights()
    damping: float | None = _damping()
    scores: tuple[str, ...] = option(
        (),
        separator=",",
        help="Score matrices (.npy, queries x training rows, higher = more helpful) to measure "
        "beside the methods: `attrib magic --out`, `score --out`, or another tool's.",
    )
    only_scores: bool = option(False, help="Measure only the --scores files (no --method rows).")
    rescore: int = option(
        0,
        help="Measure two-stage scoring as `score --rescore N` does it: each query's N "
        "candidates re-scored on exact gradients recomputed from the checkpoint (tracin, "
        "kfac, ekfac, shampoo). 0: off.",
    )

    def check(self) -> None:
        super().check()
        at_least(self.rescore, 0, "--rescore")
        if self.rescore and self.rif:
            raise AttribError("--rescore scores candidates on exact gradients: drop --rif")


class RetrainOptions(_Evaluation):
    """Retrain on random subsets and record each query's output: the LDS ground truth."""

    train: Path = _train()
    queries: Path = option(help="Query store whose outputs are recorded.")
    out: Path = option(help="Ground truth .npz to write.", output="file", suffixes=(".npz",))
    subsets: int = option(50, help="Number of random subsets M.")
    alpha: float = option(0.5, help="Fraction of training examples in each subset.")
    seed: int = option(0, help="Seed for subsets and training.")
    seeds: int = option(
        1,
        help="Models trained per subset, each from its own seed, their outputs averaged: a "
        "less noisy ground truth; with 2 or more its split-half reliability is reported.",
    )
    same_run: Path | None = option(
        None,
        help="The same-run ground truth of a run `attrib train` recorded: each subset replays "
        "that run (same init, batches and noise) with the removed rows' loss weights 0. "
        "--train must be featurized from RUN/model on the run's data; no recipe flags.",
    )
    start_from: str | None = option(
        None,
        help="With --init finetune: the checkpoint (path or hub id) each subset's fine-tuning "
        "starts from. Default: the training store's own model, which is wrong when that model "
        "is itself the result of fine-tuning on these rows: give the model it started from.",
    )
    recipe: Path | None = option(None, help="JSON recipe file; the flags below override it.")
    init: str | None = option(
        None,
        choices=INITS,
        help=f"finetune (from the checkpoint) or scratch (config) (default {Recipe.init}).",
    )
    epochs: int | None = option(None, help=f"Epochs per subset (default {Recipe.epochs}).")
    lr: float | None = option(None, help=f"Learning rate (default {Recipe.lr:g}).")
    batch_size: int | None = option(None, help=f"Batch size (default {Recipe.batch_size}).")
    optimizer: str | None = option(
        None, choices=OPTIMIZERS, help=f"Optimizer (default {Recipe.optimizer})."
    )
    weight_decay: float | None = option(
        None, help=f"Weight decay (default {Recipe.weight_decay:g})."
    )
    schedule: str | None = option(
        None, choices=SCHEDULES, help=f"Learning-rate schedule (default {Recipe.schedule})."
    )
    output: str | None = option(
        None,
        choices=OUTPUTS,
        help="Output recorded (default: the task's evaluation output, margin for classifiers, "
        "higher = better; loss otherwise).",
    )
    timesteps: int | None = option(
        None,
        help="Diffusion: timesteps the recorded loss averages over, each with its own noise "
        "(default: the training store's --timesteps).",
    )
    noise_seed: int | None = option(
        None, help="Diffusion: seed of the recorded loss's noise (default: the training store's)."
    )
    fsdp: bool = option(
        False,
        help="Shard each retrained model over the launch's processes (FSDP2), for a model "
        "larger than one device: every process trains every subset, so it saves memory, not "
        "time; the ground truth is the one an unsharded run writes.",
    )
    shard: str = option(
        "0/1",
        help="This array job's share i/n of the subsets, e.g. "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT (the last job to finish writes --out).",
    )
    device: str = device_option()
    progress: bool = option(True, help="Show a progress bar on stderr.", cli=False)

    def check(self) -> None:
        at_least(self.subsets, 2, "--subsets")
        at_least(self.seeds, 1, "--seeds")
        at_least(self.timesteps, 1, "--timesteps")
        if not 0 < self.alpha < 1:
            raise AttribError("--alpha must be between 0 and 1")
        ArrayTask.parse(self.shard)
        self.recipe_resolved  # noqa: B018  (a bad recipe fails here, before any work)
        if self.fsdp and self.same_run is None and self.recipe_resolved.init != "finetune":
            raise AttribError(
                "--fsdp retrains from the checkpoint, sharded: it needs --init finetune "
                "(a model built from its config starts unsharded on every process)"
            )
        if self.start_from is not None:
            if self.recipe_resolved.init != "finetune":
                raise AttribError(
                    "--start-from is where fine-tuning starts: it needs --init finetune"
                )
            check_source(self.start_from, "--start-from")
        if self.same_run is not None:
            if not (Path(self.same_run) / "run.json").is_file():
                raise AttribError(f"--same-run {self.same_run} is not a run `attrib train` wrote")
            fields = ("recipe", *RECIPE_OVERRIDES, "start_from")
            given = [f"--{f.replace('_', '-')}" for f in fields if getattr(self, f) is not None]
            if given:
                raise AttribError(
                    f"--same-run replays the run's own recipe: drop {', '.join(given)}"
                )

    @property
    def recipe_resolved(self) -> Recipe:
        overrides = {name: getattr(self, name) for name in (*RECIPE_OVERRIDES, "seed")}
        if self.recipe is not None:
            return Recipe.from_file(self.recipe, **overrides)
        return Recipe(**{k: v for k, v in overrides.items() if v is not None})


class MislabelOptions(_Compared):
    """Mislabeled-data detection: ROC AUC of normalized self-influence."""

    train: Path = _train()
    mislabeled: Path = option(help=".npy of the mislabeled rows (row in the split).")
    methods: tuple[str, ...] = _methods()
    weights: tuple[str, ...] = _weights()
    norm_k: int = option(10, help="Normalize by the sum of the row's top-k (0: raw).")
    damping: float | None = _damping()

    def check(self) -> None:
        super().check()
        at_least(self.norm_k, 0, "--norm-k")


class RecallOptions(_Compared):
    """Fine-grained recall@k of known contributor sets."""

    train: Path = _train()
    queries: Path = option(help="Query store.")
    contributors: Path = option(
        help="JSON {query row: [training rows]} of each query's known contributors."
    )
    k: int = option(10, help="Top-k to check.")
    methods: tuple[str, ...] = _methods()
    weights: tuple[str, ...] = _weights()
    damping: float | None = _damping()

    def check(self) -> None:
        super().check()
        at_least(self.k, 1, "--k")


class FilterOptions(_Compared):
    """Find the rows behind a behaviour: AUPRC and AUROC of planted rows, ranked by each row's
    mean score over queries that show the behaviour."""

    train: Path = _train()
    queries: Path = option(help="Query store: queries showing the behaviour.")
    planted: Path = option(
        help=".npy of the training rows (rows of the split) planted to cause the behaviour."
    )
    methods: tuple[str, ...] = _methods()
    weights: tuple[str, ...] = _weights()
    damping: float | None = _damping()


class GroupsOptions(WithMemory, _Evaluation):
    """Per-group attribution strength: LDS from each group's features alone."""

    train: Path = _train()
    queries: Path = option(help="Query store (evaluation queries).")
    groundtruth: Path = option(help="Ground truth .npz from `evaluate retrain`.")
    method: str | None = option(
        None,
        choices=method_names,
        help="Method whose per-group scores are measured " + STORE_DEFAULT_HELP + ".",
    )
    groups: str = option("module", help=groups_help())
    depth: int = option(3, help="Path components that name a block (--groups block).")
    damping: float | None = _damping()
    plot: Path | None = option(
        None, help="Write a bar plot (PNG).", output="file", suffixes=(".png",)
    )

    def check(self) -> None:
        if self.method is None:
            object.__setattr__(self, "method", default_for_store(self.train))
        super().check()
        at_least(self.depth, 1, "--depth")
        at_least(self.damping, 0, "--lambda")


class TailPatchOptions(_Compared):
    """One training step on each query's top-k proponents: the query's probability increase,
    next to random proponents."""

    train: Path = _train()
    queries: Path = option(help="Query store.")
    methods: tuple[str, ...] = _methods()
    weights: tuple[str, ...] = _weights()
    k: int = option(128, help="Proponents per query: one training batch.")
    lr: float = option(0.01, help="Learning rate of the tail-patch step.")
    optimizer: str = option("sgd", choices=OPTIMIZERS, help="Optimizer of the step.")
    seed: int = option(0, help="Seed of the random-proponents baseline.")
    damping: float | None = _damping()

    def check(self) -> None:
        super().check()
        at_least(self.k, 1, "--k")
        positive(self.lr, "--lr")
