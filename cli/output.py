"""Printing results: a rich table on a terminal, JSON lines or CSV for pipes.

FORMATS is the registry of output formats: the CLI's --format choices come from it, and every
printer here handles each of them."""

from __future__ import annotations

import csv
import json
import sys

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


def print_rows(rows: list[dict], fmt: str, columns: list[tuple[str, str]], title: str) -> None:
    """Result rows (evaluations): a table with these (key, header) columns on a terminal."""
    if fmt != "table":
        _machine(rows, fmt, list(rows[0]) if rows else [key for key, _ in columns])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for _, header in columns:
        table.add_column(header, justify="right")
    for row in rows:
        table.add_row(*[_cell(row.get(key), key) for key, _ in columns])
    Console().print(table)


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
    if key in ("lds", "ci", "ci_subsets", "vs_first", "vs_first_ci", "tail_patch", "recall"):
        return f"{100 * value:.2f}"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _tables(records: list[dict], title_key: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    groups: dict = {}
    for record in records:
        groups.setdefault(record.get("query", 0), []).append(record)
    for rows in groups.values():
        title = f"query {rows[0]['query']}: {rows[0][title_key]}" if title_key in rows[0] else None
        table = Table(title=title, title_justify="left")
        value_key = "score" if "score" in rows[0] else "self_influence"
        for column in ("rank", "index", value_key, "preview"):
            table.add_column(column, justify="right" if column != "preview" else "left")
        for row in rows:
            preview = "  ".join(f"{k}: {row[k]}" for k in PREVIEW_KEYS if k in row)
            table.add_row(str(row["rank"]), str(row["index"]), f"{row[value_key]:.6g}", preview)
        console.print(table)
