"""Scores against brute-force numpy, streamed top-k against a full sort, weights, self-influence,
and query sources (store, files, stdin) against each other."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from builders import png_bytes
from helpers import run_cli

from attrib.featurize.options import FeaturizeOptions
from attrib.featurize.run import run_featurize as featurize
from attrib.score.options import ScoreOptions
from attrib.score.run import run_score
from attrib.store import Store
from attrib.weights.artifact import WeightsArtifact, save_weights

DAMPING = 0.05


def _store(model, data, out, **kw):
    kw = {
        "proj_dim": 4,
        "shard_size": 7,
        "batch_size": 5,
        "progress": False,
        "device": "cpu",
        "store_dtype": "float32",
        **kw,
    }
    return Store(featurize(FeaturizeOptions(model=str(model), data=str(data), out=out, **kw)))


@pytest.fixture(scope="module")
def image_store(tmp_path_factory, resnet_dir, image_data):
    return _store(resnet_dir, image_data, tmp_path_factory.mktemp("s") / "train")


def _phi(store: Store) -> np.ndarray:
    return np.concatenate([store.matrix(n).astype(np.float64) for n in store.module_names], 1)


def _brute_force(method: str, store: Store, queries: np.ndarray, w=None) -> np.ndarray:
    phi = _phi(store)
    q = queries.astype(np.float64)
    w = np.ones(phi.shape[1]) if w is None else w
    if method == "tracin":
        return (q * w) @ phi.T
    if method == "cosine":
        qn = q / np.linalg.norm(q, axis=1, keepdims=True)
        pn = phi / np.linalg.norm(phi, axis=1, keepdims=True)
        return (qn * w) @ pn.T
    out_to_loss = store.column("out_to_loss").astype(np.float64)
    blocks = [slice(0, phi.shape[1])] if method == "trak" else store.layout.slices
    kernel = np.zeros((phi.shape[1], phi.shape[1]))
    for b in blocks:
        gram = phi[:, b].T @ phi[:, b]
        lam = DAMPING * np.trace(gram) / gram.shape[0]
        kernel[b, b] = np.linalg.inv(gram + lam * np.eye(gram.shape[0]))
    return (q * w) @ kernel @ phi.T * out_to_loss


def _dense(store: Store, method: str, tmp_path: Path, **kw) -> np.ndarray:
    """All scores (queries x train) through `run_score --out`."""
    out = tmp_path / f"{method}.npy"
    kw.setdefault("damping", DAMPING)
    run_score(ScoreOptions(train=store.path, method=method, out=out, preview=False, **kw))
    return np.load(out)


@pytest.mark.parametrize("method", ["tracin", "cosine", "trak", "trak-block"])
def test_scores_equal_brute_force(tmp_path, image_store, method):
    got = _dense(image_store, method, tmp_path, queries=image_store.path)
    want = _brute_force(method, image_store, _phi(image_store))
    assert got.shape == (24, 24) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4 * np.abs(want).max())


@pytest.mark.parametrize("method", ["tracin", "trak-block"])
def test_streamed_top_k_equals_a_full_sort(tmp_path, image_store, method):
    dense = _dense(image_store, method, tmp_path, queries=image_store.path)
    records = run_score(
        ScoreOptions(
            train=image_store.path,
            method=method,
            damping=DAMPING,
            top=5,
            queries=image_store.path,
            preview=False,
        )
    )
    for q in range(24):
        mine = [r for r in records if r["query"] == q]
        order = np.argsort(-dense[q], kind="stable")[:5]
        assert [r["index"] for r in mine] == order.tolist()
        np.testing.assert_allclose([r["score"] for r in mine], dense[q, order], rtol=1e-5)


def _weights_file(store: Store, path: Path, values) -> Path:
    modules = store.module_names
    save_weights(path, WeightsArtifact(np.asarray(values), list(modules), {m: m for m in modules}))
    return path


@pytest.mark.parametrize("method", ["tracin", "cosine", "trak", "trak-block"])
def test_weights_scale_the_query_group_slices(tmp_path, image_store, method):
    plain = _dense(image_store, method, tmp_path, queries=image_store.path)
    ones = _weights_file(image_store, tmp_path / "ones.safetensors", [1.0] * 7)
    same = _dense(image_store, method, tmp_path, queries=image_store.path, weights=ones)
    np.testing.assert_allclose(same, plain, rtol=1e-5, atol=1e-6 * np.abs(plain).max())
    values = np.linspace(0.1, 2.0, 7)
    weighted = _dense(
        image_store,
        method,
        tmp_path,
        queries=image_store.path,
        weights=_weights_file(image_store, tmp_path / "w.safetensors", values),
    )
    want = _brute_force(method, image_store, _phi(image_store), image_store.layout.expand(values))
    np.testing.assert_allclose(weighted, want, rtol=2e-3, atol=2e-4 * np.abs(want).max())


@pytest.mark.parametrize("method", ["tracin", "cosine", "trak", "trak-block"])
def test_self_influence_is_the_diagonal(tmp_path, image_store, method):
    dense = _dense(image_store, method, tmp_path, queries=image_store.path)
    out = tmp_path / "self.npy"
    records = run_score(
        ScoreOptions(
            train=image_store.path,
            method=method,
            damping=DAMPING,
            out=out,
            self_influence=True,
            preview=False,
        )
    )
    np.testing.assert_allclose(
        np.load(out), np.diag(dense), rtol=1e-4, atol=1e-5 * np.abs(dense).max()
    )
    assert len(records) == 24
    values = [r["self_influence"] for r in records]
    assert values == sorted(values, reverse=True)


def test_text_queries_from_stdin_files_and_store_agree(tmp_path, gpt2_dir, text_data, monkeypatch):
    train = _store(gpt2_dir, text_data, tmp_path / "train")
    texts = ["the cat sat on the mat", "a small red bird flew over the river"]
    qdata = tmp_path / "q.parquet"
    import datasets

    datasets.Dataset.from_dict({"text": texts}).to_parquet(str(qdata))
    qstore = _store(gpt2_dir, qdata, tmp_path / "queries")
    from_store = _dense(train, "trak", tmp_path, queries=qstore.path)
    from_values = _dense(train, "trak", tmp_path, query=tuple(texts), device="cpu")
    np.testing.assert_allclose(
        from_values, from_store, rtol=1e-4, atol=1e-5 * np.abs(from_store).max()
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(texts) + "\n"))
    code, out, err = run_cli(
        "score",
        "--train",
        train.path,
        "--query",
        "-",
        "--top",
        "3",
        "--device",
        "cpu",
        "--no-preview",
        "--out",
        tmp_path / "stdin.npy",
        "--lambda",
        DAMPING,
        "--method",
        "trak",
    )
    assert code == 0, err
    np.testing.assert_allclose(
        np.load(tmp_path / "stdin.npy"), from_store, rtol=1e-4, atol=1e-5 * np.abs(from_store).max()
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert [(r["query_id"], r["rank"]) for r in lines] == [(t, k) for t in texts for k in (1, 2, 3)]


def test_image_file_queries_agree_with_a_query_store(tmp_path, resnet_dir, image_store):
    import datasets

    rng = np.random.default_rng(5)
    paths = []
    for i in range(3):
        path = tmp_path / f"query{i}.png"
        path.write_bytes(png_bytes((rng.random((20, 20, 3)) * 255).astype(np.uint8)))
        paths.append(str(path))
    # Without a label column the query store explains the predicted class, as --query does.
    qdata = tmp_path / "q.parquet"
    images = [{"bytes": Path(p).read_bytes(), "path": None} for p in paths]
    datasets.Dataset.from_dict(
        {"image": images}, features=datasets.Features({"image": datasets.Image()})
    ).to_parquet(str(qdata))
    qstore = _store(resnet_dir, qdata, tmp_path / "queries")
    from_store = _dense(image_store, "trak", tmp_path, queries=qstore.path)
    from_files = _dense(image_store, "trak", tmp_path, query=tuple(paths), device="cpu")
    np.testing.assert_allclose(
        from_files, from_store, rtol=1e-4, atol=1e-5 * np.abs(from_store).max()
    )


def test_kernel_is_cached_and_keyed_by_the_store(tmp_path, resnet_dir, image_data):
    store = _store(resnet_dir, image_data, tmp_path / "s")
    _dense(store, "trak", tmp_path, queries=store.path)
    cached = list((store.path / "cache").glob("gram-global-*.safetensors"))
    assert len(cached) == 1
    first = _dense(store, "trak", tmp_path, queries=store.path)
    # Another damping reuses the same cached eigendecomposition.
    run_score(
        ScoreOptions(
            train=store.path, method="trak", damping=1.0, queries=store.path, preview=False
        )
    )
    assert list((store.path / "cache").glob("gram-global-*")) == cached
    # A store with other contents gets another key.
    other = _store(resnet_dir, image_data, tmp_path / "s2", max_examples=20)
    _dense(other, "trak", tmp_path, queries=store.path)
    assert list((other.path / "cache").glob("gram-global-*"))[0].name != cached[0].name
    assert np.isfinite(first).all()
