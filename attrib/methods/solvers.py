"""Iterative solves of (H + Lambda) x = b for many right-hand sides at once (`--solver`).

`apply` multiplies a (Q x D) block of row vectors by the damped curvature, `precondition` by
an approximation of its inverse (EK-FAC's). Each row is its own system: the step sizes are per
row, so the result does not depend on which other queries share the block.

- cg: preconditioned conjugate gradient (Hestenes & Stiefel; with EK-FAC as the preconditioner
  this is bergson's "EK-FAC + CG"). From x = 0, exact in one step when the preconditioner is exact.
- astra: the Neumann iteration x <- x + P (b - A x) preconditioned by EK-FAC (ASTRA, Wang et
  al. 2025); converges when P A's eigenvalues lie in (0, 2).
- lissa: the same iteration with P = I / scale (Agarwal et al. 2017), the scale just above A's
  largest eigenvalue (estimated by power iteration; any scale above half of it converges),
  so it always converges, slowly.

Every solve reports its iterations and its largest relative residual |b - A x| / |b|; one that
ends above the tolerance is an error, never a silently returned answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from attrib.errors import AttribError

Operator = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SolveReport:
    solver: str
    iterations: int
    residual: float  # the largest relative residual over the rows

    def describe(self) -> str:
        return f"{self.solver}: {self.iterations} iterations, relative residual {self.residual:.2e}"


def solve(solver: str, apply: Operator, b: torch.Tensor, precondition: Operator,
          iterations: int, tolerance: float) -> tuple[torch.Tensor, SolveReport]:  # fmt: skip
    """x with (H + Lambda) x = b for each row of b, by `solver`; raises when the largest
    relative residual after `iterations` is above `tolerance`."""
    if solver == "cg":
        x, done, residual = conjugate_gradient(apply, b, precondition, iterations, tolerance)
    elif solver == "astra":
        x, done, residual = neumann(apply, b, precondition, iterations, tolerance)
    elif solver == "lissa":
        scale = 1.05 * largest_eigenvalue(apply, b)
        x, done, residual = neumann(apply, b, lambda r: r / scale, iterations, tolerance)
    else:
        raise ValueError(f"unknown solver {solver!r}")
    report = SolveReport(solver, done, residual)
    if not residual <= tolerance:
        other = "" if solver == "cg" else ", or use --solver cg"
        raise AttribError(
            f"the {solver} solve did not converge: relative residual {residual:.2e} after "
            f"{done} iterations (tolerance {tolerance:g}); raise --iterations or --lambda{other}"
        )
    return x, report


def _relative(r: torch.Tensor, norm_b: torch.Tensor) -> torch.Tensor:
    return r.norm(dim=1) / norm_b


def conjugate_gradient(apply, b, precondition, iterations, tolerance):
    """Preconditioned CG on each row of b; returns (x, iterations run, largest residual)."""
    norm_b = b.norm(dim=1).clamp(min=torch.finfo(b.dtype).tiny)
    x, r, done = torch.zeros_like(b), b.clone(), 0
    residual = _relative(r, norm_b)
    z = precondition(r)
    p = z.clone()
    rz = (r * z).sum(1)
    while done < iterations and float(residual.max()) > tolerance:
        ap = apply(p)
        curvature = (p * ap).sum(1)
        active = (residual > tolerance) & (curvature > 0)  # converged rows stay where they are
        alpha = torch.where(active, rz / curvature.clamp(min=torch.finfo(b.dtype).tiny), 0.0)
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        z = precondition(r)
        rz_next = (r * z).sum(1)
        beta = torch.where(active, rz_next / rz.clamp(min=torch.finfo(b.dtype).tiny), 0.0)
        p = z + beta[:, None] * p
        rz = rz_next
        done += 1
        residual = _relative(r, norm_b)
    return x, done, float(residual.max())


def neumann(apply, b, precondition, iterations, tolerance):
    """x <- x + P (b - A x) from x = 0; returns (x, iterations run, largest residual)."""
    norm_b = b.norm(dim=1).clamp(min=torch.finfo(b.dtype).tiny)
    x, r, done = torch.zeros_like(b), b.clone(), 0
    while done < iterations and float(_relative(r, norm_b).max()) > tolerance:
        x = x + precondition(r)
        r = b - apply(x)
        done += 1
    return x, done, float(_relative(r, norm_b).max())


def largest_eigenvalue(apply, like: torch.Tensor, steps: int = 8) -> float:
    """A's largest eigenvalue by power iteration from a fixed random start: an estimate from
    below, which lissa needs only within a factor of two."""
    generator = torch.Generator().manual_seed(0)
    v = torch.randn(1, like.shape[1], generator=generator, dtype=like.dtype).to(like.device)
    value = 0.0
    for _ in range(steps):
        v = v / v.norm()
        w = apply(v)
        value = float((v * w).sum())
        v = w
    return value
