"""Two-stage scoring (`--rescore C`): the projected store retrieves each query's candidates,
its C/2 highest and C/2 lowest scores, and those are scored again exactly: their gradients
and the query's recomputed from the checkpoint without projection, the query preconditioned
in full space (EK-FAC / K-FAC from factors fitted on the unprojected gradients of every
training row, cached next to the store; TracIn needs none). The rows a user sees are then
ranked as the method on exact gradients would rank them. The other rows keep their projected
scores, put on the exact scale by one factor per query (least squares on the candidates), so
a dense answer (`--out`, `evaluate lds`) mixes the two consistently.

Why the largest scores in both directions: on the digits fine-tune (docs/quality.md) the
projected and exact EK-FAC agree at 0.87 overall but 29% of the exact top-10 are outside the
projected top-10; the exact answer's LDS is carried by the rows of largest magnitude, and
rescoring 10% of the rows recovers nearly all of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from attrib import log
from attrib.errors import AttribError
from attrib.featurize.curvature import DampedCurvature, GaussNewton
from attrib.featurize.exact import ExactGradients, exact_kronecker
from attrib.methods import Method
from attrib.methods.solvers import SolveReport, solve
from attrib.methods.topk import TopK
from attrib.option_groups import SolveSettings
from attrib.score.solve_state import SolveState
from attrib.store import Store

DEFAULT_BATCH = 16  # exact gradients a forward/backward pass (evaluate lds has no --batch-size)


def check_rescorable(method: Method, store: Store) -> None:
    from attrib.methods import method_class, method_names
    from attrib.store.ensemble import is_ensemble
    from attrib.store.kinds import is_perturbed

    kinds = [n for n in method_names() if method_class(n).exact_preconditioner() is not None]
    if method.exact_preconditioner() is None:
        raise AttribError(
            f"--rescore needs a method whose exact form attrib can fit without storing every "
            f"row's full gradient ({', '.join(kinds)}); {method.name} cannot: drop --rescore"
        )
    if is_perturbed(store) or is_ensemble(store) or store.settings["projection"]["kind"] == "none":
        raise AttribError(
            f"--rescore re-scores a projected store's rows from its checkpoint; {store.path} "
            "is not one (ensemble, perturbed or already exact): drop --rescore"
        )


def check_solvable(method: Method) -> None:
    """--solver solves with the method's Hessian, preconditioned by its eigenbases."""
    if method.exact_preconditioner() in (None, "identity"):
        raise AttribError(
            f"--solver solves the query against the model's Gauss-Newton matrix, which "
            f"{method.name} does not use: pick --method ekfac (or kfac, shampoo), or drop --solver"
        )


