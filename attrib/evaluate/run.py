"""Every evaluation as a library call: options in, result rows (plain dicts) out. The CLI
prints these rows; nothing here prints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from attrib.errors import AttribError
from attrib.evaluate.options import (
    FilterOptions,
    GroupsOptions,
    LdsOptions,
    MislabelOptions,
    RecallOptions,
    RetrainOptions,
    TailPatchOptions,
)
from attrib.memory import Budget, plan_streaming
from attrib.methods import Method, get_method, method_class, require_features
from attrib.score import queries as query_features
from attrib.store import Store


def weights_label(path: Path | None) -> str:
    return "none" if path is None else Path(path).name


MISLABEL_SHARE = 0.4


def _reserve_masks(budget: Budget, truth) -> None:
    budget.reserve(
        truth.masks.size * 4,
        f"the ground truth's subset masks ({truth.subsets} x {truth.masks.shape[1]})",
        "use a ground truth with fewer subsets",
    )


def _runtime(options):
    """One process on the --device the options name (scoring moves there, not the model)."""
    from attrib.distributed import Runtime, resolve_device

    return Runtime(resolve_device(options.device))


def _planned(store: Store, options, name: str, queries: int, share: float, truth) -> Method:
    """The method, prepared after its kernel, `queries` query vectors, the ground truth's
    masks (when given) and the streamed blocks were fitted into --memory-gb (per query and
    training row: its score and its product with the subsets or the running top-k)."""
    method = get_method(name, store, options.damping, options.rif)
    if method.requires.reads_words:  # no features: nothing to plan or prepare
        return method
    budget = Budget(options.memory_gb)
    if truth is not None:
        _reserve_masks(budget, truth)
    plan_streaming(budget, store, method, queries, 8, share)
    return method.prepare()


def _combinations(
    store: Store, options, queries: int, share: float = 1.0, truth=None
) -> Iterator[tuple[Method, object, str]]:
    """(prepared method, weight vector or None, weights label) for every method x weights."""
    from attrib.score.run import weight_vector

    paths = options.weight_paths()
    vectors = {p: weight_vector(store, p) for p in paths}  # checked before any kernel is built
    for name in options.methods:
        prepared = _planned(store, options, name, queries, share, truth)
        if prepared.requires.reads_words:  # words have no groups to weight: measured once
            yield prepared, None, None
            continue
        for path in paths:
            yield prepared, vectors[path], weights_label(path)


def _truth(path: Path, train: Store, queries: Store):
    from attrib.evaluate.groundtruth import load_groundtruth

    truth = load_groundtruth(path)
    truth.check(train.num_examples, queries.num_examples, f"--groundtruth {path}")
    made_for, rows = truth.made_for(), truth.made_for_rows()
    for role, store in (("train", train), ("queries", queries)):
        if role in rows and rows[role] == store.rows_key():
            continue  # the same rows, featurized in another way: the ground truth holds
        if made_for.get(role) not in (None, store.fingerprint()):
            flag = "--train" if role == "train" else "--queries"
            raise AttribError(
                f"--groundtruth {path} was made for another {flag} store than {store.path}; "
                "use its own stores or run `evaluate retrain` for these"
            )
    return truth


def run_lds(options: LdsOptions) -> list[dict]:
    from attrib.evaluate.lds import evaluate_lds_prepared, paired_to_first

    train, queries = Store(options.train), Store(options.queries)
    truth = _truth(options.groundtruth, train, queries)
    features = query_features.from_store(train, queries).features
    runtime = _runtime(options)
    # Lexical methods (BM25) are measured once each from the rows' words, unweighted.
    words = [m for m in options.methods if method_class(m).requires.reads_words]
    lexical = [] if options.only_scores else words
    if lexical and (options.rescore or options.rif):
        raise AttribError(f"--method {lexical[0]} ranks rows by their words: drop --rescore/--rif")
    modelled = options.replace(methods=tuple(m for m in options.methods if m not in lexical))
    if options.only_scores or not modelled.methods:
        results = []
    elif options.rescore:
        from attrib.evaluate.lds import two_stage_lds

        results = two_stage_lds(train, queries, features, truth, modelled, _combinations, runtime)
    else:
        combinations = _combinations(train, modelled, queries.num_examples, truth=truth)
        results = [
            evaluate_lds_prepared(
                train, features, truth, method, vector, label, runtime, subsets_ci=False
            )
            for method, vector, label in combinations
        ]
    from attrib.evaluate.lds import lds_of_dense, lds_of_scores

    if lexical:
        from attrib.score.lexical import dense_scores, store_texts

        texts = store_texts(queries)
        results += [lds_of_dense(name, dense_scores(train, texts), truth) for name in lexical]
    results += [lds_of_scores(Path(path), truth) for path in options.scores]
    if not results:
        raise AttribError("--only-scores needs --scores FILE.npy")
    return paired_to_first(results, truth)


def run_retrain(options: RetrainOptions):
    """The ground truth (None while other shards are unfinished)."""
    from attrib.evaluate.retrain import retrain

    return retrain(options)


def run_mislabel(options: MislabelOptions) -> list[dict]:
    from attrib.evaluate.mislabel import evaluate_mislabel, load_mislabeled

    store = Store(options.train)
    for name in options.methods:
        require_features(name, "mislabeled-data detection (self-influence)")
    mask = load_mislabeled(options.mislabeled, store)
    return [
        evaluate_mislabel(
            store, method, mask, vector, options.norm_k, label, _runtime(options)
        ).record()
        # Each block of training rows is also a block of queries scored against the store:
        # the blocks get a smaller share, the nested pass the rest.
        for method, vector, label in _combinations(store, options, 0, MISLABEL_SHARE)
    ]


def run_recall(options: RecallOptions) -> list[dict]:
    from attrib.evaluate.recall import evaluate_recall, load_contributors

    store, queries = Store(options.train), Store(options.queries)
    sets = load_contributors(options.contributors, queries)
    features = query_features.from_store(store, queries).features
    return [
        evaluate_recall(
            store, method, features, sets, options.k, vector, label, _runtime(options), queries
        ).record()
        for method, vector, label in _combinations(store, options, queries.num_examples)
    ]


def run_filter(options: FilterOptions) -> list[dict]:
    """Each method's mean score over the behaviour's queries, ranking the planted rows."""
    from attrib.evaluate.filtering import evaluate_filter
    from attrib.evaluate.mislabel import load_mislabeled

    store, queries = Store(options.train), Store(options.queries)
    planted = load_mislabeled(options.planted, store, "--planted", "planted")
    features = query_features.from_store(store, queries).features
    return [
        evaluate_filter(
            store, method, features, queries, planted, vector, label, _runtime(options)
        ).record()
        for method, vector, label in _combinations(store, options, queries.num_examples)
    ]


def run_groups(options: GroupsOptions) -> list[dict]:
    from attrib.evaluate.groups import group_strength, plot_strength
    from attrib.weights.contributions import group_columns
    from attrib.weights.groups import group_modules

    store, queries = Store(options.train), Store(options.queries)
    truth = _truth(options.groundtruth, store, queries)
    names, mapping = group_modules(store.module_names, options.groups, options.depth)
    method = get_method(options.method, store, options.damping)
    budget = Budget(options.memory_gb)
    budget.reserve(
        queries.num_examples * truth.subsets * len(names) * 8,
        "per-group predicted outputs (queries x subsets x groups)",
        "use fewer groups (--groups block) or fewer queries",
    )
    _reserve_masks(budget, truth)
    plan_streaming(budget, store, method, queries.num_examples, 8)
    prepared = method.prepare()
    features = query_features.from_store(store, queries).features
    columns = group_columns(store, mapping, names)
    values = group_strength(store, prepared, features, columns, truth)
    if options.plot is not None:
        plot_strength(options.plot, names, values, f"{options.method}: LDS of each group alone")
    return [
        {"group": g, "method": options.method, "lds": v, "ci": c}
        for g, (v, c) in zip(names, values)
    ]


def run_tail_patch(options: TailPatchOptions) -> list[dict]:
    """Each method's top-k proponents, and k random training examples as the baseline."""
    from attrib.distributed import Runtime, resolve_device
    from attrib.evaluate.tailpatch import PatchStep, relative_increases, summarize
    from attrib.score.stream import score
    from attrib.tasks import load_task_from_settings
    from attrib.training.sources import fixed_query_labels, store_source

    for name in options.methods:
        require_features(name, "tail-patch")
    step = PatchStep(options.k, options.lr, options.optimizer)
    store, queries = Store(options.train), Store(options.queries)
    features = query_features.from_store(store, queries).features
    task = load_task_from_settings(store.settings)
    target = resolve_device(options.device)
    task.to(target)
    train_source = store_source(task, store, target)
    labels = fixed_query_labels(task, queries, target)
    query_source = store_source(task, queries, target, labels)
    count = min(options.k, store.num_examples)
    rng = np.random.default_rng(options.seed)
    random_rows = np.stack(
        [rng.choice(store.num_examples, count, replace=False) for _ in range(queries.num_examples)]
    )
    increases = relative_increases(task, train_source, query_source, random_rows, step)
    results = [summarize("random", "none", increases, count)]
    for prepared, vector, label in _combinations(store, options, queries.num_examples):
        top = score(store, prepared, features, count, vector, runtime=Runtime(target))
        values = relative_increases(task, train_source, query_source, top.positions.numpy(), step)
        results.append(summarize(prepared.label, label, values, count))
    return [r.record() for r in results]
