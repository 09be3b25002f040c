"""`attrib evaluate lds`."""

from __future__ import annotations

from attrib_cli.evaluate.table import compared, rows_command

from attrib.evaluate.options import LdsOptions

OPTIONS = LdsOptions
COLUMNS = compared(
    ("lds", "LDS %"),
    ("ci", "± 95% CI (queries)"),
    ("ci_subsets", "± (queries and subsets)"),
    ("vs_first", "minus row 1"),
    ("vs_first_ci", "± (paired)"),
    ("subsets", "subsets"),
    ("queries", "queries"),
)
command = rows_command(OPTIONS, "run_lds", COLUMNS, "LDS")
