"""The recipe's option group (see attrib/option_groups.py): `attrib train` and `attrib
perturb` take a Recipe's fields as flags, declared here once."""

from __future__ import annotations

from attrib.options import Options, at_least, option, positive
from attrib.training.recipe import INITS, OPTIMIZERS, SCHEDULES, Recipe


class RecipeFlags(Options):
    """How a model is trained: the fields of a `Recipe`, as flags."""

    init: str = option(
        Recipe.init, choices=INITS, help="finetune (from the checkpoint) or scratch (config)."
    )
    epochs: int = option(Recipe.epochs, help="Passes over the data.")
    lr: float = option(Recipe.lr, help="Peak learning rate.")
    batch_size: int = option(Recipe.batch_size, help="Rows per step.")
    optimizer: str = option(Recipe.optimizer, choices=OPTIMIZERS, help="Optimizer.")
    weight_decay: float = option(Recipe.weight_decay, help="Weight decay (AdamW: decoupled).")
    momentum: float = option(Recipe.momentum, help="SGD momentum.")
    schedule: str = option(Recipe.schedule, choices=SCHEDULES, help="Learning-rate schedule.")
    warmup: int = option(Recipe.warmup, help="Steps of linear learning-rate warm-up.")
    seed: int = option(Recipe.seed, help="Seed of the batches' order, the init and the noise.")

    def check(self) -> None:
        super().check()
        for name in ("epochs", "batch_size"):
            at_least(getattr(self, name), 1, "--" + name.replace("_", "-"))
        for name in ("warmup", "seed", "momentum"):
            at_least(getattr(self, name), 0, "--" + name)
        positive(self.lr, "--lr")
        at_least(self.weight_decay, 0, "--weight-decay")
        self.recipe  # noqa: B018  (a bad recipe fails here)

    @property
    def recipe(self) -> Recipe:
        return self.compose(Recipe)
