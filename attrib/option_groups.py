"""Option groups that several stages take in, each declared once. A stage's options class
lists the groups among its bases (`class TrainOptions(RecipeFlags, TaskColumns, Options)`;
the recipe's group is in training/recipe_flags.py); their fields come after the stage's own
in `--help`, and a stage redeclares a field only where its default or help differs for it
(perturb's copies train 1 epoch). A stage's check() calls super().check() first."""

from __future__ import annotations

from attrib.memory import memory_option
from attrib.options import Options, at_least, device_option, option, positive


class OnDevice(Options):
    device: str = device_option()


class WithMemory(Options):
    memory_gb: float = memory_option()

    def check(self) -> None:
        super().check()
        positive(self.memory_gb, "--memory-gb")


class Rescaled(Options):
    rif: bool = option(
        False,
        help="RIF: divide each training row's score by one minus its leverage under the "
        "method's kernel (exact leave-one-out for ridge regression; trak, trak-block, kfac, "
        "ekfac, dtrak, jtrak).",
    )


class TaskColumns(Options):
    """Which dataset columns a model reads (each read from the model when not given)."""

    text_column: str | None = option(None, help="Text column (language models).")
    image_column: str | None = option(None, help="Image column (image classifiers, diffusion).")
    label_column: str | None = option(None, help="Label column (image classifiers).")
    caption_column: str | None = option(None, help="Caption column (text-to-image diffusion).")
    completion_column: str | None = option(
        None,
        help="Language models: the column completing each row's `prompt` (preference data: "
        "`chosen` or `rejected`; default `completion`).",
    )
    max_length: int | None = option(None, help="Truncate texts to this many tokens.")

    def check(self) -> None:
        super().check()
        at_least(self.max_length, 1, "--max-length")
