"""`attrib score`'s options, defined once (the CLI is built from this class)."""

from __future__ import annotations

from pathlib import Path

from attrib.errors import AttribError
from attrib.index.options import KINDS
from attrib.methods import STORE_DEFAULT_HELP, default_for_store, method_class, method_names
from attrib.option_groups import ExactSolve, OnDevice, Rescaled, WithMemory
from attrib.options import Options, at_least, device_option, existing_store, option

DEFAULT_TOP = 10


class ScoreOptions(ExactSolve, Rescaled, WithMemory, OnDevice, Options):
    """Rank training examples by their attribution to each query (higher = more helpful)."""

    train: Path = option(help="Training store (from featurize).", short="-t")
    query: tuple[str, ...] = option(
        (),
        help="What to attribute (repeatable): an image file; for language models a text, or a "
        "file of queries, one per line (JSON objects for prompt/completion and chat stores); "
        "'-' reads them from stdin. A value that looks like a path but names no file is an "
        "error. Featurized with the training store's settings.",
    )
    text: tuple[str, ...] = option(
        (), help="A literal text query (repeatable), never read as a file name."
    )
    queries: Path | None = option(None, help="Query store (from featurize).")
    contrast: tuple[str, ...] = option(
        (),
        help="Contrastive queries: score each --query/--text value minus the score of this "
        "contrast (repeatable: one for all queries or one per query; files, texts or JSON "
        "objects as --query takes), e.g. the chosen answer minus the rejected one.",
    )
    contrast_queries: Path | None = option(
        None,
        help="A query store whose row i is the contrast of --queries' row i (featurized with "
        "the same settings, e.g. the rejected completions beside the chosen ones).",
    )
    prompt: tuple[str, ...] = option(
        (),
        help="Text-to-image diffusion: the prompt of each --query image "
        "(one for all, or one per query).",
    )
    method: str | None = option(
        None,
        help="Attribution method (kfac and ekfac need a store featurized with that --method) "
        + STORE_DEFAULT_HELP
        + ".",
        choices=method_names,
    )
    damping: float | None = option(
        None,
        flag="--lambda",
        help="Kernel damping, relative: lambda = c * mean diagonal of the kernel's Gram matrix "
        "(default: the method's own, see docs/score.md; kfac, ekfac and shampoo use 1e-3 on "
        "projected features and 0.1 on exact gradients: --proj-dim full stores and "
        "--rescore's exact stage).",
    )
    weights: Path | None = option(
        None, help="Per-group weights (from learn-weights), applied on the query side."
    )
    top: int | None = option(
        None, help=f"Training examples listed per query (default {DEFAULT_TOP}; with --self: all)."
    )
    out: Path | None = option(
        None,
        help="Write all scores to a .npy: (queries x train) float32, query order x training-store "
        "order, higher = more helpful (with --self: one value per training example).",
        output="file",
        suffixes=(".npy",),
    )
    opponents: bool = option(
        False,
        help="Also list the most harmful training rows (the lowest scores), --top of them per "
        "query, from the same pass; records say which list they are in (list: proponents or "
        "opponents).",
    )
    html: Path | None = option(
        None,
        help="Also write a self-contained HTML report: each query beside its ranked training "
        "rows (images inlined, texts, labels, scores; with --opponents both lists; with "
        "--per-token the answer coloured token by token; with --weights their bar chart).",
        output="file",
        suffixes=(".html", ".htm"),
    )
    self_influence: bool = option(
        False, flag="--self", help="Self-influence tau(n, n) of every training example."
    )
    per_token: bool = option(
        False,
        help="Language models, --query values: rank training examples for each target "
        "(completion) token of each query; a query's token rows sum to its sequence scores.",
    )
    index: str | None = option(
        None,
        choices=KINDS,
        help="Answer the top-k from the store's index of this kind (`attrib index build`) "
        "instead of a pass over the store; exact scoring is the default and the reference.",
    )
    rescore: int = option(
        0,
        help="Two-stage scoring: re-score each query's N candidates (its N/2 highest and N/2 "
        "lowest projected scores) exactly, from gradients recomputed from the checkpoint "
        "without projection (tracin, kfac, ekfac, shampoo; eigenbases fitted once over the "
        "training rows and cached); the other rows' projected scores are put on the exact "
        "scale. 0: off.",
    )
    preview: bool = option(True, help="Show text snippets, labels, image paths.")
    device: str = device_option("scoring and for featurizing --query values")
    batch_size: int = option(16, help="Batch size for featurizing --query values.")
    trust_remote_code: bool = option(False, help="Allow model code from the hub to run.")
    progress: bool = option(False, help="Show a progress bar on stderr.", cli=False)

    def check(self) -> None:
        existing_store(self.train, "--train")
        existing_store(self.queries, "--queries")
        if self.method is None:
            object.__setattr__(self, "method", default_for_store(self.train))
        super().check()
        at_least(self.top, 1, "--top")
        at_least(self.damping, 0, "--lambda")
        at_least(self.batch_size, 1, "--batch-size")
        at_least(self.rescore, 0, "--rescore")
        if self.rescore and (self.per_token or self.index or self.self_influence or self.rif):
            raise AttribError(
                "--rescore re-scores whole queries' candidates from a pass over the store: "
                "drop --per-token, --index, --self and --rif"
            )
        if method_class(self.method).requires.reads_words:
            given = {
                "--weights": self.weights, "--per-token": self.per_token,
                "--self": self.self_influence, "--index": self.index, "--rif": self.rif,
                "--rescore": self.rescore, "--lambda": self.damping is not None,
            }  # fmt: skip
            if any(given.values()):
                dropped = ", ".join(flag for flag, on in given.items() if on)
                raise AttribError(
                    f"--method {self.method} ranks rows by their words, with no model or "
                    f"features: drop {dropped}"
                )
        self._check_contrast()
        if self.per_token and not (self.query or self.text):
            raise AttribError("--per-token scores --query values (texts or JSON objects)")
        if self.html is not None and self.self_influence:
            raise AttribError("--html reports queries' rankings: drop --self")
        if self.opponents and (self.index is not None or self.self_influence):
            raise AttribError("--opponents ranks scores of queries: drop --index and --self")
        if self.index is not None and (self.out is not None or self.self_influence):
            raise AttribError(
                "--index answers the top-k only: drop --index for --out or --self (every score)"
            )
        given = bool(self.query or self.text)
        if self.self_influence and (given or self.queries):
            raise AttribError("--self takes no --query, --text or --queries")
        if not self.self_influence and given == bool(self.queries):
            raise AttribError(
                "pass either --query (files, texts or '-'), --text or --queries STORE"
            )

    def _check_contrast(self) -> None:
        existing_store(self.contrast_queries, "--contrast-queries")
        if not (self.contrast or self.contrast_queries):
            return
        if self.contrast and self.contrast_queries:
            raise AttribError("pass --contrast values or --contrast-queries STORE, not both")
        if self.contrast and not (self.query or self.text):
            raise AttribError("--contrast goes with --query/--text values; with --queries "
                              "STORE pass --contrast-queries STORE")  # fmt: skip
        if self.contrast_queries and not self.queries:
            raise AttribError("--contrast-queries goes with --queries STORE; with --query "
                              "values pass --contrast")  # fmt: skip
        count = len(self.query) + len(self.text)
        if self.contrast and len(self.contrast) not in (1, count):
            raise AttribError(
                f"{len(self.contrast)} --contrast values for {count} queries: pass one for all "
                "or one per query"
            )
        dropped = [f for f, on in (("--self", self.self_influence), ("--index", self.index),
                                    ("--rescore", self.rescore)) if on]  # fmt: skip
        if dropped:
            raise AttribError(f"--contrast ranks differences of whole scores: drop {dropped[0]}")
