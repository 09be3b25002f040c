"""`attrib score`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from attrib_cli.common import QUIET, setup
from attrib_cli.output import choose_format, print_records


def _query_values(values: list[str]) -> list[str]:
    out = []
    for value in values:
        if value == "-":
            out += [line.rstrip("\n") for line in sys.stdin if line.strip()]
        else:
            out.append(value)
    return out


def score_command(
    train: Path = typer.Option(..., "--train", "-t", help="Training store (from featurize)."),
    query: list[str] = typer.Option(
        None,
        "--query",
        help="Image file or text to attribute (repeatable); '-' reads one per line from stdin. "
        "Featurized with the training store's settings.",
    ),
    queries: Path = typer.Option(None, "--queries", help="Query store (from featurize)."),
    prompt: list[str] = typer.Option(
        None,
        "--prompt",
        help="Text-to-image diffusion: the prompt of each --query image "
        "(one for all, or one per query).",
    ),
    method: str = typer.Option(
        "trak-block",
        help="tracin, cosine, trak, trak-block, kfac or ekfac (trak-block: best LDS of the "
        "methods that work on any store; ekfac needs a --method ekfac store).",
    ),
    damping: float = typer.Option(
        None,
        "--lambda",
        help="Kernel damping, relative: lambda = c * mean diagonal of Phi^T Phi "
        "(default 1.0 for trak, 0.1 for trak-block).",
    ),
    weights: Path = typer.Option(
        None, help="Per-group weights (from learn-weights), applied on the query side."
    ),
    top: int = typer.Option(
        None, help="Training examples listed per query (default 10; with --self: all)."
    ),
    fmt: str = typer.Option(
        None, "--format", help="table, jsonl or csv (default: table on a terminal, else jsonl)."
    ),
    out: Path = typer.Option(
        None,
        help="Write all scores to a .npy: (queries x train) float32, query order x training-store "
        "order, higher = more helpful (with --self: one value per training example).",
    ),
    self_influence: bool = typer.Option(
        False, "--self", help="Self-influence tau(n, n) of every training example."
    ),
    preview: bool = typer.Option(True, help="Show text snippets, labels, image paths."),
    device: str = typer.Option("auto", help="Device for featurizing --query values."),
    batch_size: int = typer.Option(16, help="Batch size for featurizing --query values."),
    trust_remote_code: bool = typer.Option(False, help="Allow model code from the hub to run."),
    quiet: bool = QUIET,
) -> None:
    """Rank training examples by their attribution to each query (higher = more helpful)."""
    setup(quiet)
    from attrib.errors import AttribError
    from attrib.score.run import ScoreRequest, run_score

    fmt = choose_format(fmt)
    values = _query_values(query or [])
    if self_influence and (values or queries):
        raise AttribError("--self takes no --query or --queries")
    if not self_influence and bool(values) == bool(queries):
        raise AttribError("pass either --query (files, texts or '-') or --queries STORE")
    request = ScoreRequest(
        train=train,
        method=method,
        damping=damping,
        weights=weights,
        top=top,
        out=out,
        self_influence=self_influence,
        queries=queries,
        values=values,
        prompts=list(prompt or []) or None,
        preview=preview,
        device=device,
        batch_size=batch_size,
        trust_remote_code=trust_remote_code,
        progress=not quiet and sys.stderr.isatty(),
    )
    records = run_score(request)
    print_records(records, fmt)
