"""The symmetric eigendecomposition's fallback when torch's LAPACK gives up."""

from __future__ import annotations

import torch

from attrib import eigh as module


def test_falls_back_to_numpy_with_the_same_decomposition(monkeypatch):
    # Mostly zero, as the factors of a convolution over padded images are.
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(40, 30, dtype=torch.float64)
    x[:, :5] = torch.randn(40, 5, generator=g, dtype=torch.float64)
    matrix = x.T @ x / 40
    values, vectors = torch.linalg.eigh(matrix)

    def fails(_):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")

    monkeypatch.setattr(module.torch.linalg, "eigh", fails)
    got_values, got_vectors = module.eigh(matrix)
    assert got_values.dtype == matrix.dtype and got_vectors.shape == (30, 30)
    torch.testing.assert_close(got_values, values, rtol=0, atol=1e-12)
    # Eigenvectors of repeated eigenvalues are any basis of their space: compare the
    # reconstruction and orthonormality, not the vectors.
    rebuilt = got_vectors @ torch.diag(got_values) @ got_vectors.T
    torch.testing.assert_close(rebuilt, matrix, rtol=0, atol=1e-12)
    torch.testing.assert_close(got_vectors.T @ got_vectors, torch.eye(30, dtype=torch.float64))
