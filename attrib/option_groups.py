"""Option groups that several stages take in, each declared once. A stage's options class
lists the groups among its bases (`class TrainOptions(RecipeFlags, TaskColumns, Options)`;
the recipe's group is in training/recipe_flags.py); their fields come after the stage's own
in `--help`, and a stage redeclares a field only where its default or help differs for it
(perturb's copies train 1 epoch). A stage's check() calls super().check() first."""

from __future__ import annotations

from dataclasses import dataclass

from attrib.errors import AttribError
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


SOLVERS = ("none", "cg", "astra", "lissa")


@dataclass(frozen=True)
class SolveSettings:
    """What `--solver`, `--iterations`, `--tolerance` and `--curvature-rows` ask of an
    iterative solve (methods/solvers.py)."""

    solver: str
    iterations: int
    tolerance: float
    rows: int | None  # training rows G is averaged over (None: all)
    batch_size: int


class ExactSolve(Options):
    """`--rescore`'s query side solved against exact Gauss-Newton products of the checkpoint."""

    solver: str = option(
        "none",
        choices=SOLVERS,
        help="With --rescore (ekfac, kfac, shampoo): solve each query against the model's "
        "exact Gauss-Newton matrix, preconditioned by the method's eigenbases: cg, astra "
        "(Neumann), lissa. none: the eigenbases alone.",
    )
    iterations: int = option(20, help="--solver: the most iterations (each a pass over rows).")
    tolerance: float = option(
        1e-3,
        help="--solver: the relative residual to reach; a solve that ends above it fails. 0: "
        "run --iterations steps and keep that answer (early stopping), residual reported.",
    )
    curvature_rows: int | None = option(
        None, help="--solver: average the Gauss-Newton matrix over this many training rows "
        "(a fixed seeded sample; default all).",
    )  # fmt: skip

    def check(self) -> None:
        super().check()
        at_least(self.iterations, 1, "--iterations")
        at_least(self.tolerance, 0, "--tolerance")
        at_least(self.curvature_rows, 1, "--curvature-rows")
        if self.solver != "none" and not getattr(self, "rescore", 0):
            raise AttribError(
                f"--solver {self.solver} solves the queries that --rescore re-scores exactly: "
                "add --rescore N (e.g. 200)"
            )

    def solve_settings(self, batch_size: int = 16):
        """The solve's settings, None with --solver none."""
        if self.solver == "none":
            return None
        return SolveSettings(
            self.solver, self.iterations, self.tolerance, self.curvature_rows, batch_size
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
