"""`attrib perturb`'s options, defined once (the CLI is built from this class)."""

from __future__ import annotations

from pathlib import Path

from attrib.errors import AttribError
from attrib.option_groups import OnDevice
from attrib.options import Options, at_least, existing_store, option
from attrib.training.recipe import INITS
from attrib.training.recipe_flags import RecipeFlags

# Daunce's Table 1 (white-box) objectives, named by the second-order matrix they estimate.
OBJECTIVES = ("hessian", "fisher", "trak")
# What each objective's copies record per example (the function whose covariance is scored).
RECORDED = {"hessian": "loss", "fisher": "loss", "trak": "margin"}


class PerturbOptions(RecipeFlags, OnDevice, Options):
    """Fine-tune K perturbed copies of the training store's model (Daunce, Algorithm 1): each
    on its own random subset of the training data with per-example random weights, for a
    short schedule. Every training and query example's output under every copy is written as
    a store (`OUT/train`, and `OUT/<name>` per --queries store) that `score`, `evaluate` and
    `inspect` read like any other; `--method daunce` or `daunce-corr` scores them."""

    train: Path = option(help="Training store (from featurize): its model, data and rows.")
    queries: tuple[str, ...] = option(
        (), help="Query store whose outputs are recorded too (repeatable); rerun to add more."
    )
    out: Path = option(
        help="Folder of the copies and their stores (resumable).", short="-o", output="folder"
    )
    copies: int = option(
        64, help="Number of perturbed copies K (LDS still rose at 128-256 on the benchmarks)."
    )
    ratio: float = option(0.3, help="Fraction of the training rows each copy trains on.")
    objective: str = option(
        "hessian",
        choices=OBJECTIVES,
        help="Perturbed objective (Daunce's Table 1): hessian (loss plus a random first-order "
        "term), fisher (squared loss change), trak (squared margin change).",
    )
    black_box: bool = option(
        False,
        help="Daunce's Table 2: no first-order term, only losses and fine-tuning (no gradients "
        "at the checkpoint are taken).",
    )
    init: str = option(
        "finetune",
        choices=INITS,
        help="finetune: copies start at the checkpoint (Daunce); scratch: from a fresh "
        "initialization per copy (with --black-box: independently trained models, as TRAK "
        "ensembles them).",
    )
    epochs: int = option(1, help="Epochs over each copy's subset.")
    seed: int = option(0, help="Seed of the subsets, random weights and batch order.")
    keep_models: bool = option(
        True, help="Save each copy's weights (needed to record outputs for later --queries)."
    )
    fsdp: bool = option(
        False,
        help="Shard each copy over the launch's processes (FSDP2), for a model larger than one "
        "device: every process trains every copy, so it saves memory, not time; the copies "
        "are the ones an unsharded run trains.",
    )
    progress: bool = option(True, help="Show a progress bar on stderr.", cli=False)

    def check(self) -> None:
        existing_store(self.train, "--train")
        for path in self.queries:
            existing_store(path, "--queries")
        super().check()
        at_least(self.copies, 2, "--copies")
        if not 0 < self.ratio <= 1:
            raise AttribError("--ratio must be in (0, 1]")
        if self.init == "scratch" and not self.black_box:
            raise AttribError(
                "--init scratch trains each copy from a fresh initialization, but the "
                "first-order term is taken at the checkpoint: add --black-box"
            )
        if self.fsdp and self.init != "finetune":
            raise AttribError(
                "--fsdp trains each copy from the checkpoint, sharded: it needs --init finetune "
                "(a model built from its config starts unsharded on every process)"
            )
        names = [Path(p).name for p in self.queries]
        if "train" in names or len(set(names)) != len(names):
            raise AttribError(
                "--queries stores need distinct folder names other than 'train' "
                "(each is written to OUT/<name>)"
            )

    @property
    def recorded(self) -> str:
        return RECORDED[self.objective]

    def copy_settings(self) -> dict:
        """What makes two runs' copies the same copies (kept in OUT/meta.json). Not K: copy k
        depends only on these and k, so a run with more copies extends one with fewer, and
        one with fewer writes its stores from the first K."""
        fields = ("ratio", "objective", "black_box", "init", "epochs", "lr", "batch_size")
        extra = ("optimizer", "weight_decay", "schedule", "seed")
        return {name: getattr(self, name) for name in (*fields, *extra)}
