"""Printing ranked records: a rich table on a terminal, JSON lines or CSV for pipes."""

from __future__ import annotations

import csv
import json
import sys

from rich.console import Console
from rich.table import Table

from attrib.errors import AttribError

FORMATS = ("table", "jsonl", "csv")
PREVIEW_KEYS = ("text", "label", "image")


def choose_format(fmt: str | None) -> str:
    fmt = fmt or ("table" if sys.stdout.isatty() else "jsonl")
    if fmt not in FORMATS:
        raise AttribError(f"--format must be one of {', '.join(FORMATS)}")
    return fmt


def print_records(records: list[dict], fmt: str, title_key: str = "query_id") -> None:
    if fmt == "jsonl":
        for record in records:
            sys.stdout.write(json.dumps(record) + "\n")
    elif fmt == "csv":
        keys = [k for k in records[0] if k not in PREVIEW_KEYS] if records else []
        keys += [k for k in PREVIEW_KEYS if any(k in r for r in records)]
        writer = csv.DictWriter(sys.stdout, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(records)
    else:
        _tables(records, title_key)


def _tables(records: list[dict], title_key: str) -> None:
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
