"""What a method needs, declared once per method class and read by every other layer:
featurize (which output function to differentiate, whether to accumulate Kronecker factors),
the store checks and `inspect` (which kind of store it scores), the task (which output
functions it supports). A store's kind is recorded in its manifest (store/kinds.py)."""

from __future__ import annotations

from dataclasses import dataclass

from attrib.store.kinds import GRADIENTS, KINDS

# Not a store's kind: BM25 reads the rows' words from any language model's store.
WORDS = "words"


@dataclass(frozen=True)
class Requirements:
    # The output function the training features must be gradients of (tasks fall back to the
    # loss when they have no such function, e.g. a margin for a language model), and the
    # query side's when it differs.
    train_output: str = "loss"
    query_output: str | None = None
    factors: bool = False  # featurize accumulates Kronecker factors (K-FAC / EK-FAC)
    store: str = GRADIENTS  # the kind of store it scores, or WORDS
    # A task without `train_output` serves the method with loss gradients (TRAK's margin on
    # a language model); False: the method is defined only where the output exists (D-TRAK's
    # and DAS's diffusion outputs).
    fallback: bool = True
    scalars: tuple[str, ...] = ()  # per-row columns it reads beyond index, loss, out_to_loss
    # Gradients divided by the optimizer's second moments (featurize --optimizer-state).
    optimizer_state: bool = False

    def __post_init__(self) -> None:
        if self.store not in (*KINDS, WORDS):
            raise ValueError(f"unknown store kind {self.store!r}")

    @property
    def query_side_output(self) -> str:
        return self.query_output or self.train_output

    @property
    def reads_words(self) -> bool:
        """Scores rows by their words, with no features (BM25)."""
        return self.store == WORDS
