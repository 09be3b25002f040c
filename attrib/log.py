"""Logging to stderr through rich, so stdout stays machine-readable for pipes."""

from __future__ import annotations

import os
import sys

from rich.console import Console

_console = Console(stderr=True, highlight=False)
_quiet = False


def console() -> Console:
    return _console


def set_quiet(quiet: bool) -> None:
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def is_main_process() -> bool:
    # Under torchrun / accelerate only rank 0 talks, so logs are not printed N times.
    return os.environ.get("RANK", "0") == "0"


def info(message: str) -> None:
    if not _quiet and is_main_process():
        _console.print(message, markup=False, soft_wrap=True)


def status(message: str) -> None:
    """What is happening during a silent stretch (loading a model, reading data), for a person
    watching a terminal: not written when stderr is a file or pipe, where logs are read by
    programs and every line counts."""
    if not _quiet and is_main_process() and _console.is_terminal:
        _console.print(message, markup=False, soft_wrap=True)


def warn(message: str) -> None:
    if is_main_process():
        _console.print(f"warning: {message}", markup=False, style="yellow", soft_wrap=True)


def error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr, flush=True)


def quiet_libraries() -> None:
    """Silence the Hugging Face libraries' own progress bars and advice; attrib reports."""
    import datasets
    import transformers
    from huggingface_hub.utils import disable_progress_bars

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    disable_progress_bars()
