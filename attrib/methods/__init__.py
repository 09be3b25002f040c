"""Attribution methods: one class each (see `base.Method`), registered here in the order the
CLI lists them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrib.errors import AttribError
from attrib.methods import base
from attrib.methods.base import Method
from attrib.methods.daunce import Daunce, DaunceCorr
from attrib.methods.gradient import Cosine, TracIn
from attrib.methods.kfac import EKFac, KFac, Shampoo
from attrib.methods.lexical import BM25
from attrib.methods.representation import RepSim
from attrib.methods.trackstar import TrackStar
from attrib.methods.trak import Das, DTrak, JourneyTrak, Trak, TrakBlock
from attrib.store.kinds import PERTURBED

if TYPE_CHECKING:
    from attrib.store import Store

METHODS: dict[str, type[Method]] = {
    m.name: m
    for m in (
        TracIn,
        Cosine,
        Trak,
        TrakBlock,
        KFac,
        EKFac,
        Shampoo,
        TrackStar,
        DTrak,
        Das,
        JourneyTrak,
        Daunce,
        DaunceCorr,
        RepSim,
        BM25,
    )
}
base.DEFINED[:] = METHODS.values()  # messages in base.py list methods in the CLI's order
DEFAULT_METHOD = TrakBlock.name  # best LDS among the methods any store supports (docs/quality.md)
# What a command's --method defaults to: the training store's featurize --method (shampoo by
# default), or this for a trak store (margin gradients, best scored per module).
STORE_DEFAULT_HELP = (
    "(default: the method the training store was featurized for, shampoo for featurize's "
    "default store; trak-block for a trak store)"
)

__all__ = [
    "DEFAULT_METHOD", "METHODS", "STORE_DEFAULT_HELP", "Method", "default_for_store",
    "get_method", "method_class", "method_names", "require_features",
]  # fmt: skip


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise AttribError(f"unknown --method {name!r}; choose {', '.join(METHODS)}")
    return METHODS[name]


def default_for_store(train) -> str:
    """--method when none is given: the one `train` was featurized for (featurize's
    default store, `--method shampoo`, is scored by shampoo), trak-block for a trak store, and for a
    store that does not say (perturbed copies, stores from before attrib recorded it)."""
    from pathlib import Path

    from attrib.store.manifest import read_json

    try:
        manifest = read_json(Path(train) / "manifest.json")
    except (AttribError, OSError):
        return DEFAULT_METHOD  # the store's own check says what is wrong with it
    chosen = (manifest.get("options") or {}).get("method")
    return chosen if chosen in METHODS and chosen != Trak.name else DEFAULT_METHOD


def require_features(name: str, command: str) -> None:
    """Refuse a lexical method (BM25) where a store's features are what is used."""
    if method_class(name).requires.reads_words:
        raise AttribError(
            f"--method {name} ranks rows by their words, with no features: {command} needs a "
            "method on a store's features (`score` and `evaluate lds` measure bm25)"
        )


def get_method(name: str, store: Store, damping: float | None = None, rif: bool = False) -> Method:
    """The method, not yet prepared: call `prepare()` once the cheap checks have passed.
    `rif`: each row's score over one minus its leverage (methods/rif.py)."""
    cls = method_class(name)
    if rif:
        from attrib.methods.rif import with_rif

        cls = with_rif(cls)
    return cls(store, damping)


def output_pairs() -> set[tuple[str, str]]:
    """(query-side, training-side) output functions some method scores together."""
    return {
        (m.requires.query_side_output, m.requires.train_output)
        for m in METHODS.values()
        if m.requires.store != PERTURBED
    }
