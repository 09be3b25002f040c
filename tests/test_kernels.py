"""The global kernel from the N x N dual (N < D) equals (Phi^T Phi + lambda I)^-1 itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attrib.errors import AttribError
from attrib.methods import kernels
from attrib.store import Store
from attrib.store.arrays import write_arrays


def _store(tmp_path, n: int, d: int, rank: int | None = None) -> tuple[Store, np.ndarray]:
    rng = np.random.default_rng(0)
    phi = rng.standard_normal((n, d)) * rng.uniform(0.1, 3.0, size=d)  # uneven feature scales
    if rank is not None:  # rows in a rank-r subspace: the dual has near-zero eigenvalues too
        phi = rng.standard_normal((n, rank)) @ phi[:rank]
    phi = phi.astype(np.float32)
    half = d // 2
    path = write_arrays(tmp_path / "s", {"a": phi[:, :half], "b": phi[:, half:]}, shard_size=7)
    return Store(path), phi.astype(np.float64)


def _dense_inverse(phi: np.ndarray, relative: float) -> np.ndarray:
    gram = phi.T @ phi
    lam = relative * np.trace(gram) / len(gram)
    return np.linalg.inv(gram + lam * np.eye(len(gram)))


@pytest.mark.parametrize("relative", [1e-3, 0.1, 1.0])
@pytest.mark.parametrize("rank", [None, 5])
def test_dual_kernel_equals_the_dense_inverse(tmp_path, relative, rank):
    store, phi = _store(tmp_path, n=20, d=60, rank=rank)
    assert kernels.uses_dual(store, kernels.kernel_slices(store, "global")[0])
    (eigen,) = kernels.eigen(store, "global")
    assert not eigen.complete and eigen.vectors.shape == (60, rank or 20)
    rng = np.random.default_rng(1)
    # Queries off the training span, and the training rows themselves (DAS's leverage).
    x = np.concatenate([rng.standard_normal((4, 60)), phi[:3]])
    want = x @ _dense_inverse(phi, relative)
    got = eigen.apply_inverse(torch.tensor(x, dtype=torch.float32), relative).double().numpy()
    # float32 features and output; float64 inside: agreement to float32 rounding.
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
    # DAS's leverage h = phi K phi^T of training rows (near 1 at small damping): the cached
    # eigenvectors are float32, so h is good to ~1e-5 per unit (the primal path's float32
    # eigenvectors give the same).
    leverage = (got[4:] * phi[:3]).sum(1)
    np.testing.assert_allclose(leverage, (want[4:] * phi[:3]).sum(1), atol=1e-4)


def test_dual_and_primal_paths_give_the_same_scores(tmp_path, monkeypatch):
    store, phi = _store(tmp_path, n=20, d=60)
    x = torch.tensor(np.random.default_rng(2).standard_normal((5, 60)), dtype=torch.float32)
    (dual,) = kernels.eigen(store, "global")
    monkeypatch.setattr(kernels, "uses_dual", lambda *_: False)
    for path in (store.path / kernels.CACHE_DIR).glob("*"):
        path.unlink()
    (primal,) = kernels.eigen(store, "global")
    assert primal.complete
    # The primal Gram sums float32 block products; the dual works in float64 throughout.
    assert dual.damping(0.1) == pytest.approx(primal.damping(0.1), rel=1e-6)
    torch.testing.assert_close(
        dual.apply_inverse(x, 0.1), primal.apply_inverse(x, 0.1), rtol=1e-4, atol=1e-6
    )


def test_dual_kernel_is_cached_and_reloads_equal(tmp_path):
    store, _ = _store(tmp_path, n=20, d=60)
    (first,) = kernels.eigen(store, "global")
    assert kernels.kernel_path(store, "global").exists()
    (again,) = kernels.eigen(store, "global")
    torch.testing.assert_close(again.vectors, first.vectors)
    torch.testing.assert_close(again.values, first.values)


def test_dual_kernel_without_damping_is_refused(tmp_path):
    store, _ = _store(tmp_path, n=20, d=60)
    (eigen,) = kernels.eigen(store, "global")
    with pytest.raises(AttribError, match="singular"):
        eigen.apply_inverse(torch.ones(1, 60), 0.0)


def test_more_examples_than_features_keep_the_primal_path(tmp_path):
    store, phi = _store(tmp_path, n=40, d=12)
    assert not kernels.uses_dual(store, kernels.kernel_slices(store, "global")[0])
    (eigen,) = kernels.eigen(store, "global")
    assert eigen.complete
    x = phi[:2]
    got = eigen.apply_inverse(torch.tensor(x, dtype=torch.float32), 0.1).double().numpy()
    np.testing.assert_allclose(got, x @ _dense_inverse(phi, 0.1), rtol=1e-4, atol=1e-6)


def test_per_module_kernels_wider_than_the_rows_use_the_dual_too(tmp_path):
    store, phi = _store(tmp_path, n=20, d=60)  # two modules of 30 features, 20 rows
    eigens = kernels.eigen(store, "block")
    assert [e.complete for e in eigens] == [False, False]
    x = torch.tensor(phi[:4], dtype=torch.float32)
    got = kernels.apply_block_inverse(eigens, x, store.layout.slices, 0.1).double().numpy()
    want = np.concatenate(
        [phi[:4, s] @ _dense_inverse(phi[:, s], 0.1) for s in store.layout.slices], 1
    )
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())
