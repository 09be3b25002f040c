"""Reading JSON that attrib wrote, or that someone planted: manifests, weights metadata, run
and ground-truth metadata, recipes, task options. One place checks size, nesting depth and the
top-level type, so a hostile file fails as one line (exit 2) instead of a RecursionError or an
AttributeError deep inside a command."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from attrib.errors import AttribError

MAX_DEPTH = 64  # attrib's own files nest a few levels; a planted one may nest 200,000
MAX_BYTES = 256 * 2**20


def parse_json(text: str | bytes, what: str, expect: type = dict) -> Any:
    """Parse `text` (naming it `what` in errors), refusing deep nesting and a top level of
    another type than `expect`."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise AttribError(f"{what} is not UTF-8 JSON") from None
    if _depth_exceeds(text, MAX_DEPTH):
        raise AttribError(f"{what} nests deeper than {MAX_DEPTH} levels: not a file attrib wrote")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise AttribError(f"{what} is not valid JSON ({str(exc)[:80]})") from None
    if expect is not None and not isinstance(value, expect):
        raise AttribError(
            f"{what} holds a JSON {type(value).__name__}, not the {expect.__name__} attrib writes"
        )
    return value


def load_json(path: Path, what: str | None = None, expect: type = dict) -> Any:
    path = Path(path)
    what = what or str(path)
    if path.stat().st_size > MAX_BYTES:
        raise AttribError(f"{what} is larger than {MAX_BYTES >> 20} MiB: not a file attrib wrote")
    return parse_json(path.read_bytes(), what, expect)


def load_json_or_none(path: Path, expect: type = dict) -> Any:
    """The parsed file, or None when it is missing, unreadable or not attrib-shaped."""
    try:
        return load_json(path, expect=expect)
    except (OSError, AttribError):
        return None


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _depth_exceeds(text: str, limit: int) -> bool:
    """Bracket depth outside strings (json itself would recurse, and a Python loop over every
    character is slow for a large manifest: only the brackets are visited)."""
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False
