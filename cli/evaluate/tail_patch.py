"""`attrib evaluate tail-patch`."""

from __future__ import annotations

from attrib_cli.evaluate.table import compared, rows_command

from attrib.evaluate.options import TailPatchOptions

OPTIONS = TailPatchOptions
COLUMNS = compared(
    ("tail_patch", "increase %"), ("ci", "± 95% CI"), ("k", "k"), ("queries", "queries")
)
command = rows_command(OPTIONS, "run_tail_patch", COLUMNS, "tail-patch")
