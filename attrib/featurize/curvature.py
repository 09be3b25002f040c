"""Exact Gauss-Newton products of a store's checkpoint (`score --rescore N --solver ...`).

G v = mean over training rows of J^T H J v, where J is the Jacobian of the model's output on a
row with respect to the store's modules' parameters and H the Hessian of the row's loss with
respect to that output (the task splits its loss there: cross-entropy on logits, squared
error on a UNet's prediction), so G is positive semi-definite. Products are computed with
autograd and never form J: J v by the double-backward trick (J v is the gradient of
(J^T u) . v with respect to u), H on the output alone, J^T by one more backward pass.

Vectors are rows in the layout of `ExactGradients` (modules in store order, each module's
(d_out x d_in) gradient flattened, a bias as its last column), so a query gradient, the
damped product and EK-FAC's blocks all speak about the same coordinates.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from attrib.data import read_rows
from attrib.featurize.exact import ExactGradients
from attrib.store.module_spec import ModuleSpec


def _matrix(spec: ModuleSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A module's parameters (or their gradients) as its (d_out x d_in) gradient matrix."""
    w = weight.T if spec.kind == "conv1d" else weight.reshape(spec.d_out, -1)
    return w if bias is None else torch.cat([w, bias[:, None]], dim=1)


def _split(spec: ModuleSpec, module: nn.Module, matrix: torch.Tensor) -> list[torch.Tensor]:
    """The inverse of `_matrix`: a (d_out x d_in) matrix as tensors shaped like the
    module's weight (and bias)."""
    w = matrix[:, : spec.d_in - 1] if spec.bias else matrix
    shape = module.weight.shape
    w = w.T.contiguous() if spec.kind == "conv1d" else w.reshape(shape)
    return [w, matrix[:, -1].contiguous()] if spec.bias else [w]


def _untie(model: nn.Module, modules: list[nn.Module]) -> None:
    """A stored module whose weight another module shares (GPT-2's output head and its token
    embedding) gets its own copy: its features are the gradient of this module's use alone,
    and so must G's coordinates be. The values are unchanged."""
    uses: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        uses[id(param)] = uses.get(id(param), 0) + 1
    for module in modules:
        if uses.get(id(module.weight), 0) > 1:
            module.weight = nn.Parameter(module.weight.detach().clone())


class GaussNewton:
    """G (mean over the chosen training rows) and its damped form on (Q x D) row blocks."""

    def __init__(self, side: ExactGradients, rows: int | None, batch_size: int, seed: int = 0):
        self.side, self.batch_size = side, batch_size
        total = side.store.num_examples
        if rows is None or rows >= total:
            self.positions = list(range(total))
        else:  # a fixed, seeded sample: every product uses the same G
            chosen = np.random.default_rng(seed).choice(total, size=rows, replace=False)
            self.positions = sorted(int(p) for p in chosen)
        _untie(side.task.model, side.modules)
        self.params: list[nn.Parameter] = []
        for module in side.modules:
            self.params += [module.weight] + ([module.bias] if module.bias is not None else [])

    def to_params(self, row: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for spec, module, width in zip(self.side.specs, self.side.modules, self.side.widths):
            part = row[start : start + width].reshape(spec.d_out, spec.d_in)
            out += _split(spec, module, part.to(module.weight.dtype))
            start += width
        return out

    def to_row(self, tensors) -> torch.Tensor:
        rows, i = [], 0
        for spec in self.side.specs:
            count = 2 if spec.bias else 1
            weight, bias = tensors[i], tensors[i + 1] if spec.bias else None
            rows.append(_matrix(spec, weight, bias).reshape(-1))
            i += count
        return torch.cat(rows)

    def product(self, vectors: torch.Tensor) -> torch.Tensor:
        """G v for each row v of `vectors` (Q x D), in their dtype."""
        task, side = self.side.task, self.side
        device = task.device
        tangents = [self.to_params(v.to(device)) for v in vectors]
        out = torch.zeros(vectors.shape, dtype=torch.float64)
        passes = 0
        flags = [p.requires_grad for p in self.params]
        try:
            for p in self.params:
                p.requires_grad_(True)
            for start in range(0, len(self.positions), self.batch_size):
                chunk = self.positions[start : start + self.batch_size]
                rows = read_rows(side.dataset, [int(side.index[p]) for p in chunk])
                batch = task.prepare(rows, range(len(chunk)), device, side.columns)
                count = 0
                # J v is a second derivative, which fused attention kernels lack (no double
                # backward): PyTorch's math attention gives the same values and has one.
                with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
                    for z, loss_of in task.loss_passes(batch):
                        self._add_pass(z, loss_of, tangents, out)
                        count += 1
                passes = max(passes, count)
        finally:
            for p, flag in zip(self.params, flags):
                p.requires_grad_(flag)
        return (out / (len(self.positions) * passes)).to(vectors.dtype)

    def _add_pass(self, z, loss_of, tangents, out) -> None:
        u = torch.zeros_like(z, requires_grad=True)
        jt_u = torch.autograd.grad(z, self.params, u, create_graph=True)  # linear in u
        at = z.detach().requires_grad_(True)
        (dloss,) = torch.autograd.grad(loss_of(at).sum(), at, create_graph=True)
        for q, tangent in enumerate(tangents):
            (jv,) = torch.autograd.grad(jt_u, u, tangent, retain_graph=True)
            (hjv,) = torch.autograd.grad(dloss, at, jv, retain_graph=True)
            grads = torch.autograd.grad(z, self.params, hjv, retain_graph=True)
            out[q] += self.to_row(grads).double().cpu()


class DampedCurvature:
    """(G + Lambda) and EK-FAC's approximation of its inverse on (Q x D) row blocks. Lambda
    is per module, the method's relative damping times the mean of that module's EK-FAC
    eigenvalues: exactly the damping the blocks apply, so a G equal to EK-FAC's makes the
    preconditioner exact."""

    def __init__(self, ggn: GaussNewton, blocks, damping: float):
        self.ggn, self.blocks, self.damping = ggn, blocks, damping
        lam = []
        for block, width in zip(blocks, ggn.side.widths):
            lam.append(torch.full((width,), float(damping * block.values.clamp(min=0).mean())))
        self.lam = torch.cat(lam)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.ggn.product(x) + x * self.lam.to(x.dtype)

    def precondition(self, x: torch.Tensor) -> torch.Tensor:
        out, start = torch.empty_like(x), 0
        for block, width in zip(self.blocks, self.ggn.side.widths):
            part = x[:, start : start + width]
            out[:, start : start + width] = block.apply_inverse(part, self.damping)
            start += width
        return out
