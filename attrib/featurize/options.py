"""`attrib featurize`'s options, defined once (the CLI is built from this class)."""

from __future__ import annotations

from pathlib import Path

from attrib.errors import AttribError
from attrib.execution import ArrayTask
from attrib.hub import check_data_source, check_source
from attrib.methods import method_class, method_names
from attrib.option_groups import OnDevice, TaskColumns
from attrib.options import Options, at_least, option
from attrib.store.kinds import PERTURBED, REPRESENTATION
from attrib.tasks import task_names
from attrib.tasks.options import ModelRef, TaskOptions

COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
STORE_DTYPES = ("float16", "float32", "int8", "int4")
PROJECTIONS = ("factored", "dense")  # --proj-dim full keeps exact gradients instead
ALLOCATIONS = ("uniform", "sqrt-size")  # featurize/allocation.py
# The defaults follow docs/quality.md ("The defaults"): K-FAC's family at p = 45 kept in
# int8 leads trak-block at p = 16 on classifiers and language models, and of that family
# eigenvalue-corrected Shampoo ranks at least as well as EK-FAC on every task's validation
# queries without K-FAC's factor pass ("Which method scores the default store"). On
# diffusion models trak-block at p = 16 leads, so diffusion pipelines keep it. K-FAC's family
# gains from a larger projection, TRAK's does not: --proj-dim defaults by method.
FEATURIZE_METHOD, DIFFUSION_METHOD = "shampoo", "trak"
KFAC_FAMILY_PROJ_DIM, DEFAULT_PROJ_DIM = 45, 16
# Bits for dimensions (docs/quality.md): K-FAC's family at its default p = 45 keeps its
# features in int8, twice p = 32's features in float16's bytes, and ranks better (pydoc-finetune
# 77.6 against 73.2, digits-finetune 58.4 against 56.9); any other store keeps float16.
KFAC_FAMILY_STORE_DTYPE, DEFAULT_STORE_DTYPE = "int8", "float16"


def default_method(task: str) -> str:
    """featurize's --method when none is given, for a task family."""
    return DIFFUSION_METHOD if task == "diffusion" else FEATURIZE_METHOD


def parse_proj_dim(value: str) -> int | str:
    if value == "full":
        return value
    try:
        return int(value)
    except ValueError:
        raise AttribError(
            f"--proj-dim must be a positive integer or 'full', not {value!r}"
        ) from None


