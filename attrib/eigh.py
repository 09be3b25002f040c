"""Symmetric eigendecomposition that does not give up on degenerate matrices.

torch's `linalg.eigh` (its bundled LAPACK) fails to converge on some large, mostly-zero
factors, which K-FAC meets on images: a digits ResNet's first convolution has 576 inputs of
which 518 are padding or border pixels that are always zero (`attrib demo`, 2026-12). numpy's
LAPACK decomposes the same matrix; it is the fallback, on the CPU in float64.
"""

from __future__ import annotations

import numpy as np
import torch


def eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ascending eigenvalues, eigenvectors as columns) of a symmetric matrix."""
    try:
        return torch.linalg.eigh(matrix)
    except torch.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(matrix.detach().double().cpu().numpy())
        like = {"dtype": matrix.dtype, "device": matrix.device}
        return torch.from_numpy(values).to(**like), torch.from_numpy(vectors).to(**like)
