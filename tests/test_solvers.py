"""Iterative inverse-Hessian solves (`score --rescore N --solver cg|astra|lissa`): the solvers
against a dense solve, Gauss-Newton products against autograd's dense G in float64, and the
CLI's answer against the solve done here on the same G."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import run_cli
from test_cli_errors import _assert_one_line_error
from test_score import _store

from attrib.errors import AttribError
from attrib.featurize.curvature import DampedCurvature, GaussNewton
from attrib.featurize.exact import ExactGradients, exact_kronecker
from attrib.methods import get_method
from attrib.methods.solvers import solve

ROWS, QUERIES = 10, 3


def _system(dim=30, count=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    m = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
    a = m @ m.T / dim + 0.5 * torch.eye(dim, dtype=torch.float64)
    b = torch.randn(count, dim, generator=generator, dtype=torch.float64)
    return a, b, torch.linalg.solve(a, b.T).T


@pytest.mark.parametrize("solver", ["cg", "astra", "lissa"])
def test_each_solver_reaches_the_dense_solve(solver):
    a, b, want = _system()
    # ASTRA's preconditioner: an approximate inverse (A with its diagonal inflated by 30%).
    rough = torch.linalg.inv(a + 0.3 * torch.diag(torch.diag(a)))
    x, report = solve(solver, lambda v: v @ a, b, lambda r: r @ rough, 1000, 1e-10)
    assert report.residual <= 1e-10
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-6 * want.abs().max())


def test_cg_with_an_exact_preconditioner_converges_in_one_step():
    a, b, want = _system()
    x, report = solve("cg", lambda v: v @ a, b, lambda r: r @ torch.linalg.inv(a), 50, 1e-12)
    assert report.iterations == 1
    np.testing.assert_allclose(x, want, rtol=0, atol=1e-12 * want.abs().max())
    # without it, CG needs many steps: the count is not one by construction
    assert solve("cg", lambda v: v @ a, b, lambda r: r, 50, 1e-12)[1].iterations > 10


@pytest.mark.parametrize("solver", ["cg", "astra", "lissa"])
def test_a_killed_solve_resumes_to_the_same_answer_bitwise(solver):
    a, b, _ = _system()
    rough = torch.linalg.inv(a + 0.3 * torch.diag(torch.diag(a)))
    args = (solver, lambda v: v @ a, b, lambda r: r @ rough, 1000, 1e-10)
    whole, report = solve(*args)
    saved = {}

    def killed_at_step_5(state):
        saved.update(state)
        if int(state["done"]) == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        solve(*args, save=killed_at_step_5)
    resumed, again = solve(*args, state=dict(saved))
    assert torch.equal(resumed, whole) and again == report


def test_tolerance_zero_runs_the_steps_asked_for_and_keeps_the_answer():
    """Early stopping on request: 3 steps, then the answer and its residual, no error; 3 more
    from its state equal 6 from the start."""
    a, b, _ = _system()
    args = ("cg", lambda v: v @ a, b, lambda r: r)
    saved = {}
    x3, report = solve(*args, 3, 0.0, save=saved.update)
    assert report.iterations == 3 and report.residual > 1e-3
    x6, again = solve(*args, 6, 0.0, state=dict(saved))
    whole, report6 = solve(*args, 6, 0.0)
    assert torch.equal(x6, whole) and again == report6 and not torch.equal(x3, whole)


def test_a_saved_state_past_the_steps_asked_for_is_not_the_answer():
    """Rerun with fewer --iterations than a saved state holds: the answer after that many
    steps, computed afresh, not the saved one."""
    a, b, _ = _system()
    args = ("cg", lambda v: v @ a, b, lambda r: r)
    saved = {}
    solve(*args, 6, 0.0, save=saved.update)
    x2, report = solve(*args, 2, 0.0, state=dict(saved))
    assert report.iterations == 2 and torch.equal(x2, solve(*args, 2, 0.0)[0])


def test_a_diverged_solve_fails_even_with_tolerance_zero():
    a, b, _ = _system()
    with pytest.raises(AttribError, match="diverged"):
        solve("cg", lambda v: v @ a * float("nan"), b, lambda r: r, 3, 0.0)


def test_a_solve_that_does_not_converge_says_so_with_its_residual():
    a, b, _ = _system()
    with pytest.raises(AttribError, match=r"did not converge: relative residual .* after 2 "):
        solve("lissa", lambda v: v @ a, b, lambda r: r, 2, 1e-8)


@pytest.fixture(scope="module")
def stores(tmp_path_factory, resnet_dir, image_data):
    root = tmp_path_factory.mktemp("solvers")
    return {
        role: _store(
            resnet_dir, image_data, root / role, method="ekfac", proj_dim=3, max_examples=rows
        )  # fmt: skip
        for role, rows in (("train", ROWS), ("queries", QUERIES))
    }


def _per_example_rows(ggn: GaussNewton, positions) -> torch.Tensor:
    """Each row's loss gradient by plain autograd, in GaussNewton's layout."""
    side, out = ggn.side, []
    for p in positions:
        rows = side.dataset[[int(side.index[p])]]
        batch = side.task.prepare(rows, range(1), side.task.device, side.columns)
        with torch.enable_grad():
            ((z, loss_of),) = side.task.loss_passes(batch)
            grads = torch.autograd.grad(loss_of(z).sum(), ggn.params)
        out.append(ggn.to_row(grads))
    return torch.stack(out)


def test_the_layout_is_the_exact_gradients_layout(stores):
    """to_row of autograd's gradient equals the hooks' unprojected gradient, row by row
    (linear and conv2d modules, biases as last columns)."""
    side = ExactGradients(stores["train"], "cpu")
    ggn = GaussNewton(side, None, 4)
    for p in ggn.params:
        p.requires_grad_(True)
    want = side.gradients(range(4))
    got = _per_example_rows(ggn, range(4))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * want.abs().max())


def _dense_ggn(ggn: GaussNewton, dtype) -> torch.Tensor:
    """mean J^T (diag(p) - p p^T) J over the rows, J row by row of the logits (autograd)."""
    side = ggn.side
    dense = torch.zeros(sum(side.widths), sum(side.widths), dtype=dtype)
    for position in range(ROWS):
        rows = side.dataset[[int(side.index[position])]]
        batch = side.task.prepare(rows, range(1), "cpu", side.columns)
        with torch.enable_grad():
            ((z, _),) = side.task.loss_passes(batch)
            jacobian = torch.stack([
                ggn.to_row(torch.autograd.grad(z[0, c], ggn.params, retain_graph=True))
                for c in range(z.shape[1])
            ]).to(dtype)  # fmt: skip
        p = z[0].detach().to(dtype).softmax(-1)
        dense += jacobian.T @ (torch.diag(p) - torch.outer(p, p)) @ jacobian
    return dense / ROWS


def test_gauss_newton_products_equal_autograds_dense_matrix_in_float64(stores):
    side = ExactGradients(stores["train"], "cpu")
    side.task.model.double()
    ggn = GaussNewton(side, None, 4)
    for p in ggn.params:
        p.requires_grad_(True)
    dense = _dense_ggn(ggn, torch.float64)
    v = torch.randn(3, dense.shape[0], generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)  # fmt: skip
    got = ggn.product(v)
    np.testing.assert_allclose(got, v @ dense, rtol=0, atol=1e-10 * (v @ dense).abs().max())


def _score(train, queries, out, *extra):
    code, stdout, stderr = run_cli(
        "score", "-t", train.path, "--queries", queries.path, "--out", out, "--device", "cpu",
        "--method", "ekfac", "--top", "3", *extra,
    )  # fmt: skip
    assert code == 0, stderr
    return stdout, stderr


def test_cli_scores_are_the_solved_queries_against_exact_rows(stores, tmp_path):
    """Every row a candidate: score --solver cg's matrix equals g_n . (G + Lambda)^-1 w g_q
    with the solve done here by a dense solve on G built from the same products."""
    train, queries = stores["train"], stores["queries"]
    out = tmp_path / "cg.npy"
    # A damping of ten mean eigenvalues keeps the system well conditioned: CG converges in
    # about 70 steps rather than hundreds (each a Gauss-Newton product: the test's time).
    solve = ("--rescore", str(ROWS), "--solver", "cg", "--tolerance", "1e-4", "--lambda", "10")
    code, _, stderr = run_cli(
        "score", "-t", train.path, "--queries", queries.path, "--out", out, "--device", "cpu",
        "--method", "ekfac", *solve, "--iterations", "3",
    )  # fmt: skip
    assert code == 2 and "after 3 iterations" in stderr and "it resumes" in stderr, stderr
    _, stderr = _score(train, queries, out, *solve, "--iterations", "200")
    assert "resuming the cg solve at step 3" in stderr, stderr
    assert "cg:" in stderr and "relative residual" in stderr
    side = ExactGradients(train, "cpu")
    blocks = exact_kronecker(train, "cpu", "ekfac", progress=False)
    damping = get_method("ekfac", train, 10.0).damping
    ggn = GaussNewton(side, None, 16)
    for p in ggn.params:
        p.requires_grad_(True)
    lam = DampedCurvature(ggn, blocks, damping).lam.double()
    dense = _dense_ggn(ggn, torch.float64) + torch.diag(lam)
    g = ExactGradients(queries, "cpu").gradients(range(QUERIES)).double()
    want = side.gradients(range(ROWS)).double() @ torch.linalg.solve(dense, g.T)
    got = np.load(out)
    np.testing.assert_allclose(got, want.T, rtol=0, atol=1e-3 * want.abs().max())
    # and it is not EK-FAC's own answer under another name
    _score(train, queries, tmp_path / "ekfac.npy", "--rescore", str(ROWS), "--lambda", "10")
    assert np.abs(np.load(tmp_path / "ekfac.npy") - got).max() > 1e-2 * np.abs(got).max()


def test_solver_input_errors_are_one_line(stores, tmp_path):
    train, queries = stores["train"], stores["queries"]
    base = ("score", "-t", train.path, "--queries", queries.path, "--device", "cpu")
    code, _, err = run_cli(*base, "--method", "ekfac", "--solver", "cg")
    _assert_one_line_error(code, err, "--rescore")
    code, _, err = run_cli(*base, "--method", "tracin", "--rescore", "4", "--solver", "cg")
    _assert_one_line_error(code, err, "--method ekfac")
    out = tmp_path / "scores.npy"
    code, _, err = run_cli(*base, "--method", "ekfac", "--rescore", "4", "--solver", "lissa",
                           "--iterations", "1", "--tolerance", "1e-9", "--out", out)  # fmt: skip
    # after the factors' progress lines: one error line with the residual, no answer kept
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: the lissa solve did not converge: relative residual"), last
    assert not out.exists() and not out.with_name("scores.npy.json").exists()


def test_language_model_products_equal_forward_mode_jvps_in_float64(gpt2_dir, text_data, tmp_path):
    """GPT-2 (Conv1D modules, weights stored transposed; the loss a masked token mean): the
    layout is the hooks' and G v equals J^T H J v with J v by forward-mode AD (torch.func),
    an independent route to the same product."""
    from torch.func import functional_call, jvp, vjp
    from torch.nn.attention import SDPBackend, sdpa_kernel

    train = _store(gpt2_dir, text_data, tmp_path / "lm", method="ekfac", max_examples=3)
    side = ExactGradients(train, "cpu")
    ggn = GaussNewton(side, None, 3)
    for p in ggn.params:
        p.requires_grad_(True)
    want = side.gradients(range(3))
    np.testing.assert_allclose(
        _per_example_rows(ggn, range(3)), want, rtol=0, atol=1e-5 * want.abs().max()
    )
    model = side.task.model.double()
    names = {id(p): n for n, p in model.named_parameters()}
    v = torch.randn(2, sum(side.widths), generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)  # fmt: skip
    got = ggn.product(v)
    rows = side.dataset[[int(side.index[p]) for p in range(3)]]
    batch = side.task.prepare(rows, range(3), "cpu", side.columns)
    ((_, loss_of),) = side.task.loss_passes(batch)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    keys = [names[id(p)] for p in ggn.params]

    def logits(*values):  # math attention: forward-mode AD has no fused kernel either
        with sdpa_kernel(SDPBackend.MATH):
            return functional_call(model, dict(zip(keys, values)), kwargs=inputs).logits

    for q in range(2):
        primal = tuple(p.detach() for p in ggn.params)
        z, jv = jvp(logits, primal, tuple(ggn.to_params(v[q])))
        at = z.detach().requires_grad_(True)
        (dloss,) = torch.autograd.grad(loss_of(at).sum(), at, create_graph=True)
        (hjv,) = torch.autograd.grad(dloss, at, jv)
        _, pullback = vjp(logits, *primal)
        expect = ggn.to_row(pullback(hjv)) / 3
        np.testing.assert_allclose(got[q], expect, rtol=0, atol=1e-10 * expect.abs().max())


def test_diffusion_products_run_on_the_unet_and_are_symmetric(ddpm, tmp_path):
    """A UNet's loss split per timestep: the passes' mean loss is the task's loss, and G is
    symmetric and positive semi-definite (v.Gw = w.Gv, v.Gv >= 0) through the UNet's
    attention, which needs its second derivative."""
    pipe, data = ddpm
    train = _store(pipe, data, tmp_path / "ddpm", method="ekfac", max_examples=4)
    side = ExactGradients(train, "cpu")
    side.task.model.double()
    ggn = GaussNewton(side, None, 2)
    rows = side.dataset[[int(side.index[p]) for p in range(2)]]
    batch = side.task.prepare(rows, range(2), "cpu", side.columns)
    with torch.no_grad():
        parts = [loss_of(z) for z, loss_of in side.task.loss_passes(batch)]
        want = side.task.outputs(batch, "loss").values
    np.testing.assert_allclose(sum(parts) / len(parts), want, rtol=1e-12)
    v = torch.randn(2, sum(side.widths), generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)  # fmt: skip
    gv = ggn.product(v)
    assert abs(float(v[0] @ gv[1] - v[1] @ gv[0])) <= 1e-9 * float(v[0] @ gv[0])
    assert float(v[0] @ gv[0]) > 0 and float(v[1] @ gv[1]) > 0