class FeaturizeOptions(TaskColumns, OnDevice, Options):
    """Compute per-example gradient features of a model on a dataset and write a store."""

    model: str = option(help="Model hub id or local folder.", short="-m")
    data: str = option(
        help="Dataset hub id, local folder, or data file (parquet/csv/json).", short="-d"
    )
    out: Path = option(help="Store folder to write.", short="-o", output="folder")
    split: str = option("train", help="Dataset split.")
    data_config: str | None = option(None, help="Dataset configuration name (hub datasets).")
    data_revision: str | None = option(None, help="Dataset revision (hub datasets).")
    revision: str | None = option(None, help="Model revision: branch, tag or commit.")
    adapter: str | None = option(
        None, help="PEFT adapter id or folder; gradients default to its LoRA layers."
    )
    adapter_revision: str | None = option(None, help="Adapter revision (hub adapters).")
    task: str | None = option(
        None, help="Model family (default: read from the model).", choices=task_names
    )
    method: str | None = option(
        None,
        help="Method the features are for (default: shampoo; trak for diffusion pipelines); "
        "picks the output function (classifiers: margin for "
        "trak and its relatives, loss otherwise; diffusion: L_simple, L_square for dtrak, DAS's "
        "for das, the sampling trajectory for jtrak queries) and whether Kronecker factors are "
        "collected (kfac, ekfac); repsim stores the model's pooled hidden states instead of "
        "gradients (never projected).",
        choices=method_names,
    )
    proj_dim: int | str | None = option(
        None,
        help="Projection size p: p*p features a module (on average where --proj-allocation "
        "shares them by size); 'full' keeps exact gradients "
        "(default: 45 for kfac/ekfac/shampoo, whose answers gain from it, kept in int8; 16 "
        "otherwise).",
        parse=parse_proj_dim,
    )
    projection: str = option(
        "factored",
        help="factored (fast) or dense (TRAK-style Gaussian, slow reference).",
        choices=PROJECTIONS,
    )
    proj_allocation: str | None = option(
        None,
        help="How the factored projection's features are shared among modules: uniform "
        "(p x p each) or sqrt-size (the same total, by the square root of each module's "
        "size, in its own aspect) (default: sqrt-size for kfac/ekfac/shampoo, where it ranks "
        "better; uniform otherwise).",
        choices=ALLOCATIONS,
    )
    seed: int = option(0, help="Projection seed.")
    optimizer_state: str | None = option(
        None,
        help="Divide gradients by sqrt(Adam's second moment) before projecting (TrackStar): "
        "a Trainer checkpoint folder (its optimizer.pt), or an `attrib train` run or snapshot.",
    )
    modules: tuple[str, ...] = option((), help="Glob over module paths to include (repeatable).")
    exclude: tuple[str, ...] = option((), help="Glob over module paths to leave out (repeatable).")
    no_gradients: bool = option(
        False,
        help="Record the rows and the checkpoint's outputs only, no gradients: a store for "
        "`attrib perturb` (black-box Daunce) on a model whose layers attrib cannot hook.",
    )
    batch_size: int = option(16, help="Examples per forward/backward pass.")
    max_examples: int | None = option(None, help="Use only the first N examples of the split.")
    shard_size: int = option(1024, help="Examples per shard (the unit of resuming).")
    dtype: str = option(
        "float32", help="Compute dtype (half precision on a GPU).", choices=COMPUTE_DTYPES
    )
    store_dtype: str | None = option(
        None,
        help="Stored feature dtype. int8 / int4 keep each row's features of a module as "
        "integers times one float32 scale: 2x / 4x the features of float16 in its bytes "
        "(default: int8 for kfac/ekfac/shampoo at the default --proj-dim, float16 otherwise).",
        choices=STORE_DTYPES,
    )
    padding_side: str = option(
        "right",
        help="Tokenizer padding side (features do not depend on it).",
        choices=("right", "left"),
    )
    timesteps: int = option(
        10, help="Diffusion: K timesteps, evenly spaced; gradients are averaged over them."
    )
    noise_seed: int = option(
        0, help="Diffusion: seed of the noise, shared by every example at each timestep."
    )
    fsdp: bool = option(
        False,
        help="Shard the model's parameters over the launch's processes (FSDP2), for a model "
        "larger than one device; the store is the one an unsharded run writes.",
    )
    shard: str = option(
        "0/1",
        help="i/n: this job's share of the shards when an array job's tasks share --out (on "
        "SLURM, the array task's id and count); the last to finish writes the manifest.",
    )
    overwrite: bool = option(False, help="Replace an existing store at --out.")
    trust_remote_code: bool = option(
        False, help="Allow model code from the hub to run (off unless you pass this)."
    )
    progress: bool = option(True, help="Show a progress bar on stderr.", cli=False)
    command: tuple[str, ...] = option((), help="The command line recorded.", cli=False)

    def check(self) -> None:
        # Paths first, before anything heavy is imported: a typo costs a fraction of a second.
        check_source(self.model, "--model")
        if self.adapter:
            check_source(self.adapter, "--adapter")
        check_data_source(self.data)
        super().check()
        for name in ("batch_size", "shard_size", "max_examples", "timesteps"):
            at_least(getattr(self, name), 1, "--" + name.replace("_", "-"))
        if self.method is None:  # the model's config is read only when the default is needed
            object.__setattr__(self, "method", default_method(self._task_name()))
        if self.proj_dim is None:
            larger = method_class(self.method).gains_from_projection
            dim = KFAC_FAMILY_PROJ_DIM if larger else DEFAULT_PROJ_DIM
            object.__setattr__(self, "proj_dim", dim)
            if self.store_dtype is None and larger:  # the measured pair: p = 45 in int8
                object.__setattr__(self, "store_dtype", KFAC_FAMILY_STORE_DTYPE)
        if self.store_dtype is None:
            object.__setattr__(self, "store_dtype", DEFAULT_STORE_DTYPE)
        if self.proj_allocation == "sqrt-size" and (
            self.proj_dim == "full" or self.projection != "factored"
        ):
            raise AttribError(
                "--proj-allocation sqrt-size shares the factored projection's features among "
                "modules: drop it, or use the default --projection factored with a --proj-dim"
            )
        if self.proj_allocation is None:  # measured for K-FAC's family on factored stores
            shared = method_class(self.method).gains_from_projection
            shared = shared and self.projection == "factored" and self.proj_dim != "full"
            object.__setattr__(self, "proj_allocation", "sqrt-size" if shared else "uniform")
        if self.proj_dim != "full" and (not isinstance(self.proj_dim, int) or self.proj_dim < 1):
            raise AttribError(
                f"--proj-dim must be a positive integer or 'full', not {self.proj_dim!r}"
            )
        if ArrayTask.parse(self.shard).count > 1 and self.overwrite:
            raise AttribError(
                "--overwrite replaces a store in one launch; an array job's tasks share --out: "
                "remove the old store first, or drop --shard"
            )
        if self.no_gradients and (self.modules or self.exclude):
            raise AttribError("--no-gradients selects no modules: drop --modules/--exclude")
        needs = method_class(self.method).requires
        if needs.store == PERTURBED:
            raise AttribError(
                f"--method {self.method} is scored from perturbed copies' outputs, which "
                "`attrib perturb --train STORE --out COPIES` writes; featurize with "
                "the default --method for STORE"
            )
        if needs.store == REPRESENTATION and (self.modules or self.exclude or self.no_gradients):
            raise AttribError(
                f"--method {self.method} reads the model's hidden states, not gradients: drop "
                "--modules/--exclude/--no-gradients"
            )
        self._check_optimizer_state(needs)
        if self.factors and self.projection == "dense" and self.proj_dim != "full":
            raise AttribError(
                f"--method {self.method} needs Kronecker-structured features: use the default "
                "factored projection or --proj-dim full, not --projection dense"
            )

    def _task_name(self) -> str:
        """The task family, --task or read from the model's config (what featurize loads)."""
        if self.task is not None:
            return self.task
        from attrib.tasks.loading import detect_task

        return detect_task(self.model_ref)

    def _check_optimizer_state(self, needs) -> None:
        if needs.optimizer_state and not self.optimizer_state:
            raise AttribError(
                f"--method {self.method} divides gradients by the optimizer's second moments: "
                "pass --optimizer-state (the checkpoint folder with optimizer.pt, or the "
                "`attrib train` run)"
            )
        if not self.optimizer_state:
            return
        if self.no_gradients or needs.store == REPRESENTATION:
            raise AttribError(
                "--optimizer-state scales gradients, and this store holds none: drop it"
            )
        if not Path(self.optimizer_state).exists():
            raise AttribError(f"--optimizer-state {self.optimizer_state} does not exist")

    @property
    def factors(self) -> bool:
        """Whether Kronecker factors are accumulated (methods that need them)."""
        return method_class(self.method).requires.factors and not self.no_gradients

    @property
    def model_ref(self) -> ModelRef:
        return ModelRef(
            self.model, self.revision, self.adapter, self.adapter_revision, self.trust_remote_code
        )

    @property
    def data_ref(self):
        from attrib.data import DataRef

        return DataRef(self.data, self.split, self.data_config, self.data_revision)

    @property
    def task_options(self) -> TaskOptions:
        return self.compose(TaskOptions)

    @property
    def projection_spec(self):
        from attrib.featurize.projection import NormalizerRef, ProjectionSpec

        normalizer = None
        if self.optimizer_state:  # an absolute path: queries are featurized from elsewhere
            normalizer = NormalizerRef(str(Path(self.optimizer_state).resolve()))
        if self.proj_dim == "full":
            return ProjectionSpec("none", None, self.seed, normalizer)
        return ProjectionSpec(
            self.projection, self.proj_dim, self.seed, normalizer, self.proj_allocation
        )
