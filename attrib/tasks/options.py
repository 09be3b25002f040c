"""What identifies a model (ModelRef) and the options a task is loaded with (TaskOptions).
Plain dataclasses without torch: the CLI and manifests use them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class ModelRef:
    source: str
    revision: str | None = None
    adapter: str | None = None
    adapter_revision: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class TaskOptions:
    text_column: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    max_length: int | None = None
    padding_side: str = "right"
    caption_column: str | None = None  # diffusion: text prompts
    timesteps: int = 10  # diffusion: K fixed timesteps per example
    noise_seed: int = 0  # diffusion: seed of the shared noise per timestep
    completion_column: str | None = None  # language models: the prompt's completion

    def record(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> TaskOptions:
        """The options a manifest recorded (unknown keys from other versions ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in known})
