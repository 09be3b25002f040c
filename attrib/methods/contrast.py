"""Contrastive queries (`score --contrast`): the score of a query minus the score of its
contrast (the chosen answer minus the rejected one), for every method.

Every method scores as finalize(u(q) . phi(n) * s(n)) (methods/base.py); where finalize is
the identity (all but DAS), u(A) . phi * s - u(B) . phi * s = (u(A) - u(B)) . phi * s, so the
difference is one streamed product of the difference of the query vectors, ranked, written
and reported as any score. Per-token rows of A each take an equal share of B's score, so a
query's token rows still sum to its (contrastive) sequence score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attrib.errors import AttribError
from attrib.methods.base import Method


@dataclass
class Contrast:
    features: torch.Tensor  # (C x D) the contrasts' features
    rows: torch.Tensor  # (R,) which contrast each query row subtracts
    scales: torch.Tensor  # (R,) its share (1, or 1/T for a query's T token rows)
    ids: list  # each contrast as records name it (a row index or the value)


def check_contrastable(method: Method) -> None:
    if type(method).finalize is not Method.finalize:
        raise AttribError(
            f"--method {method.name}'s scores pass through a last non-linear step, so a "
            "difference of its scores is not one product: use another method with --contrast"
        )


class Contrasted:
    """A prepared method whose query vectors are u(query) - share * u(contrast)."""

    def __init__(self, method: Method, contrast: Contrast):
        check_contrastable(method)
        self.inner, self.contrast = method, contrast

    def query_vectors(self, g: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        own = self.inner.query_vectors(g, weights)
        other = self.inner.query_vectors(self.contrast.features.float(), weights)
        share = self.contrast.scales.to(other.dtype)[:, None]
        return own - other[self.contrast.rows] * share

    def __getattr__(self, name: str):
        return getattr(self.inner, name)  # the training side is the method's own
