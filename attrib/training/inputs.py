"""Stores used beside a recorded run, checked against it before any replay: a store of
another task, checkpoint or data would be answered silently for minutes, then wrongly."""

from __future__ import annotations

import numpy as np

from attrib.errors import AttribError
from attrib.hub import fingerprint
from attrib.store import Store
from attrib.training.record import Run


def check_query_task(run: Run, queries: Store, flag: str = "--queries") -> None:
    task = queries.settings.get("task")
    if task != run.meta["task"]:
        raise AttribError(
            f"{flag} {queries.path} holds queries for task {task}, but run {run.path} trained "
            f"task {run.meta['task']}; featurize the queries from {run.checkpoint}"
        )


def check_queries_are_the_runs(run: Run, queries: Store) -> None:
    """The query store was featurized from RUN/model (its task, and the model fingerprint its
    manifest recorded)."""
    check_query_task(run, queries)
    model = queries.settings.get("model") or {}
    adapter = model.get("adapter") or {}
    made_from = adapter.get("fingerprint") if run.meta["model"].get("adapter") else None
    made_from = made_from or model.get("fingerprint")
    if made_from != fingerprint(str(run.checkpoint), None):
        raise AttribError(
            f"--queries {queries.path} was featurized from another checkpoint than the run's; "
            f"featurize them from {run.checkpoint} (--no-gradients is enough)"
        )


def check_replica(run: Run, replica: Run) -> None:
    """A replica trained the same task on the same rows (its seed and recipe are its own)."""
    same_task = replica.meta["task"] == run.meta["task"]
    same_data = replica.meta["data"].get("fingerprint") == run.meta["data"].get("fingerprint")
    if not same_task or not same_data or replica.rows != run.rows:
        raise AttribError(
            f"--replicas {replica.path} did not train task {run.meta['task']} on the "
            f"{run.rows} rows run {run.path} trained on; train it with `attrib train` on the "
            "same data and model (another --seed)"
        )
    if replica.identity() == run.identity():
        raise AttribError(f"--replicas {replica.path} is the run itself; give another seed's run")


def check_store_is_the_runs(run: Run, store: Store) -> None:
    """A training store holds the run's rows, in the run's order."""
    data = run.meta["data"]
    same_data = store.settings["dataset"].get("fingerprint") == data.get("fingerprint")
    if not same_data or store.num_examples != run.rows:
        raise AttribError(
            f"--train {store.path} does not hold the rows run {run.path} trained on "
            f"({run.rows} rows of {data['source']}); featurize RUN/model on the run's "
            "data with --max-examples equal to its rows"
        )
    if not np.array_equal(store.column("index"), np.arange(run.rows)):
        raise AttribError(f"--train {store.path} holds its rows in another order than the run")
