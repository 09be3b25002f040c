"""`attrib ensemble`'s options, defined once (the CLI is built from this class)."""

from __future__ import annotations

import math
from pathlib import Path

from attrib.errors import AttribError
from attrib.options import Options, existing_store, option


class EnsembleOptions(Options):
    """Combine the stores of several checkpoints of one model (a training run's saved
    checkpoints, `attrib perturb`'s copies, independently trained models), featurized on the
    same rows with the same settings, into one ensemble store: tracin, trak, trak-block,
    dtrak, kfac and ekfac on it give the sum of the members' scores (TracInCP, TRAK over
    checkpoints). Do the same for the query stores, members in the same order."""

    members: tuple[str, ...] = option(
        (), help="Member stores, in order (the same order for training and query stores).",
        argument=True,
    )  # fmt: skip
    out: Path = option(help="The ensemble store to write.", short="-o", output="folder")
    member_weights: tuple[str, ...] = option(
        (),
        separator=",",
        help="Comma-separated weight per member (TracInCP: each checkpoint's learning rate); "
        "default 1 each.",
    )
    lr_weights: bool = option(
        False,
        help="TracInCP: weight each member by the learning rate its checkpoint's "
        "trainer_state.json (Hugging Face Trainer) records at the checkpoint's step.",
    )
    overwrite: bool = option(False, help="Replace --out if it is an attrib store.")

    def check(self) -> None:
        if len(self.members) < 2:
            raise AttribError("pass at least two member stores")
        for path in self.members:
            existing_store(Path(path), "member")
        self.weights  # noqa: B018  (bad numbers fail here, before anything is read)
        if self.lr_weights and self.member_weights:
            raise AttribError("pass --member-weights or --lr-weights, not both")

    @property
    def weights(self) -> list[float] | None:
        if not self.member_weights:
            return None
        try:
            values = [float(w) for w in self.member_weights]
        except ValueError:
            raise AttribError("--member-weights takes numbers, e.g. 1e-3,5e-4") from None
        if len(values) != len(self.members) or any(not 0 < v < math.inf for v in values):
            raise AttribError(
                f"--member-weights: one positive weight per member ({len(self.members)})"
            )
        return values


def run_ensemble(options: EnsembleOptions) -> Path:
    """`attrib ensemble`: merge the members (weighted by their learning rates with
    `lr_weights`) into one store; returns its path."""
    from attrib import log
    from attrib.store.ensemble import merge, trainer_learning_rates

    members = list(options.members)
    weights = trainer_learning_rates(members) if options.lr_weights else options.weights
    if options.lr_weights:
        log.info(f"learning rates of the members: {', '.join(f'{w:g}' for w in weights)}")
    path = merge(options.out, members, weights, options.overwrite)
    log.info(f"wrote {path}: {len(members)} members")
    return path
