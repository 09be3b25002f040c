"""magic's batched vector-Jacobian products: where the vectorized backward is refused (an op
without a batching rule), the row-by-row fallback gives the same products; and a kept step
graph, measured while it was built, is freed once it has been used."""

from __future__ import annotations

import gc
import weakref

import torch

from attrib.training.magic import _batched_grad, _looped_grad, _SavedBytes


def test_the_row_by_row_fallback_equals_the_vectorized_backward():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(4, 3, generator=generator, dtype=torch.float64, requires_grad=True)
    unused = torch.randn(2, dtype=torch.float64, requires_grad=True)  # reached by no output
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    outputs = [torch.tanh(x @ weight.T).sum(1)]  # 5 outputs
    cotangents = [torch.eye(5, dtype=torch.float64)]
    batched = _batched_grad(outputs, [weight, unused], cotangents)
    looped = _looped_grad(outputs, [weight, unused], cotangents, 5)
    assert torch.allclose(batched[0], looped[0], rtol=1e-12, atol=0)
    assert looped[1] is None and torch.equal(batched[1], torch.zeros(5, 2, dtype=torch.float64))
    for row in range(5):  # and both are each output's own gradient
        (own,) = torch.autograd.grad(outputs[0][row], weight, retain_graph=True)
        assert torch.allclose(looped[0][row], own, rtol=1e-12, atol=0)


def test_a_graph_measured_while_built_is_freed_after_its_backward():
    # tanh saves its output: kept as it was given to the pack hook (with its grad_fn), it
    # formed a cycle through C++ that survives retain_graph and gc (1.5 GB leaked a
    # segment on pydoc-finetune, killed by the OOM killer).
    weight = torch.randn(64, 64, dtype=torch.float64, requires_grad=True)
    saved = _SavedBytes()
    with saved:
        hidden = torch.tanh(weight @ weight)
        out = hidden.sum()
    assert saved.total >= hidden.numel() * 8  # the output was counted
    _batched_grad([out.reshape(1)], [weight], [torch.ones(1, 1, dtype=torch.float64)])
    alive = weakref.ref(hidden)
    del hidden, out
    gc.collect()
    assert alive() is None
