"""`attrib evaluate recall`."""

from __future__ import annotations

from attrib_cli.evaluate.table import compared, rows_command

from attrib.evaluate.options import RecallOptions

OPTIONS = RecallOptions
COLUMNS = compared(
    ("k", "k"), ("recall", "recall@k"), ("ci", "± 95% CI"), ("mrr", "MRR"), ("queries", "queries")
)  # fmt: skip
command = rows_command(OPTIONS, "run_recall", COLUMNS, "recall@k")
