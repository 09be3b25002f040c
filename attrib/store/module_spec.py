"""How a store describes one module's gradient (recorded in the manifest)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModuleSpec:
    """A module's gradient as a (d_out x d_in) matrix; the bias is one more input column."""

    name: str
    kind: str  # linear | conv1d | conv2d
    d_out: int
    d_in: int  # bias column included
    bias: bool
    conv_groups: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModuleSpec:
        return cls(**data)
