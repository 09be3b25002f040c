"""`attrib generate`'s options, defined once (the CLI is built from this class)."""

from __future__ import annotations

from pathlib import Path

from attrib.errors import AttribError
from attrib.option_groups import OnDevice
from attrib.options import Options, at_least, option


class GenerateOptions(OnDevice, Options):
    """Generate query images with their prompts, seeds and sampling trajectories, as a dataset
    folder `attrib featurize --data OUT` reads."""

    model: str = option(help="Diffusion pipeline hub id or folder.", short="-m")
    out: Path = option(help="Folder for the generated query set.", short="-o", output="folder")
    prompt: tuple[str, ...] = option(
        (), help="Prompt or template like 'A {style} of {subject}' (repeatable)."
    )
    values: tuple[str, ...] = option((), help="Template values: name=value1,value2 (repeatable).")
    n: int = option(1, help="Images per prompt (seeds S, S+1, ...).")
    seed: int = option(0, help="Seed of the first image.")
    steps: int = option(50, help="DDPM sampling steps.")
    trajectory: int = option(
        10, help="Sampling steps whose predicted clean image is kept (Journey-TRAK queries)."
    )
    guidance: float = option(7.5, help="Classifier-free guidance scale (text-to-image).")
    revision: str | None = option(None, help="Model revision.")
    adapter: str | None = option(None, help="PEFT LoRA adapter id or folder for the UNet.")
    overwrite: bool = option(False, help="Replace a non-empty --out.")

    def check(self) -> None:
        super().check()
        at_least(self.n, 1, "--n")
        at_least(self.steps, 1, "--steps")
        at_least(self.trajectory, 0, "--trajectory")
        if self.trajectory > self.steps:
            raise AttribError("--trajectory cannot exceed --steps")
