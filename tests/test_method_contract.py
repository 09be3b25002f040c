"""The contract every registered method keeps, checked for each one (a method added later is
checked without anyone remembering to): streamed dense scores equal the method computed on
the whole matrix at once, top-k equals a full sort, self-influence equals the diagonal,
all-ones weights change nothing, weighted scores are the (finalized) weighted sum of
learn-weights' per-group contributions, and weights equal scaling the query's group slices.

The store is synthetic but shaped like a real one: per-example gradients of linear modules
(sums of outer products over tokens) in several uneven shards, with the Kronecker factors,
out-to-loss factors and residuals that K-FAC, TRAK and DAS read."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_score import _dense as dense_scores

from attrib.methods import Method, get_method, method_class, method_names
from attrib.methods.preconditioners import PRECONDITIONERS
from attrib.methods.requirements import Requirements
from attrib.score.options import ScoreOptions
from attrib.score.run import run_score
from attrib.store import Store
from attrib.store.arrays import write_arrays
from attrib.store.factors import Factors, save_factors, shard_factor_path
from attrib.store.module_spec import ModuleSpec
from attrib.weights.artifact import WeightsArtifact, save_weights
from attrib.weights.contributions import Contributions, group_columns

SHAPES = {"block.0.a": (3, 4), "block.0.b": (2, 3), "block.1.a": (4, 2)}  # (d_out, d_in)
TOKENS = 3
DAMPING = 0.1


def _gradients(rng, count):
    """Per-example gradients sum_t dy_t x_t^T (row-major (out, in)) and their factors."""
    features, factors = {}, {}
    for name, (d_out, d_in) in SHAPES.items():
        x = rng.standard_normal((count, TOKENS, d_in)) * np.linspace(0.5, 2, d_in)
        dy = rng.standard_normal((count, TOKENS, d_out))
        features[name] = np.einsum("nto,nti->noi", dy, x).reshape(count, -1).astype(np.float32)
        factors[name] = (x, dy)
    return features, factors


def _write(path, rng, count, shard_size, with_factors, kind=None):
    features, raw = _gradients(rng, count)
    modules = [
        {"spec": ModuleSpec(n, "linear", o, i, False).to_dict(), "feature_dim": o * i}
        for n, (o, i) in SHAPES.items()
    ]
    scalars = {
        "out_to_loss": rng.uniform(0.2, 1.0, count).astype(np.float32),
        "residual": rng.uniform(0.5, 1.5, count).astype(np.float32),
    }
    settings = {"modules": modules, "factors": with_factors}
    # Marked as divided by an optimizer's second moments (TrackStar reads only that mark;
    # the numbers are any gradients), exact (no projection) as write_arrays' default.
    normalizer = {"source": "synthetic", "sha256": None}
    settings["projection"] = {"kind": "none", "dim": None, "seed": 0, "normalizer": normalizer}
    if kind:  # read as perturbed copies' outputs (Daunce) or hidden states (repsim): the
        # same numbers, another kind of store
        settings["kind"] = kind
    store = Store(write_arrays(path, features, scalars, settings, shard_size=shard_size))
    if with_factors:
        for shard in store.shards:
            part = {}
            for name, (x, dy) in raw.items():
                f = Factors.zeros(dy.shape[-1], x.shape[-1], "cpu")
                rows = slice(shard.start, shard.end)
                f.update(
                    torch.from_numpy(x[rows].reshape(-1, x.shape[-1])),
                    torch.from_numpy(dy[rows].reshape(-1, dy.shape[-1])),
                )
                part[name] = f
            save_factors(shard_factor_path(store.path, shard.file), part)
    return store


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("contract")
    made = {}
    for kind in (None, "perturbed", "representation"):
        rng = np.random.default_rng(0)
        prefix = f"{kind}-" if kind else ""
        train = _write(root / f"{prefix}train", rng, 30, 7, True, kind)
        queries = _write(root / f"{prefix}queries", rng, 5, 4, False, kind)
        made[kind] = (train, queries)
    return made


def _kind(method: str) -> str | None:
    """The kind of store a method scores."""
    kind = method_class(method).requires.store
    return None if kind == "gradients" else kind


def _whole(store: Store):
    """All features (N x D) and scalars of a store, read in one piece."""
    parts, scalars = [], {}
    for _, s, phi in store.iter_features():
        parts.append(phi)
        for key, value in s.items():
            scalars.setdefault(key, []).append(value)
    return torch.cat(parts), {k: np.concatenate(v) for k, v in scalars.items()}


def _dense(tmp_path, train, method, queries=None, weights=None, name="scores"):
    """The dense score matrix through the library's `score` entry point (test_score's)."""
    return dense_scores(
        train,
        method,
        tmp_path / name,
        queries=(queries or train).path,
        weights=weights,
        damping=DAMPING,
    )


def _weights_file(tmp_path, store, values, name):
    groups = list(store.module_names)
    path = tmp_path / f"{name}.safetensors"
    save_weights(path, WeightsArtifact(np.asarray(values), groups, {g: g for g in groups}))
    return path


# Methods that score a store's features (bm25 reads the rows' words: tests/test_bm25.py).
METHODS = tuple(m for m in method_names() if not method_class(m).requires.reads_words)


@pytest.mark.parametrize("method", METHODS)
def test_streamed_scores_equal_the_method_on_the_whole_matrix(tmp_path, stores, method):
    train, queries = stores[_kind(method)]
    got = _dense(tmp_path, train, method, queries)
    prepared = get_method(method, train, DAMPING).prepare()
    phi, scalars = _whole(train)
    g, _ = _whole(queries)
    scale = prepared.train_scale(phi, scalars)
    raw = prepared.query_vectors(g, None) @ phi.T
    want = prepared.finalize(raw if scale is None else raw * scale).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    records = run_score(
        ScoreOptions(
            train=train.path,
            method=method,
            damping=DAMPING,
            queries=queries.path,
            top=4,
            preview=False,
        )
    )
    for q in range(queries.num_examples):
        order = np.argsort(-got[q], kind="stable")[:4]
        assert [r["index"] for r in records if r["query"] == q] == order.tolist()


@pytest.mark.parametrize("method", METHODS)
def test_self_influence_is_the_diagonal(tmp_path, stores, method):
    train, _ = stores[_kind(method)]
    dense = _dense(tmp_path, train, method)
    out = tmp_path / "self.npy"
    run_score(
        ScoreOptions(
            train=train.path,
            method=method,
            damping=DAMPING,
            self_influence=True,
            out=out,
            preview=False,
        )
    )
    diagonal = np.diag(dense)
    np.testing.assert_allclose(np.load(out), diagonal, rtol=1e-4, atol=1e-5 * np.abs(dense).max())


@pytest.mark.parametrize("method", METHODS)
def test_weights_act_through_the_contributions(tmp_path, stores, method):
    train, queries = stores[_kind(method)]
    plain = _dense(tmp_path, train, method, queries, name="plain")
    ones = _weights_file(tmp_path, train, np.ones(len(SHAPES)), "ones")
    np.testing.assert_allclose(
        _dense(tmp_path, train, method, queries, ones, "ones"), plain, rtol=1e-6, atol=1e-7
    )
    w = np.array([0.2, 2.5, 0.9])
    weighted = _dense(tmp_path, train, method, queries, _weights_file(tmp_path, train, w, "w"))
    assert not np.allclose(weighted, plain)
    # learn-weights' factorization: score = finalize(sum_j w_j C_j) (linear methods: no finalize).
    prepared = get_method(method, train, DAMPING).prepare()
    g, _ = _whole(queries)
    mapping = {m: m for m in train.module_names}
    columns = group_columns(train, mapping, list(train.module_names))
    ((_, c),) = list(Contributions(train, prepared, g, columns).chunks())
    for weights, want in ((np.ones(3), plain), (w, weighted)):
        total = (c.double() * torch.from_numpy(weights)).sum(-1).float()
        got = prepared.finalize(total).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    if prepared.linear:
        np.testing.assert_allclose(c.sum(-1).numpy(), plain, rtol=1e-3, atol=1e-4 * plain.max())


@pytest.mark.parametrize("method", METHODS)
def test_weights_equal_scaling_the_query_group_slices(tmp_path, stores, method):
    train, queries = stores[_kind(method)]
    prepared = get_method(method, train, DAMPING).prepare()
    if type(prepared).query_plain is not Method.query_plain:
        pytest.skip(f"{method} weights its normalized query (query_plain), not the raw one")
    g, _ = _whole(queries)
    w = torch.tensor([0.2, 2.5, 0.9])
    per_feature = torch.cat(
        [w[j].repeat(s.stop - s.start) for j, s in enumerate(train.layout.slices)]
    )
    phi, scalars = _whole(train)
    scale = prepared.train_scale(phi, scalars)

    def scores(q, weights):
        raw = prepared.query_vectors(q, weights) @ phi.T
        return prepared.finalize(raw if scale is None else raw * scale)

    torch.testing.assert_close(scores(g, per_feature), scores(g * per_feature, None))


def test_every_method_declares_its_needs():
    from attrib.methods import METHODS as REGISTRY

    for name, cls in REGISTRY.items():
        assert cls.name == name and cls.summary
        assert isinstance(cls.requires, Requirements) and cls.requires.query_side_output
        assert isinstance(cls.linear, bool)
        if cls.preconditioner is not None:  # registered, and featurize collects what it needs
            kind = PRECONDITIONERS[cls.preconditioner]
            assert kind.factors == cls.requires.factors


def test_the_method_help_names_featurize_s_defaults():
    """--method's help says what a default store is scored by; it went stale once."""
    from attrib.featurize.options import DIFFUSION_METHOD, FEATURIZE_METHOD
    from attrib.methods import DEFAULT_METHOD, STORE_DEFAULT_HELP

    assert f"{FEATURIZE_METHOD} for featurize's default store" in STORE_DEFAULT_HELP
    assert f"{DEFAULT_METHOD} for a {DIFFUSION_METHOD} store" in STORE_DEFAULT_HELP


