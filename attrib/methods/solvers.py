"""Iterative solves of (H + Lambda) x = b for many right-hand sides at once (`--solver`).

`apply` multiplies a (Q x D) block of row vectors by the damped curvature, `precondition` by
an approximation of its inverse (EK-FAC's). Each row is its own system: the step sizes are per
row, so the result does not depend on which other queries share the block.

- cg: preconditioned conjugate gradient (Hestenes & Stiefel; with EK-FAC as the preconditioner
  this is bergson's "EK-FAC + CG"). From x = 0, exact in one step when the preconditioner is exact.
- astra: the Neumann iteration x <- x + P (b - A x) / s preconditioned by EK-FAC (ASTRA, Wang
  et al. 2025), s just above P A's largest eigenvalue (power iteration), so it converges.
- lissa: the same iteration with P = I / scale (Agarwal et al. 2017), the scale just above A's
  largest eigenvalue (estimated by power iteration; any scale above half of it converges),
  so it always converges, slowly.

Every solve reports its iterations and its largest relative residual |b - A x| / |b|; one that
ends above the tolerance is an error, never a silently returned answer. Tolerance 0 asks for
a fixed number of steps instead (early-stopped CG, itself a regularized solve), the residual
reported with the answer. A solve saves its
state after every step (`save`) and resumes from it (`state`): a killed solve, or one rerun
with more iterations, goes on where it stopped, to the same answer.
"""

from __future__ import annotations

import math
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
          iterations: int, tolerance: float, state: dict | None = None,
          save: Callable[[dict], None] | None = None,
          ) -> tuple[torch.Tensor, SolveReport]:  # fmt: skip
    """x with (H + Lambda) x = b for each row of b, by `solver`; raises when the largest
    relative residual after `iterations` in all is above `tolerance` (0: run `iterations`
    steps and keep the answer, an early-stopped solve; its residual is reported). `state`: a state
    `save` was given by an earlier call on the same system, resumed from (iterations count
    from the first call; a state past `iterations` is not used: the answer asked for is the
    one after `iterations` steps)."""
    if state is not None and int(state["done"]) > iterations:
        state = None
    if solver == "cg":
        x, done, residual = conjugate_gradient(
            apply, b, precondition, iterations, tolerance, state, save
        )
    elif solver in ("astra", "lissa"):
        # The step: 1 / (A's largest eigenvalue) for lissa, 1 / (P A's) for astra (EK-FAC
        # underestimates some directions of G; an unscaled step diverges there).
        if state:
            scale = float(state["scale"])
        elif solver == "lissa":
            scale = 1.05 * largest_eigenvalue(apply, b)
        else:
            scale = 1.05 * largest_eigenvalue(lambda v: precondition(apply(v)), b)
        precondition = _scaled(scale, precondition if solver == "astra" else None)
        x, done, residual = neumann(apply, b, precondition, iterations, tolerance, state, save)
    else:
        raise ValueError(f"unknown solver {solver!r}")
    report = SolveReport(solver, done, residual)
    if not math.isfinite(residual):
        raise AttribError(
            f"the {solver} solve diverged (relative residual {residual:.2e} after {done} "
            "iterations); raise --lambda or use --solver cg"
        )
    if tolerance > 0 and not residual <= tolerance:  # 0: a fixed number of steps, asked for
        other = "" if solver == "cg" else ", or use --solver cg"
        raise AttribError(
            f"the {solver} solve did not converge: relative residual {residual:.2e} after "
            f"{done} iterations (tolerance {tolerance:g}); raise --iterations (it resumes) or "
            f"--lambda{other}"
        )
    return x, report


def _scaled(scale: float, inner: Operator | None = None) -> Operator:
    def precondition(r: torch.Tensor) -> torch.Tensor:
        return (r if inner is None else inner(r)) / scale

    precondition.scale = scale  # saved with the state: a resumed lissa keeps its step
    return precondition


def _relative(r: torch.Tensor, norm_b: torch.Tensor) -> torch.Tensor:
    return r.norm(dim=1) / norm_b


def _tiny(b: torch.Tensor) -> float:
    return torch.finfo(b.dtype).tiny


def conjugate_gradient(apply, b, precondition, iterations, tolerance, state=None, save=None):
    """Preconditioned CG on each row of b; returns (x, iterations run, largest residual).
    Resumed from `state` (x, r, p, rz, done) where given; `save(state)` after every step."""
    norm_b = b.norm(dim=1).clamp(min=_tiny(b))
    if state is None:
        x, r = torch.zeros_like(b), b.clone()
        p = precondition(r)
        rz, done = (r * p).sum(1), 0
    else:
        x, r, p, rz, done = (state[k] for k in ("x", "r", "p", "rz", "done"))
        done = int(done)
    residual = _relative(r, norm_b)
    while done < iterations and float(residual.max()) > tolerance:
        ap = apply(p)
        curvature = (p * ap).sum(1)
        active = (residual > tolerance) & (curvature > 0)  # converged rows stay where they are
        alpha = torch.where(active, rz / curvature.clamp(min=_tiny(b)), 0.0)
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * ap
        z = precondition(r)
        rz_next = (r * z).sum(1)
        beta = torch.where(active, rz_next / rz.clamp(min=_tiny(b)), 0.0)
        p = z + beta[:, None] * p
        rz = rz_next
        done += 1
        residual = _relative(r, norm_b)
        if save is not None:
            save({"x": x, "r": r, "p": p, "rz": rz, "done": torch.tensor(done)})
    return x, done, float(residual.max())


def neumann(apply, b, precondition, iterations, tolerance, state=None, save=None):
    """x <- x + P (b - A x) from x = 0 (or `state`'s x, r, done); `save(state)` each step."""
    norm_b = b.norm(dim=1).clamp(min=_tiny(b))
    if state is None:
        x, r, done = torch.zeros_like(b), b.clone(), 0
    else:
        x, r, done = state["x"], state["r"], int(state["done"])
    scale = getattr(precondition, "scale", None)
    while done < iterations and float(_relative(r, norm_b).max()) > tolerance:
        x = x + precondition(r)
        r = b - apply(x)
        done += 1
        if save is not None:
            kept = {"x": x, "r": r, "done": torch.tensor(done)}
            save(
                kept
                if scale is None
                else {**kept, "scale": torch.tensor(scale, dtype=torch.float64)}
            )
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
