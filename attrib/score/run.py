"""`attrib score` as a library call: a request in, ranked records out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attrib import distributed, log
from attrib.execution import Execution, write_provenance
from attrib.memory import Budget, plan_streaming
from attrib.methods import get_method, method_class
from attrib.report.rows import RowReader
from attrib.score import contrasts, queries
from attrib.score import stream as scoring
from attrib.score.options import DEFAULT_TOP, ScoreOptions
from attrib.store import Store
from attrib.store.kinds import PERTURBED
from attrib.tasks import task_class, task_names

# upward: scoring applies learned weights; their file format lives with learn-weights,
# which itself scores through score/ (its base method's top-k).
from attrib.weights.artifact import WeightsArtifact, load_weights  # upward


def weight_vector(store: Store, path: Path | None) -> torch.Tensor | None:
    """The (D,) per-feature weights from a weights file, checked against the store's groups."""
    if path is None:
        return None
    return _expanded(store, load_weights(path))


def _expanded(store: Store, artifact: WeightsArtifact | None) -> torch.Tensor | None:
    if artifact is None:
        return None
    per_module = artifact.module_weights(store.module_names)
    return torch.from_numpy(store.layout.expand(per_module)).float()


@dataclass
class _Scored:
    """What scoring had at hand, for the report (nothing is opened or loaded twice)."""

    records: list[dict]
    store: Store | None = None
    query_store: Store | None = None
    values: list[str] | None = None
    weights: WeightsArtifact | None = None
    contexts: dict[int, list[str]] | None = None


def _warn_output_mismatch(store: Store, method: str) -> None:
    needs = method_class(method).requires
    if store.settings["task"] not in task_names() or needs.store == PERTURBED:
        return  # features written by other means (`store.arrays`, `attrib perturb`)
    wanted = needs.train_output
    if wanted not in task_class(store.settings["task"]).output_functions:
        wanted = "loss"  # the task has no such output function: its methods use the loss
    have = store.settings["output_function"]
    if have != wanted:
        log.warn(
            f"{store.path} holds {have} gradients but {method} is defined on {wanted} gradients; "
            f"featurize with --method {method} for the method as published"
        )


def run_score(request: ScoreOptions) -> list[dict]:
    """Scores for the queries (or self-influence), as ranked records: one per query and rank
    (`query`, `query_id`, `rank`, `index`, `score`, previews; with --per-token one per query,
    token and rank, with `token` and `token_text`); `--out` writes all scores (one row per
    query, or per query token in order)."""
    runtime = distributed.init(request.device)
    scored = _scored(request, runtime)
    if request.out is not None and runtime.is_main:
        write_provenance(request.out, _provenance(request, runtime))
    if request.html is not None and runtime.is_main:
        _report(request, scored)
    runtime.finish()  # under a launcher: no rank leaves while another still talks to it
    return scored.records


def _provenance(request: ScoreOptions, runtime) -> dict:
    """What made `--out` (written beside it as OUT.json)."""
    return {
        "command": "score",
        "shape": list(np.load(request.out, mmap_mode="r").shape),
        "method": request.method,
        "train": str(request.train),
        "queries": str(request.queries) if request.queries is not None else None,
        "self_influence": request.self_influence,
        "weights": str(request.weights) if request.weights is not None else None,
        "made_by": Execution(runtime).record(),
    }


