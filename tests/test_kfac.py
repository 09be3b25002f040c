"""K-FAC / EK-FAC against dense definitions, and against exact inverse-Hessian influence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import load
from test_score import _dense as dense_scores
from test_score import _store

from attrib.featurize.capture import GradientCapture
from attrib.featurize.modules import describe
from attrib.featurize.projection import ProjectionSpec
from attrib.methods.kronecker import kronecker_eigen
from attrib.store import Store
from attrib.store.arrays import write_arrays
from attrib.store.factors import FACTOR_DIR, Factors, save_factors, shard_factor_path, total_factors

DAMPING = 0.1


def _dense(store: Store, method: str, tmp_path, queries, damping=DAMPING) -> np.ndarray:
    return dense_scores(store, method, tmp_path, queries=queries, damping=damping)


@pytest.fixture(scope="module")
def lm_store(tmp_path_factory, gpt2_dir, text_data):
    root = tmp_path_factory.mktemp("kfac")
    return _store(
        gpt2_dir,
        text_data,
        root / "train",
        method="ekfac",
        proj_dim="full",
        max_examples=24,
        modules=("transformer.h.1.*",),
    )


def _full(store: Store) -> list[np.ndarray]:
    return [store.matrix(n).astype(np.float64) for n in store.module_names]


def test_factors_equal_a_brute_force_pass_over_real_tokens(lm_store, gpt2_dir, text_data):
    """A = sum of x x^T and S = sum of dy dy^T over non-padding tokens, per module."""
    task, dataset = load(gpt2_dir, text_data)
    columns = task.bind_columns(dataset)
    factors = total_factors(lm_store)
    modules = dict(task.model.named_modules())
    for name in lm_store.module_names:
        spec, module = describe(name, modules[name]), modules[name]
        a = torch.zeros(spec.d_in, spec.d_in, dtype=torch.float64)
        s = torch.zeros(spec.d_out, spec.d_out, dtype=torch.float64)
        for row in range(24):  # one example at a time: no padding at all
            batch = task.prepare(dataset[row : row + 1], range(row, row + 1), task.device, columns)
            seen = {}
            hook = module.register_forward_hook(lambda m, i, o, seen=seen: seen.update(x=i[0], y=o))
            with torch.enable_grad():
                module.weight.requires_grad_(True)
                value = task.outputs(batch, "loss").values.sum()
                (dy,) = torch.autograd.grad(value, seen["y"])
                module.weight.requires_grad_(False)
            hook.remove()
            x = torch.cat([seen["x"][0], torch.ones(len(seen["x"][0]), 1)], 1).double()
            keep = dy[0].abs().sum(-1) > 0
            a += x[keep].T @ x[keep]
            s += dy[0][keep].double().T @ dy[0][keep].double()
        torch.testing.assert_close(factors[name].a, a, rtol=1e-4, atol=1e-6 * a.abs().max())
        torch.testing.assert_close(factors[name].s, s, rtol=1e-4, atol=1e-6 * s.abs().max())
        assert factors[name].a_count == factors[name].s_count


def _dense_scores(store, blocks_of) -> np.ndarray:
    phi = _full(store)
    total = 0
    for f, (h, lam) in zip(phi, blocks_of):
        total = total + f @ np.linalg.inv(h + lam * np.eye(len(h))) @ f.T
    return total


def test_kfac_equals_an_explicit_kronecker_inverse(tmp_path, lm_store):
    got = _dense(lm_store, "kfac", tmp_path, queries=lm_store.path)
    blocks = []
    for name in lm_store.module_names:
        a, s = (m.numpy() for m in total_factors(lm_store)[name].means())
        h = np.kron(s, a)  # rows (out, in) like the stored features
        lam = DAMPING * np.trace(s) / len(s) * np.trace(a) / len(a)
        blocks.append((h, lam))
    want = _dense_scores(lm_store, blocks)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-4 * np.abs(want).max())


def test_ekfac_equals_its_dense_definition(tmp_path, lm_store):
    got = _dense(lm_store, "ekfac", tmp_path, queries=lm_store.path)
    blocks = []
    for name, f in zip(lm_store.module_names, _full(lm_store)):
        a, s = (m.numpy() for m in total_factors(lm_store)[name].means())
        q_in, q_out = np.linalg.eigh(a)[1], np.linalg.eigh(s)[1]
        basis = np.kron(q_out, q_in)
        values = ((f @ basis) ** 2).mean(0)  # per-example gradients in the eigenbasis
        blocks.append((basis @ np.diag(values) @ basis.T, DAMPING * values.mean()))
    want = _dense_scores(lm_store, blocks)
    np.testing.assert_allclose(got, want, rtol=5e-3, atol=5e-4 * np.abs(want).max())


def test_shampoo_equals_its_dense_definition(tmp_path, lm_store):
    """The eigenbases of the per-example gradients' own L = mean F F^T and R = mean F^T F,
    eigenvalues corrected as EK-FAC's, on real GPT-2 gradients (no factors read)."""
    got = _dense(lm_store, "shampoo", tmp_path, queries=lm_store.path)
    blocks = []
    for spec, f in zip(lm_store.modules, _full(lm_store)):
        matrices = f.reshape(len(f), spec.d_out, spec.d_in)
        left = np.einsum("noi,npi->op", matrices, matrices) / len(f)
        right = np.einsum("noi,noj->ij", matrices, matrices) / len(f)
        basis = np.kron(np.linalg.eigh(left)[1], np.linalg.eigh(right)[1])
        values = ((f @ basis) ** 2).mean(0)
        blocks.append((basis @ np.diag(values) @ basis.T, DAMPING * values.mean()))
    want = _dense_scores(lm_store, blocks)
    np.testing.assert_allclose(got, want, rtol=5e-3, atol=5e-4 * np.abs(want).max())
    # Not EK-FAC under another name: the bases differ on real gradients.
    ekfac = _dense(lm_store, "ekfac", tmp_path / "ekfac", queries=lm_store.path)
    assert np.abs(ekfac - got).max() > 1e-2 * np.abs(got).max()