@dataclass
class ExactScorer:
    """The method on exact gradients: the training rows' side and the query preconditioner."""

    side: ExactGradients
    method: Method
    blocks: list | None  # full-space eigenbases (kfac / ekfac / shampoo), None for tracin
    module_weights: np.ndarray | None
    batch_size: int
    settings: SolveSettings | None = None
    curvature: DampedCurvature | None = None  # with `settings`: exact Gauss-Newton products
    report: SolveReport | None = None  # the last solve's

    @classmethod
    def fit(cls, store, method, device, batch_size=DEFAULT_BATCH, trust_remote_code=False,
            module_weights=None, progress=True, settings=None) -> ExactScorer:  # fmt: skip
        check_rescorable(method, store)
        if settings is not None:
            check_solvable(method)
        side = ExactGradients(store, device, trust_remote_code)
        blocks, curvature = None, None
        kind = method.exact_preconditioner()
        if kind != "identity":  # a Kronecker eigenbasis: kfac, ekfac, shampoo
            blocks = exact_kronecker(store, device, kind, batch_size, trust_remote_code, progress)
        if settings is not None:
            ggn = GaussNewton(side, settings.rows, settings.batch_size)
            curvature = DampedCurvature(ggn, blocks, method.exact_damping)
        return cls(side, method, blocks, module_weights, batch_size, settings, curvature)

    def query_vectors(self, g: torch.Tensor) -> torch.Tensor:
        """Exact query gradients (Q x D_full) -> weighted and preconditioned in full space:
        by the method's blocks, or (`settings`) by an iterative solve with exact Gauss-Newton
        products that the blocks precondition."""
        out = torch.empty_like(g, dtype=torch.float32)
        start = 0
        for m, width in enumerate(self.side.widths):
            part = g[:, start : start + width].float()
            if self.module_weights is not None:
                part = part * float(self.module_weights[m])
            if self.blocks is not None and self.curvature is None:
                part = self.blocks[m].apply_inverse(part, self.method.exact_damping)
            out[:, start : start + width] = part
            start += width
        if self.curvature is None:
            return out
        s, c, b = self.settings, self.curvature, out.double()
        saved = SolveState(self.side.store, b, s.solver, self.method.exact_damping, c.ggn.positions)
        state = saved.load()
        if state is not None and int(state["done"]) <= s.iterations:  # solve() skips a later one
            log.info(f"resuming the {s.solver} solve at step {int(state['done'])} ({saved.path})")
        x, report = solve(
            s.solver, c.apply, b, c.precondition, s.iterations, s.tolerance, state, saved.save
        )
        log.info(
            f"{len(b)} queries solved against exact Gauss-Newton products (relative damping "
            f"{self.method.exact_damping:g}, {len(c.ggn.positions)} rows): {report.describe()}"
        )
        if self.report is not None:  # query blocks (plan_queries): the worst of them
            report = SolveReport(
                report.solver, max(report.iterations, self.report.iterations),
                max(report.residual, self.report.residual),
            )  # fmt: skip
        self.report = report
        return x.float()

    def candidates(self, vectors: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Exact scores (Q x C) of each query's candidate rows (store positions, Q x C). Each
        distinct row's gradient is computed once, a batch at a time; what is held is that
        batch of full gradients and its (Q x batch) products, never a (Q x rows) matrix."""
        unique, where = torch.unique(positions, return_inverse=True)
        names = [spec.name for spec in self.side.specs]
        out = torch.empty(positions.numel(), dtype=vectors.dtype)
        # The (query, candidate) entries sorted by distinct row: a batch's entries are one
        # contiguous run, found by binary search instead of a scan of every entry.
        flat = where.reshape(-1)
        order = torch.argsort(flat, stable=True)
        sorted_rows = flat[order]
        owner = order // positions.shape[1]  # each sorted entry's query
        done = 0
        for chunk, batch in self.side.batches(unique.tolist(), self.batch_size):
            g = torch.cat([batch.features[name] for name in names], dim=1).cpu()
            products = vectors @ g.T.to(vectors.dtype)  # (Q x batch)
            bounds = torch.tensor([done, done + len(chunk)])
            lo, hi = torch.searchsorted(sorted_rows, bounds).tolist()
            out[order[lo:hi]] = products[owner[lo:hi], sorted_rows[lo:hi] - done]
            done += len(chunk)
        return out.reshape(positions.shape)

    def exact_scores(self, query_gradients, positions: torch.Tensor, block: int) -> torch.Tensor:
        """Exact scores (Q x C) at `positions`, `block` queries at a time (what --memory-gb
        allows, plan_queries): `query_gradients(rows)` gives those queries' exact gradients."""
        out = torch.empty(positions.shape, dtype=torch.float32)
        for start in range(0, len(positions), block):
            rows = list(range(start, min(start + block, len(positions))))
            vectors = self.query_vectors(query_gradients(rows))
            out[rows] = self.candidates(vectors, positions[rows]).float()
        return out


# A query's full-space vectors while it is re-scored: its exact gradient and its weighted,
# preconditioned copy (float32); with --solver also the solve's float64 vectors (b, x, r, p,
# z, A p, the G product's sum and its float32 tangents, and the copies a saved state makes).
RESCORE_COPIES, SOLVE_COPIES = 2, 10


def plan_queries(memory_gb: float, store: Store, method: Method, queries: int,
                 candidates: int, batch_size: int, solving: bool) -> int:  # fmt: skip
    """How many queries are re-scored together within --memory-gb (the model aside): the
    full-space eigenbases, a batch of exact training gradients and every query's candidate
    scores are held whole; the queries' full-space vectors are planned in blocks. Raises in
    one line when not even one query fits."""
    from attrib.memory import Budget

    budget = Budget(memory_gb)
    specs = store.modules
    dims = sum(s.d_out * s.d_in for s in specs)
    if method.exact_preconditioner() not in (None, "identity"):
        eigen = sum(4 * (s.d_out**2 + s.d_in**2) + 8 * s.d_out * s.d_in for s in specs)
        budget.reserve(eigen, "the full-space eigenbases", "use --method tracin")
    budget.reserve(
        2 * batch_size * dims * 4, f"a batch of {batch_size} exact gradients ({dims} parameters)",
        "lower --batch-size",
    )  # fmt: skip
    budget.reserve(
        4 * queries * candidates * 8, f"{queries} x {candidates} candidate scores",
        "re-score fewer candidates (--rescore) or queries per run",
    )  # fmt: skip
    per_query = RESCORE_COPIES * dims * 4 + (SOLVE_COPIES * dims * 8 if solving else 0)
    per_query += batch_size * 4 + candidates * 8
    fix = "drop --solver" if solving else "re-score with fewer --modules"
    return min(budget.rows(per_query, "exact query vectors", fix), max(queries, 1))


def on_exact_scale(approx: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Per query, the factor that best maps the candidates' projected scores onto their
    exact ones (least squares; 1 where the projected scores are all zero)."""
    approx, exact = approx.double(), exact.double()
    norm = (approx * approx).sum(1)
    factor = (approx * exact).sum(1) / norm.clamp(min=1e-300)
    return torch.where(norm > 0, factor, torch.ones_like(factor))


def candidate_positions(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Each row's count/2 highest and count/2 lowest columns of a dense (Q x N) matrix (all
    columns when count >= N)."""
    n = scores.shape[1]
    if count >= n:
        return torch.arange(n).expand(len(scores), n)
    high = (count + 1) // 2
    top = scores.topk(high, dim=1).indices
    bottom = scores.topk(count - high, dim=1, largest=False).indices
    return torch.cat([top, bottom], dim=1)


def rescore_dense(scorer: ExactScorer, scores: torch.Tensor, query_gradients, count: int,
                  block: int) -> torch.Tensor:  # fmt: skip
    """A dense (Q x N) projected score matrix with each query's candidates scored exactly and
    the rest put on the exact scale (`query_gradients`, `block`: ExactScorer.exact_scores)."""
    positions = candidate_positions(scores, count)
    exact = scorer.exact_scores(query_gradients, positions, block)
    approx = torch.gather(scores, 1, positions)
    out = scores.double() * on_exact_scale(approx, exact)[:, None]
    out.scatter_(1, positions, exact.double())
    return out.to(scores.dtype)


def rescore_top(scorer: ExactScorer, found: TopK, query_gradients, count: int, block: int,
                keep: int, opponents: bool, index: np.ndarray) -> tuple:  # fmt: skip
    """rescore_dense's answer from a pass's top and bottom lists (each at least `count`/2 and
    `keep` long) instead of a dense matrix: the `keep` best rows of the mixed scores (with
    opponents, also the `keep` worst), and each query's candidate positions, exact scores and
    scale factor for a dense file."""
    high = (count + 1) // 2
    low = count - high
    listed = torch.cat([found.positions, found.bottom.positions], dim=1)
    approx = torch.cat([found.scores, found.bottom.scores], dim=1)
    width = found.positions.shape[1]
    chosen = torch.zeros(listed.shape, dtype=torch.bool)
    chosen[:, :high] = True
    chosen[:, width : width + low] = True
    positions = listed[:, chosen[0]]
    exact = scorer.exact_scores(query_gradients, positions, block)
    scale = on_exact_scale(approx[:, chosen[0]], exact)
    mixed = approx.double() * scale[:, None]
    mixed[:, chosen[0]] = exact.double()
    # A row in both lists (a store smaller than the lists) counts once.
    duplicate = torch.zeros_like(listed, dtype=torch.bool)
    for q in range(len(listed)):
        _, first = np.unique(listed[q].numpy(), return_index=True)
        duplicate[q] = True
        duplicate[q, torch.from_numpy(first)] = False
    keep = min(keep, int((~duplicate).sum(1).min()))
    # Listed: the candidates by their exact scores, then (a --top beyond count/2) the other
    # rows in their rescaled projected order, so a listed row is never one rescaling lifted
    # above an exactly scored candidate.
    candidate = chosen & ~duplicate
    top = _top(mixed, listed, _listing(mixed, candidate, duplicate, True)[:, :keep], index)
    if opponents:
        order = _listing(mixed, candidate, duplicate, False)[:, :keep]
        top.bottom = _top(mixed, listed, order, index)
    return top, positions, exact, scale


def _listing(mixed, candidate, duplicate, descending: bool) -> torch.Tensor:
    """Column order: candidates first, each group by score; duplicates last."""
    fill = float("-inf") if descending else float("inf")
    order = mixed.masked_fill(duplicate, fill).argsort(dim=1, descending=descending, stable=True)
    group = (~torch.gather(candidate, 1, order)).int() + 2 * torch.gather(duplicate, 1, order).int()
    return torch.gather(order, 1, group.argsort(dim=1, stable=True))


def _top(scores, positions, order, index) -> TopK:
    chosen = torch.gather(positions, 1, order)
    return TopK(torch.gather(scores, 1, order).float(), chosen, index[chosen.numpy()])


def patch_dense_file(path, positions: torch.Tensor, exact: torch.Tensor, scale: torch.Tensor):
    """`--out`'s (Q x N) projected scores replaced by rescore_dense's answer (patched in a
    copy renamed over it: the file is never half-patched)."""
    import shutil

    from attrib.atomic import atomic_path

    with atomic_path(path, ".npy") as tmp:
        shutil.copyfile(path, tmp)
        matrix = np.load(tmp, mmap_mode="r+")
        for q in range(len(positions)):
            matrix[q] *= np.float32(scale[q])
            matrix[q, positions[q].numpy()] = exact[q].numpy()
        matrix.flush()
        del matrix
