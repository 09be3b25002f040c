"""Entry point: `attrib <command>`. Commands are registered here explicitly; each module is
light (options classes and typer only), and heavy libraries load inside the command that
needs them, so `attrib --help` starts in a fraction of a second."""

from __future__ import annotations

import sys

import typer
from attrib_cli import (
    demo,
    ensemble,
    featurize,
    generate,
    inspect_store,
    interrupted_message,
    learn_weights,
    magic,
    perturb,
    score,
    train,
)
from attrib_cli.evaluate import app as evaluate_app
from attrib_cli.index import app as index_app

from attrib import __version__, log
from attrib.errors import AttribError

app = typer.Typer(
    name="attrib",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
COMMANDS = (
    ("demo", demo, "The whole job offline in minutes, on bundled data."),
    ("featurize", featurize, "Per-example gradient features of a model on a dataset."),
    ("generate", generate, "Query images (with prompts, seeds, trajectories)."),
    ("learn-weights", learn_weights, "Learn one weight per parameter group (self-supervised)."),
    ("perturb", perturb, "Perturbed copies of the model and their outputs (Daunce)."),
    ("score", score, "Rank training examples for queries (higher = more helpful)."),
    ("ensemble", ensemble, "One store of several checkpoints' stores (TracInCP, ensembles)."),
    ("inspect", inspect_store, "What a store, weights file or ground truth holds."),
    ("train", train, "Train a checkpoint and record the run (replayable, for magic)."),
    ("magic", magic, "Exact attribution for a recorded run (metagradients)."),
)
for name, module, summary in COMMANDS:
    app.command(name, short_help=summary)(module.command)
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(index_app, name="index")


def _version(value: bool) -> None:
    if value:
        print(f"attrib {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
        metavar="",
    ),
) -> None:
    """Training data attribution for Hugging Face checkpoints.

    Output on a pipe is machine-readable (JSON lines); progress and logs go to stderr.
    Exit codes: 0 ok, 1 failure, 2 bad usage or bad input.
    """


def main() -> None:
    try:  # typer vendors click since 0.22; older versions use click itself
        from typer._click import exceptions as click
    except ImportError:
        import click.exceptions as click

    try:
        code = typer.main.get_command(app).main(prog_name="attrib", standalone_mode=False)
        if code == 130:  # click turned an interrupt (Ctrl-C, a launcher's SIGTERM) into 130
            message, code = interrupted_message()
            log.error(message)
        sys.exit(code if isinstance(code, int) else 0)
    except click.NoArgsIsHelpError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # One line, as for every other bad input: what is wrong, and where the help is.
        where = f"attrib {exc.ctx.command_path.partition(' ')[2]}".strip() if exc.ctx else "attrib"
        message = exc.format_message().replace("Value error, ", "")  # typer's wording
        log.error(f"{message} (see `{where} --help`)")
        sys.exit(2)
    except click.ClickException as exc:
        log.error(exc.format_message())
        sys.exit(exc.exit_code)
    except AttribError as exc:
        log.error(str(exc))
        sys.exit(2)
    except BrokenPipeError:
        # The reader of our stdout went away (`attrib score ... | head`): not an error.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        message, code = interrupted_message()
        log.error(message)
        sys.exit(code)
    except Exception as exc:
        from attrib.distributed import lost_peer_message

        if (message := lost_peer_message(exc)) is not None:
            log.error(message)
            sys.exit(1)
        # A full disk, a read-only or vanished device: one line naming the output (writers
        # remove their temporaries; the previous output stays). Anything else is a bug.
        from attrib.outputs import io_error_message

        message = io_error_message(exc)
        if message is None:
            raise
        log.error(message)
        sys.exit(2)


if __name__ == "__main__":
    main()
