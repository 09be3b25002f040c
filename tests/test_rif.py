"""RIF (`--rif`): each row's influence over one minus its leverage. On a ridge regression it is
exact leave-one-out retraining (Sherman-Morrison); plain influence is not."""

from __future__ import annotations

import numpy as np
import torch
from helpers import run_cli
from test_cli_errors import _assert_one_line_error

from attrib.methods import get_method
from attrib.score.stream import stream
from attrib.store import Store
from attrib.store.arrays import write_arrays


def _scores(store: Store, method: str, relative: float, queries: np.ndarray, rif: bool):
    prepared = get_method(method, store, relative, rif).prepare()
    parts = [s for _, _, s in stream(store, prepared, torch.tensor(queries, dtype=torch.float32))]
    return torch.cat(parts, dim=1).double().numpy()


def test_rif_is_exact_leave_one_out_on_ridge_regression(tmp_path):
    rng = np.random.default_rng(0)
    n, d, ridge = 30, 8, 2.0
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d)
    x[0] *= 4.0  # a high-leverage row: where RIF and plain influence part most
    y = x @ rng.standard_normal(d) + 0.3 * rng.standard_normal(n)
    queries = rng.standard_normal((3, d))
    hessian = x.T @ x + ridge * np.eye(d)
    theta = np.linalg.solve(hessian, x.T @ y)
    residual = y - x @ theta
    # Exact: retrain without each row; a row helps a query as much as removing it lowers
    # the query's prediction f = x_q theta (attrib's sign: higher = more helpful).
    exact = np.empty((len(queries), n))
    for i in range(n):
        keep = np.arange(n) != i
        without = np.linalg.solve(x[keep].T @ x[keep] + ridge * np.eye(d), x[keep].T @ y[keep])
        exact[:, i] = queries @ theta - queries @ without
    # The store: output gradients phi_n = x_n and the loss's slope r_n per row (TRAK's Q).
    half = d // 2
    features = {"a": x[:, :half].astype(np.float32), "b": x[:, half:].astype(np.float32)}
    scalars = {"out_to_loss": residual.astype(np.float32)}
    path = write_arrays(tmp_path / "s", features, scalars=scalars, shard_size=7)
    store = Store(path)
    relative = ridge * d / np.trace(x.T @ x)  # attrib's damping rule: c x mean diag
    rif = _scores(store, "trak", relative, queries, rif=True)
    plain = _scores(store, "trak", relative, queries, rif=False)
    scale = np.abs(exact).max()
    # float32 features and scores, float64 kernel: agreement to float32 rounding.
    np.testing.assert_allclose(rif, exact, atol=1e-4 * scale)
    assert np.abs(plain - exact).max() > 0.05 * scale  # plain influence misses row 0


def test_rif_from_the_cli(tmp_path, resnet_dir, image_data):
    common = ["--device", "cpu", "-q"]
    args = ["--out", tmp_path / "s", "--method", "ekfac", "--max-examples", "12", *common]
    code, _, err = run_cli("featurize", "--model", resnet_dir, "--data", image_data, *args)
    assert code == 0, err
    query = tmp_path / "s"
    code, out, err = run_cli("score", "--train", query, "--queries", query, "--method", "ekfac",
                             "--rif", "--top", "3", "--format", "jsonl", *common)  # fmt: skip
    assert code == 0, err
    assert out.count("\n") >= 12
    code, _, err = run_cli("score", "--train", query, "--queries", query, "--method", "tracin",
                           "--rif", *common)  # fmt: skip
    _assert_one_line_error(code, err, "--rif divides by the leverage")
