"""How a model is (re)trained on a subset: the recipe, a plain dataclass (no torch), so the
CLI's help can show its defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from attrib.errors import AttribError

INITS = ("finetune", "scratch")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Recipe:
    init: str = "finetune"  # finetune | scratch
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw | sgd
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    schedule: str = "constant"  # constant | cosine
    seed: int = 0
    warmup: int = 0  # steps of linear learning-rate warm-up (`attrib train`)

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise AttribError("recipe init must be finetune or scratch")
        if self.optimizer not in OPTIMIZERS:
            raise AttribError("recipe optimizer must be adamw or sgd")
        if self.schedule not in SCHEDULES:
            raise AttribError("recipe schedule must be constant or cosine")
        if self.epochs < 1 or self.batch_size < 1 or not 0 < self.lr < float("inf"):
            raise AttribError("recipe epochs, batch_size and lr must be positive")

    def to_dict(self) -> dict:
        record = asdict(self)
        if not record["warmup"]:  # recipes recorded before warm-up existed stay equal
            record.pop("warmup")
        return record

    @classmethod
    def from_file(cls, path: Path, **overrides) -> Recipe:
        from attrib.jsonio import load_json

        try:
            data = load_json(Path(path), f"--recipe {path}")
        except OSError as exc:
            raise AttribError(f"--recipe {path}: cannot read it ({exc.strerror})") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise AttribError(f"--recipe {path}: unknown keys {unknown}; known: {sorted(known)}")
        return cls(**{**data, **{k: v for k, v in overrides.items() if v is not None}})
