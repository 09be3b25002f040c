"""`attrib evaluate filter`."""

from __future__ import annotations

from attrib_cli.evaluate.table import compared, rows_command

from attrib.evaluate.options import FilterOptions

OPTIONS = FilterOptions
COLUMNS = compared(
    ("auprc", "AUPRC"), ("auroc", "AUROC"), ("planted", "planted"), ("rows", "rows"),
    ("queries", "queries"),
)  # fmt: skip
command = rows_command(OPTIONS, "run_filter", COLUMNS, "finding planted rows")
