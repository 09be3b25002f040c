"""`attrib evaluate lds`."""

from __future__ import annotations

from attrib_cli.evaluate.table import compared, rows_command

from attrib.evaluate.options import LdsOptions

OPTIONS = LdsOptions
# Short headers: the table fits 80 columns (the footnote below it says what each means).
COLUMNS = compared(
    ("lds", "LDS %"),
    ("ci", "±CI"),
    ("ci_subsets", "±CI+sub"),
    ("vs_first", "-row1"),
    ("vs_first_ci", "±paired"),
    ("subsets", "subs"),
    ("queries", "qs"),
)


def verdicts(rows: list[dict]) -> list[str]:
    """What the table says, in words: each row against the first, by its paired 95% CI."""
    lines = [
        "LDS in percent; ±CI: 95% over queries; ±CI+sub: over queries and retrained subsets; "
        "-row1 ±paired: each row minus row 1, paired bootstrap."
    ]
    for number, row in enumerate(rows[1:], 2):
        change, noise = row.get("vs_first"), row.get("vs_first_ci")
        if change is None or noise is None:
            continue
        if abs(change) <= noise:
            verdict = "within the noise"
        else:
            verdict = "better beyond the noise" if change > 0 else "worse beyond the noise"
        weights = row["weights"]
        named = row["method"] + (f", weights {weights.rsplit('/', 1)[-1]}" if weights else "")
        lines.append(
            f"row {number} ({named}): {change:+.2f} points vs row 1 (±{noise:.2f}): {verdict}"
        )
    return lines


command = rows_command(OPTIONS, "run_lds", COLUMNS, "LDS", verdicts)
