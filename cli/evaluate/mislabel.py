"""`attrib evaluate mislabel`."""

from __future__ import annotations

from attrib_cli.evaluate.table import compared, rows_command

from attrib.evaluate.options import MislabelOptions

OPTIONS = MislabelOptions
COLUMNS = compared(
    ("auc", "AUC"), ("norm_k", "norm k"), ("examples", "examples"), ("mislabeled", "mislabeled")
)
command = rows_command(OPTIONS, "run_mislabel", COLUMNS, "mislabeled-data detection")