def _scored(request: ScoreOptions, runtime) -> _Scored:
    store = Store(request.train)
    method = get_method(request.method, store, request.damping, request.rif)
    if request.rescore:  # refused before any warning about the store
        from attrib.score.rescore import check_rescorable

        check_rescorable(method, store)
    _warn_output_mismatch(store, request.method)
    artifact = load_weights(request.weights) if request.weights is not None else None
    weights = _expanded(store, artifact)
    query_store = Store(request.queries) if request.queries is not None else None
    values = queries.resolve_text_values(store, list(request.query), list(request.text))
    scored = _Scored([], store, query_store, None if query_store else values, artifact)
    count = 0 if request.self_influence else len(values)
    if query_store is not None:
        count = query_store.num_examples
    if method.requires.reads_words:  # BM25: the rows' words, no features (score/lexical.py)
        if runtime.is_main:
            chosen, top, contrast = _lexical(request, store, query_store, values)
            _ranked(request, store, query_store, chosen, top, scored, contrast)
        return scored
    if request.contrast or request.contrast_queries:  # refused before any model is loaded
        from attrib.methods.contrast import check_contrastable

        check_contrastable(method)
    if not request.per_token and request.index is None:  # per-token: once tokenized
        plan_streaming(Budget(request.memory_gb), store, method, count)
    if request.self_influence:  # one pass over the store: rank 0 does it alone
        if runtime.is_main:
            scored.records = _self_records(store, method.prepare(), weights, request)
        return scored
    if query_store is not None:
        chosen = queries.from_store(store, query_store)
    else:
        chosen = queries.from_values(
            store,
            values,
            str(runtime.device),
            request.batch_size,
            request.trust_remote_code,
            list(request.prompt) or None,
            request.per_token,
        )
    contrast = contrasts.featurized(request, runtime, store, chosen)
    log.status(
        f"scoring {len(chosen.features)} query rows against {store.num_examples} training rows "
        f"with {request.method} ..."
    )
    if request.index is not None:
        if not runtime.is_main:
            return scored  # an index answers in one process
        from attrib.index.search import search

        top = search(
            store, method, request.index, chosen.features, request.top or DEFAULT_TOP, weights
        )
    elif request.rescore:
        top = _two_stage(request, runtime, store, method, chosen, weights, artifact, query_store)
    else:
        if request.per_token:
            plan_streaming(Budget(request.memory_gb), store, method, len(chosen.features))
        prepared = Execution(runtime).first_then_rest(method.prepare)  # fitted once
        if contrast is not None:
            from attrib.methods.contrast import Contrasted

            prepared = Contrasted(prepared, contrast)
        top = scoring.score(
            store,
            prepared,
            chosen.features,
            request.top or DEFAULT_TOP,
            weights,
            request.out,
            request.progress,
            runtime,
            request.opponents,
        )
    if top is None:  # another rank than the first: rank 0 merges and reports
        return scored
    _ranked(request, store, query_store, chosen, top, scored, contrast)
    return scored


def _lexical(request, store, query_store, values):
    """(queries, top, contrast) of a lexical method: every score from the rows' and queries'
    words (minus their contrasts')."""
    from attrib.methods.contrast import Contrast
    from attrib.score import lexical

    if query_store is not None:
        ids = [int(i) for i in query_store.column("index")]
        texts = lexical.store_texts(query_store)
    else:
        ids, texts = list(values), [lexical.value_text(v) for v in values]
    log.status(f"scoring {len(texts)} queries against {store.num_examples} rows with bm25 ...")
    dense = lexical.dense_scores(store, texts)
    contrast = None
    if request.contrast or request.contrast_queries:
        other_store, others = contrasts.given(request, store)
        if other_store is not None:
            others = lexical.store_texts(other_store)
            other_ids = [int(i) for i in other_store.column("index")]
        else:
            others, other_ids = [lexical.value_text(v) for v in others], others
        rows, scales = contrasts.rows_of(list(range(len(ids))), len(others))
        dense = dense - lexical.dense_scores(store, others)[rows.numpy()]
        contrast = Contrast(torch.zeros(len(others), 0), rows, scales, other_ids)
    if request.out is not None:
        lexical.write_dense(request.out, dense)
    top = lexical.dense_top(
        dense, request.top or DEFAULT_TOP, store.column("index"), request.opponents
    )
    return queries.Queries(torch.zeros(len(ids), 0), ids), top, contrast


def _ranked(request, store, query_store, chosen, top, scored: _Scored, contrast=None) -> None:
    """The ranked records of each query's top (and opponents) into `scored`."""
    lists = [("proponents", top)] + ([("opponents", top.bottom)] if top.bottom is not None else [])
    shown_rows = np.concatenate([found.indices.reshape(-1) for _, found in lists])
    previewer = RowReader(store) if request.preview or chosen.explained else None
    previews = previewer.previews(shown_rows) if request.preview else {}
    explained = [previewer.label_name(i) for i in chosen.explained] if chosen.explained else None
    shown = [_shown(i) for i in chosen.ids]
    echoed = _query_previews(query_store, chosen.ids) if request.preview else {}
    rows = [(q, {}) for q in range(len(shown))]
    named = None
    if contrast is not None:  # each query's contrast as records name it
        first = {}
        for row, q in enumerate(contrasts.query_rows(chosen)):
            first.setdefault(q, _shown(contrast.ids[int(contrast.rows[row])]))
        named = [first[q] for q in range(len(shown))]
    if chosen.tokens is not None:  # one row per (query, token)
        rows = [(q, {"token": p, "token_text": t}) for q, p, t in chosen.tokens]
    records = []
    for row, (q, token) in enumerate(rows):
        for name, found in lists:
            for rank in range(found.scores.shape[1]):
                index = int(found.indices[row, rank])
                record = {
                    "query": q,
                    "query_id": shown[q],
                    **({"query_preview": echoed[q]} if q in echoed else {}),
                    **({"explains": explained[q]} if explained else {}),
                    **({"contrast": named[q]} if named else {}),
                    **token,
                    **({"list": name} if len(lists) > 1 else {}),
                    "rank": rank + 1,
                    "index": index,
                    "score": float(found.scores[row, rank]),
                }
                records.append({**record, **previews.get(index, {})})
    scored.records, scored.contexts = records, chosen.contexts


