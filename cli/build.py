"""Typer commands built from the library's options classes, so that every flag, default,
choice list and help text is the one the library defines (attrib.options)."""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import typer
from rich.markup import escape

from attrib.options import choices_of, field_types, flag_of


@dataclasses.dataclass(frozen=True)
class Extra:
    """A CLI-only parameter (presentation: --format, --quiet), passed to the handler."""

    name: str
    annotation: Any
    default: Any  # a typer.Option(...)


def cli_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in cls.ordered_fields() if f.metadata.get("cli", True)]


def cli_default(field: dataclasses.Field) -> Any:
    """The default as the CLI shows and parses it."""
    if field.default is dataclasses.MISSING:
        return ...
    separator = field.metadata.get("separator")
    if separator and isinstance(field.default, tuple):
        return [separator.join(field.default)] if field.default else None
    if isinstance(field.default, tuple):
        return list(field.default) or None
    if field.metadata.get("parse") and field.default is not None:
        return str(field.default)
    return field.default


def _annotation(field: dataclasses.Field, hint: Any) -> Any:
    optional = _is_optional(hint)
    base = _strip_optional(hint)
    if field.metadata.get("parse") and not field.metadata.get("separator"):
        base = str
    elif typing.get_origin(base) is tuple:  # repeatable; separator fields split each value too
        base = list[str]
        optional = True
    choices = choices_of(field)
    if choices is not None and base is str and not field.metadata.get("separator"):
        base = Literal.__getitem__(tuple(choices))
    return base | None if optional or field.default is None else base


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in (
        typing.get_args(hint)
    )


def _strip_optional(hint: Any) -> Any:
    if _is_optional(hint):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return str  # e.g. int | str: the CLI reads text and the field parses it
    return hint


def _parameter(field: dataclasses.Field, hint: Any) -> inspect.Parameter:
    meta = field.metadata
    default = cli_default(field)
    help_text = meta["help"]
    if choices_of(field) and not meta.get("argument"):
        help_text += f" Choices: {', '.join(choices_of(field))}."
    help_text = escape(help_text)  # help text is plain: `[training rows]` is not markup
    if meta.get("argument"):
        spec = typer.Argument(default, help=help_text, show_default=default is not ...)
    else:
        flag = flag_of(field)
        if hint is bool and default is True:
            flag = f"{flag}/--no-{flag[2:]}"
        decls = [flag] + ([meta["short"]] if meta.get("short") else [])
        # A flag takes no value: no `<bool>` placeholder beside it. Other values get a short
        # name (choices are listed in the help text), so the help fits 80 columns.
        spec = typer.Option(default, *decls, help=help_text, metavar=_metavar(field, hint))
    return inspect.Parameter(
        field.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=spec,
        annotation=_annotation(field, hint),
    )


def _metavar(field: dataclasses.Field, hint: Any) -> str:
    if hint is bool:
        return ""
    if field.metadata.get("separator"):
        return "A,B"
    if choices_of(field):
        return "NAME"
    base = _strip_optional(hint)
    if typing.get_origin(base) is tuple:
        base = typing.get_args(base)[0]
    return {Path: "PATH", int: "N", float: "X"}.get(base, "TEXT")


def reflow(doc: str | None) -> str | None:
    """Docstrings are wrapped at the source's width; the help wraps them at the terminal's.
    Lines of a paragraph are joined; an indented line (a command) stays a line of its own."""
    if not doc:
        return doc
    paragraphs = []
    for block in inspect.cleandoc(doc).split("\n\n"):
        lines: list[str] = []
        for line in block.splitlines():
            if lines and not line.startswith(" ") and not lines[-1].startswith(" "):
                lines[-1] += " " + line.strip()
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _hide_flag_types() -> None:
    """typer shows `<bool>` beside flags that take no value (its own --help among them)."""
    from typer.core import TyperOption

    original = TyperOption.display_type_rich
    if getattr(original, "_attrib", False):
        return

    def display_type_rich(self, ctx):
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich._attrib = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich


_hide_flag_types()


def from_cli(field: dataclasses.Field, value: Any) -> Any:
    """A CLI value back into the field's library type."""
    if value is None:
        return () if isinstance(field.default, tuple) else None
    separator = field.metadata.get("separator")
    if separator:  # `--weights a,b` and `--weights a --weights b` alike
        items = value if isinstance(value, list) else [value]
        return tuple(v.strip() for item in items for v in item.split(separator) if v.strip())
    if isinstance(value, list):
        return tuple(value)
    parse = field.metadata.get("parse")
    if parse is not None and isinstance(value, str):
        return parse(value)
    return value


def options_command(
    cls: type, handler: Callable[..., None], extras: tuple[Extra, ...] = ()
) -> Callable[..., None]:
    """A function whose signature Typer reads: one parameter per CLI field of `cls`, then the
    extras. It calls handler(values, **extras) where `values` are the fields' library values,
    ready for `cls(**values, <library-only fields>)`."""
    hints = field_types(cls)
    fields = cli_fields(cls)
    parameters = [_parameter(f, hints[f.name]) for f in fields]
    parameters += [
        inspect.Parameter(
            e.name, inspect.Parameter.KEYWORD_ONLY, default=e.default, annotation=e.annotation
        )
        for e in extras
    ]

    def command(**kwargs: Any) -> None:
        values = {f.name: from_cli(f, kwargs.pop(f.name)) for f in fields}
        handler(values, **kwargs)

    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {}
    command.__doc__ = reflow(handler.__doc__ or cls.__doc__)
    command.__name__ = handler.__name__
    return command


def quiet_extra() -> Extra:
    return Extra(
        "quiet",
        bool,
        typer.Option(False, "--quiet", "-q", help="No progress or logs on stderr.", metavar=""),
    )


def format_extra(formats: tuple[str, ...]) -> Extra:
    return Extra(
        "fmt",
        Literal.__getitem__(formats) | None,
        typer.Option(
            None,
            "--format",
            help=f"Output format: {', '.join(formats)} (default: {formats[0]} on a terminal, "
            f"{formats[1]} on a pipe).",
            metavar="NAME",
        ),
    )


__all__ = ["Extra", "Path", "format_extra", "from_cli", "options_command", "quiet_extra"]
