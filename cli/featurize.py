"""`attrib featurize`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from attrib_cli.common import QUIET, setup

from attrib.data import DataRef
from attrib.errors import AttribError
from attrib.featurize.projection import ProjectionSpec
from attrib.tasks import ModelRef, TaskOptions

HELP = """Compute per-example gradient features of a model on a dataset and write them to a store.

The model and the dataset are hub ids or local paths. Each selected module's per-example
gradient is randomly projected (seeded, so every run and rank projects alike) and stored as
one Arrow column per module. A killed run resumes when started again with the same command.

Several processes: [bold]accelerate launch --num_processes N $(which attrib) featurize ...[/]
(on a machine without GPUs add [bold]--multi_gpu[/] so accelerate starts N CPU processes), or
[bold]torchrun --nproc_per_node N $(which attrib) featurize ...[/].
"""


def _projection(proj_dim: str, projection: str, seed: int) -> ProjectionSpec:
    if proj_dim == "full":
        return ProjectionSpec("none", None, seed)
    try:
        dim = int(proj_dim)
    except ValueError:
        raise AttribError(
            f"--proj-dim must be a positive integer or 'full', got {proj_dim!r}"
        ) from None
    return ProjectionSpec(projection, dim, seed)


def featurize_command(
    model: str = typer.Option(..., "--model", "-m", help="Model hub id or local folder."),
    data: str = typer.Option(
        ..., "--data", "-d", help="Dataset hub id, local folder, or data file (parquet/csv/json)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Store folder to write."),
    split: str = typer.Option("train", help="Dataset split."),
    data_config: str = typer.Option(None, help="Dataset configuration name (hub datasets)."),
    data_revision: str = typer.Option(None, help="Dataset revision (hub datasets)."),
    revision: str = typer.Option(None, help="Model revision: branch, tag or commit."),
    adapter: str = typer.Option(
        None, help="PEFT adapter id or folder; gradients default to its LoRA layers."
    ),
    adapter_revision: str = typer.Option(None, help="Adapter revision (hub adapters)."),
    task: str = typer.Option(
        None,
        help="causal-lm, image-classification or diffusion (default: read from the model).",
    ),
    method: str = typer.Option(
        "trak",
        help="Method the features are for; picks the output function (classifiers: margin "
        "for trak/trak-block, loss otherwise; diffusion: L_simple, L_square for dtrak, DAS's "
        "for das, the sampling trajectory for jtrak queries).",
    ),
    proj_dim: str = typer.Option(
        "16", help="Projection size p: p*p features per module; 'full' keeps exact gradients."
    ),
    projection: str = typer.Option(
        "factored", help="factored (fast, default) or dense (TRAK-style Gaussian, slow reference)."
    ),
    seed: int = typer.Option(0, help="Projection seed."),
    modules: list[str] = typer.Option(
        None, "--modules", help="Glob over module paths to include (repeatable)."
    ),
    exclude: list[str] = typer.Option(
        None, "--exclude", help="Glob over module paths to leave out (repeatable)."
    ),
    batch_size: int = typer.Option(16, help="Examples per forward/backward pass."),
    max_examples: int = typer.Option(None, help="Use only the first N examples of the split."),
    shard_size: int = typer.Option(1024, help="Examples per shard (the unit of resuming)."),
    dtype: str = typer.Option("float32", help="Compute dtype: float32, bfloat16 or float16 (GPU)."),
    store_dtype: str = typer.Option("float16", help="Stored feature dtype: float16 or float32."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    text_column: str = typer.Option(None, help="Text column (language models)."),
    image_column: str = typer.Option(None, help="Image column (image classifiers)."),
    label_column: str = typer.Option(None, help="Label column (image classifiers)."),
    max_length: int = typer.Option(None, help="Truncate texts to this many tokens."),
    caption_column: str = typer.Option(None, help="Caption column (text-to-image diffusion)."),
    timesteps: int = typer.Option(
        10, help="Diffusion: K timesteps, evenly spaced; gradients are averaged over them."
    ),
    noise_seed: int = typer.Option(
        0, help="Diffusion: seed of the noise, shared by every example at each timestep."
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing store at --out."),
    trust_remote_code: bool = typer.Option(
        False, help="Allow model code from the hub to run (off unless you pass this)."
    ),
    quiet: bool = QUIET,
) -> None:
    setup(quiet)
    from attrib.featurize.run import FeaturizeConfig, featurize

    config = FeaturizeConfig(
        model=ModelRef(model, revision, adapter, adapter_revision, trust_remote_code),
        data=DataRef(data, split, data_config, data_revision),
        out=out,
        task=task,
        task_options=TaskOptions(
            text_column,
            image_column,
            label_column,
            max_length,
            caption_column=caption_column,
            timesteps=timesteps,
            noise_seed=noise_seed,
        ),
        method=method,
        projection=_projection(proj_dim, projection, seed),
        modules=tuple(modules or ()),
        exclude=tuple(exclude or ()),
        batch_size=batch_size,
        max_examples=max_examples,
        shard_size=shard_size,
        dtype=dtype,
        store_dtype=store_dtype,
        device=device,
        overwrite=overwrite,
        progress=not quiet,
        command=tuple(sys.argv),
    )
    featurize(config)


featurize_command.__doc__ = HELP
