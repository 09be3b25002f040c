"""Entry point: `attrib <command>`. Commands are thin: parse options, call `attrib`, print."""

from __future__ import annotations

import sys

import typer
from attrib_cli import evaluate_more  # noqa: F401  (registers more evaluate commands)
from attrib_cli.demo import demo_command
from attrib_cli.evaluate_cmd import app as evaluate_app
from attrib_cli.featurize import featurize_command
from attrib_cli.generate import generate_command
from attrib_cli.inspect_store import inspect_command
from attrib_cli.learn_weights import learn_weights_command
from attrib_cli.score import score_command

from attrib import __version__, log
from attrib.errors import AttribError

app = typer.Typer(
    name="attrib",
    help="Training data attribution for Hugging Face checkpoints.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
app.command("demo", short_help="The whole job offline in minutes, on bundled data.")(demo_command)
app.command("featurize", short_help="Per-example gradient features of a model on a dataset.")(
    featurize_command
)
app.command("generate", short_help="Query images (with prompts, seeds, trajectories).")(
    generate_command
)
app.command("learn-weights", short_help="Learn one weight per parameter group (self-supervised).")(
    learn_weights_command
)
app.command("score", short_help="Rank training examples for queries (higher = more helpful).")(
    score_command
)
app.command("inspect", short_help="What a store holds and what made it.")(inspect_command)
app.add_typer(evaluate_app, name="evaluate")


def _version(value: bool) -> None:
    if value:
        print(f"attrib {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Training data attribution for Hugging Face checkpoints.

    Output on a pipe is machine-readable (JSON lines); progress and logs go to stderr.
    Exit codes: 0 ok, 1 failure, 2 bad usage or bad input.
    """


def main() -> None:
    try:
        app()
    except AttribError as exc:
        log.error(str(exc))
        sys.exit(2)
    except BrokenPipeError:
        # The reader of our stdout went away (`attrib score ... | head`): not an error.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        log.error("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