def _two_stage(request, runtime, store, method, chosen, weights, artifact, query_store):
    """--rescore: a pass over the store finds each query's candidates (and writes --out),
    then rank 0 re-scores them exactly (score/rescore.py)."""
    from attrib.featurize.exact import ExactGradients
    from attrib.featurize.projection import ProjectionSpec
    from attrib.score import rescore

    keep = request.top or DEFAULT_TOP
    prepared = Execution(runtime).first_then_rest(method.prepare)  # fitted once
    found = scoring.score(
        store, prepared, chosen.features, max((request.rescore + 1) // 2, keep),  # a side
        weights, request.out, request.progress, runtime, opponents=True,
    )  # fmt: skip
    if found is None:
        return None
    try:  # a failed re-scoring (a solve that did not converge) leaves no projected --out
        log.status(f"re-scoring {request.rescore} candidates per query on exact gradients ...")
        block = rescore.plan_queries(
            request.memory_gb, store, method, len(found.positions), request.rescore,
            request.batch_size, request.solver != "none",
        )  # fmt: skip
        per_module = None if artifact is None else artifact.module_weights(store.module_names)
        scorer = rescore.ExactScorer.fit(
            store, method, runtime.device, request.batch_size, request.trust_remote_code,
            per_module, request.progress, request.solve_settings(request.batch_size),
        )  # fmt: skip
        if query_store is not None:
            side = ExactGradients(query_store, runtime.device, request.trust_remote_code)

            def query_gradients(rows):
                return side.gradients(rows, request.batch_size)
        else:
            ids, prompts = list(chosen.ids), list(request.prompt)
            exact_space = ProjectionSpec.from_dict(store.settings["projection"]).unprojected()

            def query_gradients(rows):
                return queries.from_values(
                    store, [ids[r] for r in rows], str(runtime.device), request.batch_size,
                    request.trust_remote_code, _prompts_of(prompts, rows),
                    projection=exact_space,
                ).features  # fmt: skip

        index = store.column("index")
        top, positions, exact, scale = rescore.rescore_top(
            scorer, found, query_gradients, request.rescore, block, keep, request.opponents,
            index,
        )  # fmt: skip
        if request.out is not None:
            rescore.patch_dense_file(request.out, positions, exact, scale)
    except BaseException:
        if request.out is not None:
            Path(request.out).unlink(missing_ok=True)
        raise
    if not request.opponents:
        top.bottom = None
    return top


def _prompts_of(prompts: list[str], rows: list[int]) -> list[str] | None:
    """--prompt for some of the queries: none, the one for all, or theirs."""
    if len(prompts) <= 1:
        return prompts or None
    return [prompts[r] for r in rows]


def _report(request: ScoreOptions, scored: _Scored) -> None:
    from attrib.report.html import write_report

    weights = scored.weights
    title = f"attrib score: {request.method}" + (" with learned weights" if weights else "")
    write_report(
        request.html, scored.records, scored.store, scored.query_store, scored.values, weights,
        title, scored.contexts,
    )  # fmt: skip
    log.info(f"wrote {request.html}")


def _self_records(store, method, weights, request) -> list[dict]:
    values, index = scoring.self_influence(store, method, weights)
    if request.out is not None:
        scoring.write_vector(request.out, values)
    order = np.argsort(-values, kind="stable")[: request.top or len(values)]
    previews = RowReader(store).previews(index[order]) if request.preview else {}
    return [
        {
            "rank": r + 1,
            "index": int(index[i]),
            "self_influence": float(values[i]),
            **previews.get(int(index[i]), {}),
        }
        for r, i in enumerate(order)
    ]


def _query_previews(query_store: Store | None, ids: list) -> dict[int, str]:
    """What each query is, in a few words, for every record and table: a query store's row
    (its text snippet, label or image path); a --query value is its own preview."""
    if query_store is None:
        return {q: _shown(value, 80) for q, value in enumerate(ids)}
    found = RowReader(query_store).previews(ids)
    return {
        q: "  ".join(f"{k}: {v}" for k, v in found[int(i)].items())
        for q, i in enumerate(ids)
        if found.get(int(i))
    }


def _shown(query_id, limit: int = 200):
    """A query as output records name it: a long text is cut (it is echoed in every record)."""
    if isinstance(query_id, str) and len(query_id) > limit:
        return query_id[:limit] + f"... ({len(query_id)} characters)"
    return query_id
