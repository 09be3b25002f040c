"""BM25 (`--method bm25`): the lexical baseline, ranking training rows by the words they share
with a query (bergson's leaderboard has BM25 above TRAK), through the maintained bm25s.

It needs no model and no features: the training store names its dataset and text columns, so
its rows' texts are read back in store order, indexed once per call (bm25s indexes a million
short texts in seconds), and each query's scores over every row form the same dense
(queries x rows) matrix as any method's, ranked, written by --out and measured by `evaluate
lds` alike. A row's text is its text column, or its prompt and completion, or its chat
messages' contents; a query's is the same fields of a query store's row or a `--text` value
(plain, or a JSON object as language-model queries take).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from attrib.atomic import atomic_path
from attrib.data import open_dataset, ref_from_settings
from attrib.errors import AttribError
from attrib.methods.topk import TopK
from attrib.store import Store

STOPWORDS = "en"  # bm25s' English list; no stemmer (it would add a dependency)


def _joined(record: dict, fields: dict) -> str:
    """A row's (or JSON query's) words: text, prompt + completion, or messages' contents."""
    pieces = []
    for key in ("text", "prompt", "completion"):
        value = record.get(fields.get(key) or key)
        if isinstance(value, str):
            pieces.append(value)
        elif isinstance(value, list):  # conversational prompt/completion
            pieces += [str(m.get("content", "")) for m in value if isinstance(m, dict)]
    messages = record.get(fields.get("messages") or "messages")
    if isinstance(messages, list):
        pieces += [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
    return " ".join(pieces)


def store_texts(store: Store) -> list[str]:
    """The store's rows' texts, in store order."""
    columns = store.settings["task_options"]["columns"]
    dataset = open_dataset(ref_from_settings(store.settings["dataset"]))
    wanted = [c for c in columns.values() if c and c in dataset.column_names]
    table = dataset.select_columns(wanted).select(store.column("index").tolist())
    fields = {k: v for k, v in columns.items() if v}
    return [_joined(row, fields) for row in table]


def value_text(value: str) -> str:
    """A --text/--query value's words: the text, or a JSON object's fields."""
    try:
        record = json.loads(value)
    except ValueError:
        return value
    return _joined(record, {}) if isinstance(record, dict) else value


class BM25Index:
    def __init__(self, texts: list[str]):
        import bm25s

        tokens = bm25s.tokenize(texts, stopwords=STOPWORDS, show_progress=False)
        self.retriever = bm25s.BM25()
        self.retriever.index(tokens, show_progress=False)
        self.rows = len(texts)

    def scores(self, queries: list[str]) -> np.ndarray:
        """(queries x rows) float32 BM25 scores; a query without a known word scores 0."""
        import bm25s

        words = bm25s.tokenize(queries, stopwords=STOPWORDS, return_ids=False, show_progress=False)
        out = np.zeros((len(queries), self.rows), dtype=np.float32)
        for q, query in enumerate(words):
            if query:
                out[q] = self.retriever.get_scores(query)
        return out


def dense_scores(store: Store, query_texts: list[str]) -> np.ndarray:
    if not any(t.strip() for t in query_texts):
        raise AttribError("every query is empty: BM25 has no words to match")
    return BM25Index(store_texts(store)).scores(query_texts)


def dense_top(dense: np.ndarray, k: int, index: np.ndarray, opponents: bool) -> TopK:
    """The top (and with opponents the bottom) k of a dense score matrix, as scoring ranks:
    descending, ties in store order."""
    scores = torch.from_numpy(dense)
    k = min(k, scores.shape[1])
    order = torch.from_numpy(np.argsort(-dense, axis=1, kind="stable")[:, :k].copy())
    top = TopK(scores.gather(1, order), order, index[order.numpy()])
    if opponents:
        low = torch.from_numpy(np.argsort(dense, axis=1, kind="stable")[:, :k].copy())
        top.bottom = TopK(scores.gather(1, low), low, index[low.numpy()])
    return top


def write_dense(path: Path, dense: np.ndarray) -> None:
    with atomic_path(path) as part:
        with open(part, "wb") as handle:
            np.save(handle, dense.astype(np.float32))
