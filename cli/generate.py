"""`attrib generate`."""

from __future__ import annotations

from pathlib import Path

import typer
from attrib_cli.common import QUIET, setup


def generate_command(
    model: str = typer.Option(..., "--model", "-m", help="Diffusion pipeline hub id or folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the generated query set."),
    prompt: list[str] = typer.Option(
        None, "--prompt", help="Prompt or template like 'A {style} of {subject}' (repeatable)."
    ),
    values: list[str] = typer.Option(
        None, "--values", help="Template values: name=value1,value2 (repeatable)."
    ),
    n: int = typer.Option(1, "--n", help="Images per prompt (seeds S, S+1, ...)."),
    seed: int = typer.Option(0, help="Seed of the first image."),
    steps: int = typer.Option(50, help="DDPM sampling steps."),
    trajectory: int = typer.Option(
        10, help="Sampling steps whose predicted clean image is kept (Journey-TRAK queries)."
    ),
    guidance: float = typer.Option(7.5, help="Classifier-free guidance scale (text-to-image)."),
    revision: str = typer.Option(None, help="Model revision."),
    adapter: str = typer.Option(None, help="PEFT LoRA adapter id or folder for the UNet."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty --out."),
    quiet: bool = QUIET,
) -> None:
    """Generate query images with their prompts, seeds and sampling trajectories, as a dataset
    folder `attrib featurize --data OUT` reads."""
    setup(quiet)
    from attrib.generate import GenerateRequest, generate, parse_values
    from attrib.tasks import ModelRef

    request = GenerateRequest(
        ModelRef(model, revision, adapter),
        out,
        list(prompt or []),
        parse_values(list(values or [])),
        n,
        seed,
        steps,
        trajectory,
        guidance,
        device,
        overwrite,
    )
    generate(request)