@pytest.mark.parametrize("name", sorted(PRECONDITIONERS))
def test_every_preconditioner_is_a_symmetric_positive_definite_inverse_cached_by_the_store(
    stores, name
):
    train, _ = stores[None]
    fitted = PRECONDITIONERS[name](train, DAMPING).fit()
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((6, train.layout.total)))
    x = x.float()
    a, b = fitted.apply(x), fitted.apply(x[:3])
    torch.testing.assert_close(a[:3], b)  # row by row: the same whatever the batch
    torch.testing.assert_close(x @ a.T, (x @ a.T).T, rtol=1e-4, atol=1e-5)  # symmetric
    assert (x * a).sum(1).min() > 0  # positive definite
    assert fitted.nbytes() >= 0
    if name != "identity":  # fitted once: a second instance reads the cache beside the store
        cached = sorted(p.name for p in (train.path / "cache").iterdir())
        again = PRECONDITIONERS[name](train, DAMPING).fit()
        assert sorted(p.name for p in (train.path / "cache").iterdir()) == cached
        torch.testing.assert_close(again.apply(x), a)


def test_the_gram_preconditioners_are_the_damped_inverse_gram_matrix(stores):
    train, _ = stores[None]
    phi = torch.cat([p for _, _, p in train.iter_features()]).double()
    x = torch.from_numpy(np.random.default_rng(2).standard_normal((4, train.layout.total)))
    blocks = {"gram-global": [slice(0, train.layout.total)], "gram-block": train.layout.slices}
    for name, parts in blocks.items():
        want = torch.empty_like(x)
        for part in parts:
            gram = phi[:, part].T @ phi[:, part]
            lam = DAMPING * gram.diagonal().mean()
            want[:, part] = x[:, part] @ torch.linalg.inv(gram + lam * torch.eye(len(gram)))
        got = PRECONDITIONERS[name](train, DAMPING).fit().apply(x.float())
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)
