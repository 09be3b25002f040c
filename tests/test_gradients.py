"""Fast paths against slow exact ones: hook gradients vs an autograd loop, factored and dense
projections vs explicit matrices, batch size and padding side."""

from __future__ import annotations

import pytest
import torch
from helpers import autograd_gradients, features, load

from attrib.featurize.allocation import allocate
from attrib.featurize.modules import select_modules
from attrib.featurize.projection import DenseProjector, ProjectionSpec, factored_matrices
from attrib.tasks import TaskOptions

FULL = ProjectionSpec("none", None)


def _close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-4) -> None:
    # float32 end to end: differences come from summation order only, far below 1e-4 of the
    # largest entry of a module's gradients.
    scale = expected.abs().max().clamp(min=1e-12)
    assert ((actual - expected).abs().max() / scale) < rtol


CASES = [
    ("gpt2_dir", "text_data", "loss"),
    ("resnet_dir", "image_data", "margin"),
    ("vit_dir", "image_data", "loss"),
]


@pytest.mark.parametrize("model, data, output", CASES)
def test_hook_gradients_equal_per_example_autograd(request, model, data, output):
    task, dataset = load(request.getfixturevalue(model), request.getfixturevalue(data))
    rows = range(0, 6)
    got = features(task, dataset, FULL, rows, output)
    want = autograd_gradients(task, dataset, rows, output)
    assert set(got) == set(want)
    for name in want:
        _close(got[name], want[name])


@pytest.mark.parametrize("allocation", ["uniform", "sqrt-size"])
@pytest.mark.parametrize("model, data, output", CASES)
def test_factored_projection_equals_kronecker_projection_of_full_gradient(
    request, model, data, output, allocation
):
    task, dataset = load(request.getfixturevalue(model), request.getfixturevalue(data))
    rows = range(0, 5)
    modules = [spec for spec, _ in select_modules(task.model)]
    spec = allocate(ProjectionSpec("factored", 6, seed=3, allocation=allocation), modules)
    got = features(task, dataset, spec, rows, output)
    full = features(task, dataset, FULL, rows, output)
    projected_sides = 0
    if allocation == "sqrt-size":  # the modules' sides differ, each within its gradient
        assert len({(k_out, k_in) for _, k_out, k_in in spec.sides}) > 1
    for module_spec, _ in select_modules(task.model):
        p_out, p_in = factored_matrices(spec, module_spec.name, module_spec.d_out, module_spec.d_in)
        projected_sides += (p_out.shape[0] != p_out.shape[1]) + (p_in.shape[0] != p_in.shape[1])
        _close(got[module_spec.name], full[module_spec.name] @ torch.kron(p_out, p_in))
    assert projected_sides > 0  # the test exercises real projections, not only identities


def test_dense_projection_equals_full_gradient_times_its_matrix(gpt2_dir, text_data):
    task, dataset = load(gpt2_dir, text_data)
    rows = range(0, 4)
    spec = ProjectionSpec("dense", 5, seed=1)
    got = features(task, dataset, spec, rows)
    full = features(task, dataset, FULL, rows)
    for module_spec, _ in select_modules(task.model):
        size = module_spec.d_out * module_spec.d_in
        matrix = DenseProjector(spec, module_spec.name, size, 0).full_matrix()
        _close(got[module_spec.name], full[module_spec.name] @ matrix)


def test_grouped_and_strided_convolutions_equal_autograd():
    """Grouped, strided, dilated, padded convolutions, in both projection kinds."""
    from attrib.featurize.capture import GradientCapture

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2)
    net = torch.nn.Sequential(conv, torch.nn.ReLU(inplace=True), torch.nn.Flatten())
    x = torch.randn(3, 4, 9, 9)
    from attrib.featurize.modules import describe

    spec = describe("0", conv)
    exact = []
    for i in range(3):
        w, b = torch.autograd.grad(net(x[i : i + 1]).pow(2).sum(), [conv.weight, conv.bias])
        exact.append(torch.cat([w.reshape(6, -1), b[:, None]], 1).reshape(-1))
    exact = torch.stack(exact)
    net.requires_grad_(False)
    for projection in (FULL, ProjectionSpec("factored", 4, seed=2)):
        with GradientCapture([(spec, conv)], projection, torch.device("cpu")) as capture:
            capture.backward(net(x).pow(2).sum())
        got = capture.collect(3)["0"]
        if projection.kind == "factored":
            p_out, p_in = factored_matrices(projection, "0", spec.d_out, spec.d_in)
            _close(got, exact @ torch.kron(p_out, p_in))
        else:
            _close(got, exact)


@pytest.mark.parametrize("model, data", [("gpt2_dir", "text_data"), ("resnet_dir", "image_data")])
def test_features_do_not_depend_on_batch_size(request, model, data):
    task, dataset = load(request.getfixturevalue(model), request.getfixturevalue(data))
    spec = ProjectionSpec("factored", 8)
    alone = features(task, dataset, spec, range(0, 9), batch=1)
    together = features(task, dataset, spec, range(0, 9), batch=9)
    for name in alone:
        _close(together[name], alone[name])


def test_language_model_features_do_not_depend_on_padding_side(gpt2_dir, text_data):
    spec = ProjectionSpec("factored", 8)
    right_task, dataset = load(gpt2_dir, text_data, TaskOptions(padding_side="right"))
    right = features(right_task, dataset, spec, range(0, 8))
    left_task, dataset = load(gpt2_dir, text_data, TaskOptions(padding_side="left"))
    left = features(left_task, dataset, spec, range(0, 8))
    for name in right:
        _close(left[name], right[name])


def test_projection_is_a_pure_function_of_seed_and_module():
    spec = ProjectionSpec("factored", 4, seed=7)
    a = factored_matrices(spec, "layer.0", 10, 9)
    b = factored_matrices(spec, "layer.0", 10, 9)
    c = factored_matrices(spec, "layer.1", 10, 9)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])
    # Variance 1/k: inner products are preserved in expectation.
    big = factored_matrices(ProjectionSpec("factored", 64, seed=0), "m", 4000, 4000)[0]
    assert abs(big.pow(2).sum(1).mean().item() - 1.0) < 0.05
