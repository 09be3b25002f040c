"""The demo's answer: evaluation query 0, its most helpful and most harmful training rows,
and the HTML report a person judges them by (for text, the query's tokens as a heat map)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attrib.report.html import write_report
from attrib.score.options import ScoreOptions
from attrib.score.run import run_score
from attrib.store import Store
from attrib.weights.artifact import load_weights

TOP = 8
TOKEN_TOP = 5  # per token: a heat map's click shows a handful


@dataclass
class Explained:
    proponents: list[dict]
    opponents: list[dict]
    report: Path


def explain(
    stores: dict[str, Store], weights: Path, out: Path, task: str, method: str, eval_data: Path
) -> Explained:
    train, queries = stores["train"], stores["eval"]
    records = run_score(
        ScoreOptions(
            train=train.path, method=method, weights=weights, top=TOP, queries=queries.path,
            opponents=True,
        )
    )  # fmt: skip
    first = [r for r in records if r["query"] == 0]
    lists = {
        name: [r for r in first if r.get("list") == name] for name in ("proponents", "opponents")
    }
    report = out / "report.html"
    title = f"attrib demo: {task}, {method} with learned weights"
    if task == "text":
        # The same command a user types: score --text ... --per-token --html.
        run_score(
            ScoreOptions(
                train=train.path, method=method, weights=weights, top=TOKEN_TOP,
                text=(_text(queries, eval_data),), per_token=True, html=report,
            )
        )  # fmt: skip
    else:
        write_report(report, first, train, queries, None, load_weights(weights), title)
    return Explained(lists["proponents"], lists["opponents"], report)


def _text(queries: Store, data: Path) -> str:
    """Evaluation query 0's whole text (the store's preview is a snippet)."""
    import pyarrow.parquet as pq

    column = queries.settings["task_options"]["columns"]["text"]
    row = int(queries.column("index")[0])
    return str(pq.read_table(data, columns=[column]).column(column)[row].as_py())
