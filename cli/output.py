"""Printing results: a rich table on a terminal, JSON lines or CSV for pipes.

FORMATS is the registry of output formats: the CLI's --format choices come from it, and every
printer here handles each of them."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable

from attrib.errors import AttribError

FORMATS = ("table", "jsonl", "csv")  # the first is the terminal's default, the second a pipe's
PREVIEW_KEYS = ("text", "label", "image")


def choose_format(fmt: str | None) -> str:
    fmt = fmt or (FORMATS[0] if sys.stdout.isatty() else FORMATS[1])
    if fmt not in FORMATS:
        raise AttribError(f"--format must be one of {', '.join(FORMATS)}")
    return fmt


def print_records(records: list[dict], fmt: str, title_key: str = "query_id") -> None:
    if fmt == "table":
        _tables(records, title_key)
        return
    keys = [k for k in records[0] if k not in PREVIEW_KEYS] if records else []
    keys += [k for k in PREVIEW_KEYS if any(k in r for r in records)]
    _machine(records, fmt, keys)


# Quality figures the library computes as fractions; everything the CLI prints (tables, JSON
# lines, CSV) shows them in percent, so a number means the same on a terminal and in a pipe.
PERCENT_KEYS = ("lds", "ci", "ci_subsets", "vs_first", "vs_first_ci", "tail_patch", "recall")


def in_percent(row: dict) -> dict:
    """The row with its quality figures in percent, and a `unit` saying so (a pipeline must not
    have to guess: they were fractions before the first release that printed percent)."""
    converted = {
        k: (100 * v if k in PERCENT_KEYS and isinstance(v, float) else v) for k, v in row.items()
    }
    if any(k in PERCENT_KEYS for k in row):
        converted["unit"] = "percent"
    return converted


def print_rows(
    rows: list[dict],
    fmt: str,
    columns: list[tuple[str, str]],
    title: str,
    notes: Callable[[list[dict]], list[str]] | None = None,
) -> None:
    """Result rows (evaluations): a table with these (key, header) columns on a terminal, fit
    to its width, then `notes(rows)` (verdicts) below it; JSON lines or CSV on a pipe."""
    rows = [in_percent(row) for row in rows]
    if fmt != "table":
        _machine(rows, fmt, list(rows[0]) if rows else [key for key, _ in columns])
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=title, expand=False, pad_edge=False)
    for key, header in columns:
        table.add_column(
            header,
            justify="left" if key in ("method", "weights") else "right",
            overflow="fold" if key == "weights" else "ellipsis",  # a weights file wraps
            no_wrap=key != "weights",
        )
    for row in rows:
        table.add_row(*[_cell(row.get(key), key) for key, _ in columns])
    console.print(table)
    for line in notes(rows) if notes else []:
        console.print(line, markup=False, highlight=False)


def _machine(rows: list[dict], fmt: str, keys: list[str]) -> None:
    if fmt == "jsonl":
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


def _cell(value, key: str) -> str:
    if value is None:  # a column some rows do not have (one row: nothing to compare to)
        return ""
    if key in PERCENT_KEYS:
        return f"{value:.2f}"
    if key == "weights" and isinstance(value, str):
        # The file's name without folder and suffix: the table stays narrow.
        return value.rsplit("/", 1)[-1].removesuffix(".safetensors")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _query_title(row: dict, title_key: str) -> str | None:
    """`query 0 (row 12): text: ...` for a store's row, `query 0: the text` for a value."""
    if title_key not in row:
        return None
    ident, echoed = row[title_key], row.get("query_preview")
    if isinstance(ident, int):
        title = f"query {row['query']} (row {ident})" + (f": {echoed}" if echoed else "")
        if "contrast" in row:
            title += f"  minus {_contrast_name(row['contrast'])}"
        return title
    title = f"query {row['query']}: {ident}"
    title += f"  ({echoed})" if echoed and echoed != ident else ""
    if "explains" in row:  # an unlabelled image: the model's prediction is what is explained
        title += f"  explains class {row['explains']} (the model's prediction)"
    if "contrast" in row:  # scores are the query's minus this contrast's
        title += f"  minus {_contrast_name(row['contrast'])}"
    return title


def _contrast_name(contrast) -> str:
    return f"row {contrast}" if isinstance(contrast, int) else str(contrast)


def _tables(records: list[dict], title_key: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    groups: dict = {}
    for record in records:
        groups.setdefault(record.get("query", 0), []).append(record)
    for rows in groups.values():
        title = _query_title(rows[0], title_key)
        table = Table(title=title, title_justify="left")
        value_key = "score" if "score" in rows[0] else "self_influence"
        lists = "list" in rows[0]  # --opponents: proponents, then opponents
        for column in ("list",) * lists + ("rank", "index", value_key, "preview"):
            table.add_column(column, justify="left" if column in ("list", "preview") else "right")
        for row in rows:
            preview = "  ".join(f"{k}: {row[k]}" for k in PREVIEW_KEYS if k in row)
            cells = [str(row["rank"]), str(row["index"]), f"{row[value_key]:.6g}", preview]
            table.add_row(*([row["list"]] if lists else []), *cells)
        console.print(table)
