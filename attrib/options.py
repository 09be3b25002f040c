"""Options defined once: each stage's options are one keyword-only dataclass whose fields carry
their help text, flag and choices. The CLI builds its commands from these classes
(`attrib_cli.build`), runs record them (`Options.record()`), and a test checks that the two
agree, so defaults, choices and help cannot drift apart.

This module and the options modules import neither torch nor transformers: `attrib --help`
reads them at start-up.
"""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attrib.errors import AttribError
from attrib.outputs import check_output

Choices = Sequence[str] | Callable[[], Sequence[str]]


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    short: str | None = None,
    choices: Choices | None = None,
    cli: bool = True,
    argument: bool = False,
    separator: str | None = None,
    parse: Callable[[str], Any] | None = None,
    output: str | None = None,
    suffixes: tuple[str, ...] = (),
    finite: bool = True,
    device: bool = False,
) -> Any:
    """A dataclass field with what the CLI needs to show it.

    flag: the long option (default: --field-name); short: a one-letter alias; choices: the
    allowed values, or a function returning a registry's names (read when needed, so the
    registry's module loads only then); cli=False: a library-only field (callbacks, flags the
    CLI sets itself); argument: a positional CLI argument; separator: a tuple field the CLI
    takes as one comma-separated value; parse: str -> value for fields whose CLI form is text;
    output: "file" or "folder" for a path the command writes (checked by attrib.outputs'
    rule, with `suffixes` the file names may end in); finite=False: a float field that may be
    nan or inf (none is today: every float option refuses them).
    """
    metadata = {
        "help": help,
        "flag": flag,
        "short": short,
        "choices": choices,
        "cli": cli,
        "argument": argument,
        "separator": separator,
        "parse": parse,
        "output": output,
        "device": device,
        "suffixes": suffixes,
        "finite": finite,
    }
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple or None as a default, not a mutable value")
    return dataclasses.field(default=default, metadata=metadata)


def choices_of(field: dataclasses.Field) -> tuple[str, ...] | None:
    choices = field.metadata.get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    """Base of every stage's options: checks choices, then the stage's own `check()`.
    Subclasses become frozen keyword-only dataclasses without a decorator of their own."""

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.metadata.get("finite", True):
                _finite(value, flag_of(field))
            if field.metadata.get("output") and value is not None:
                check_output(
                    value, flag_of(field), field.metadata["output"], field.metadata["suffixes"]
                )
            if field.metadata.get("device"):
                check_device(value, flag_of(field))
            allowed = choices_of(field)
            value = getattr(self, field.name)
            if allowed is None or value is None:
                continue
            for item in value if isinstance(value, tuple) else (value,):
                if item not in allowed:
                    raise AttribError(
                        f"{flag_of(field)} {item!r} is not one of: {', '.join(allowed)}"
                    )
        self.check()

    def check(self) -> None:
        """Stage-specific checks of values (ranges, combinations); raise AttribError."""

    def record(self) -> dict:
        """Every field as plain JSON values: what a run recorded it used."""
        out = {}
        for field in dataclasses.fields(self):
            out[field.name] = _plain(getattr(self, field.name))
        return out

    @classmethod
    def default(cls, name: str) -> Any:
        """A field's default (options with required fields cannot be built empty)."""
        return cls.__dataclass_fields__[name].default

    def replace(self, **changes) -> Options:
        return dataclasses.replace(self, **changes)

    def compose(self, target: type, **values) -> Any:
        """A `target` dataclass (a Recipe, TaskOptions) from this stage's fields of the same
        names, plus `values`: what a stage passes on is never rebuilt field by field."""
        names = {f.name for f in dataclasses.fields(target)}
        mine = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name in names}
        return target(**{**mine, **values})

    @classmethod
    def ordered_fields(cls) -> list[dataclasses.Field]:
        """Fields in the order a person reads them: the stage's own first (as declared), then
        those of the option groups it takes in (dataclasses put a base's fields first)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        order: list[str] = []
        for klass in cls.__mro__:
            for name in vars(klass).get("__annotations__", {}):
                if name in fields and name not in order:
                    order.append(name)
        return [fields[n] for n in order]


def _finite(value: Any, flag: str) -> None:
    """nan and inf pass every `<` check silently and fail later as tracebacks: refuse them."""
    values = value if isinstance(value, tuple) else (value,)
    for item in values:
        if isinstance(item, float) and not math.isfinite(item):
            raise AttribError(f"{flag} must be a finite number, got {item}")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotation of every field (options modules use postponed annotations)."""
    module = __import__(cls.__module__, fromlist=["_"])
    return typing.get_type_hints(cls, vars(module))


def at_least(value: float | None, low: float, flag: str) -> None:
    if value is not None and value < low:
        raise AttribError(f"{flag} must be at least {low:g}, got {value:g}")


def positive(value: float | None, flag: str) -> None:
    if value is not None and value <= 0:
        raise AttribError(f"{flag} must be positive, got {value:g}")


def existing_store(path: Path | None, flag: str) -> None:
    """Checked before any heavy import: a mistyped store path fails in a fraction of a second.
    (Opening the store checks the rest.)"""
    if path is not None and not (Path(path) / "manifest.json").is_file():
        raise AttribError(f"{flag} {path} is not an attrib store (no manifest.json); run featurize")


def existing_file(path: Path | None, flag: str) -> None:
    if path is not None and not Path(path).is_file():
        raise AttribError(f"{flag} {path}: no such file")


DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def device_option(does: str = "") -> str:
    """The --device option of every stage, declared once: `does` says what runs there."""
    where = "auto (a CUDA GPU when there is one; under accelerate/torchrun each process's own)"
    lead = f"Device for {does}: " if does else "Device: "
    return option("auto", help=f"{lead}{where}, cpu, cuda or cuda:N.", device=True)


def check_device(value: str, flag: str = "--device") -> None:
    """Checked with the options, before anything loads (torch reads it much later)."""
    if not isinstance(value, str) or not DEVICE.match(value):
        raise AttribError(f"unknown {flag} {value!r}; use auto, cpu, cuda or cuda:N")