def test_shampoo_refuses_a_dense_projection_in_one_line(tmp_path):
    from helpers import run_cli

    rng = np.random.default_rng(0)
    store = write_arrays(
        tmp_path / "dense", {"m": rng.standard_normal((8, 4)).astype(np.float32)}, {},
        {"projection": {"kind": "dense", "dim": 2, "seed": 0}},
    )  # fmt: skip
    code, _, err = run_cli("score", "-t", store, "--self", "--method", "shampoo")
    assert code == 2 and "--projection dense" in err and len(err.strip().splitlines()) == 1


def test_unprojected_ekfac_on_a_linear_model_approaches_exact_influence(tmp_path):
    """Least squares y = w.x + noise: the Hessian is X^T X; with noise independent of x the
    EK-FAC Fisher E[r^2 x x^T] is proportional to it, so scores match exact influence."""
    rng = np.random.default_rng(0)
    n, d = 4000, 6
    x = rng.standard_normal((n, d)) * np.linspace(0.5, 2.0, d)
    w = rng.standard_normal(d)
    y = x @ w + 0.5 * rng.standard_normal(n)
    model = torch.nn.Linear(d, 1, bias=False)
    model.weight.data = torch.from_numpy(np.linalg.lstsq(x, y, rcond=None)[0][None]).float()
    model.requires_grad_(False)
    spec = describe("linear", model)
    inputs, targets = torch.from_numpy(x).float(), torch.from_numpy(y).float()
    with GradientCapture(
        [(spec, model)], ProjectionSpec("none", None), torch.device("cpu"), stats=True
    ) as capture:
        capture.backward((0.5 * (model(inputs)[:, 0] - targets) ** 2).sum())
    grads = capture.collect(n)["linear"].numpy()
    store = Store(
        write_arrays(tmp_path / "s", {"linear": grads}, shard_size=1000, settings={"factors": True})
    )
    factors = capture.take_factors()
    for shard in store.shards:  # one factor file for the whole store is enough here
        save_factors(
            shard_factor_path(store.path, shard.file),
            factors if shard.start == 0 else {"linear": Factors.zeros(1, d, "cpu")},
        )
    assert (store.path / FACTOR_DIR).is_dir()
    queries = grads[:20]
    exact = queries @ np.linalg.inv(x.T @ x) @ grads.T
    kronecker_eigen(store, corrected=True)
    got = _dense(
        store,
        "ekfac",
        tmp_path,
        queries=Store(write_arrays(tmp_path / "q", {"linear": queries})).path,
        damping=1e-6,
    )
    correlation = np.corrcoef(got.ravel(), exact.ravel())[0, 1]
    assert correlation > 0.995, correlation
