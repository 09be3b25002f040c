"""The shape every evaluation command shares: options in, result rows out, printed as a
table on a terminal or as machine-readable lines on a pipe."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from attrib_cli.build import format_extra, options_command, quiet_extra
from attrib_cli.common import setup
from attrib_cli.output import FORMATS, choose_format, print_rows


def compared(*columns: tuple[str, str]) -> list[tuple[str, str]]:
    """The columns of a methods x weights comparison: method, weights, then these."""
    return [("method", "method"), ("weights", "weights"), *columns]


def rows_command(
    options_cls: type,
    runner: str,
    columns: list[tuple[str, str]],
    title: str | Callable[[object], str],
    notes: Callable[[list[dict]], list[str]] | None = None,
):
    """A command that builds `options_cls`, calls `attrib.evaluate.run.<runner>` (imported
    only when the command runs) and prints its rows with these (key, header) columns."""

    def handler(values: dict, quiet: bool, fmt: str | None) -> None:
        setup(quiet)
        fmt = choose_format(fmt)
        options = options_cls(**values)
        rows = getattr(import_module("attrib.evaluate.run"), runner)(options)
        print_rows(rows, fmt, columns, title(options) if callable(title) else title, notes)

    handler.__doc__ = options_cls.__doc__
    handler.__name__ = runner.removeprefix("run_")
    return options_command(options_cls, handler, (quiet_extra(), format_extra(FORMATS)))
