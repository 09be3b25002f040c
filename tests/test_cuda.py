"""CUDA paths (skipped without a GPU): float32 on the GPU equals the CPU; bfloat16 and float16
compute stay close to float32; a store written on the GPU reads back like a CPU one."""

from __future__ import annotations

import pytest
import torch
from helpers import features, load

from attrib.featurize.projection import ProjectionSpec

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CASES = [("gpt2_dir", "text_data", "loss"), ("resnet_dir", "image_data", "margin")]


def _on(task, device, dtype):
    task.model.to(device=device, dtype=dtype)
    return task


@pytest.mark.parametrize("model, data, output", CASES)
def test_gpu_float32_equals_cpu(request, model, data, output):
    task, dataset = load(request.getfixturevalue(model), request.getfixturevalue(data))
    spec = ProjectionSpec("factored", 8)
    cpu = features(task, dataset, spec, range(8), output)
    gpu = features(_on(task, "cuda", torch.float32), dataset, spec, range(8), output)
    for name in cpu:
        scale = cpu[name].abs().max()
        # cuDNN convolutions may use TF32 (10-bit mantissa): allow 1e-2 of the scale.
        assert (gpu[name].cpu() - cpu[name]).abs().max() <= 1e-2 * scale, name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("model, data, output", CASES)
def test_half_precision_compute_stays_close_to_float32(request, model, data, output, dtype):
    task, dataset = load(request.getfixturevalue(model), request.getfixturevalue(data))
    spec = ProjectionSpec("factored", 8)
    full = features(_on(task, "cuda", torch.float32), dataset, spec, range(8), output)
    half = features(_on(task, "cuda", dtype), dataset, spec, range(8), output)
    for name in full:
        assert half[name].dtype == torch.float32  # projected and accumulated in float32
        cos = torch.nn.functional.cosine_similarity(half[name], full[name], dim=1)
        assert cos.min() > 0.98, (name, cos.min().item())


def test_kronecker_factors_on_the_gpu_equal_the_cpu(tmp_path, resnet_dir, image_data):
    from test_score import _store

    from attrib.store.factors import total_factors

    cpu = _store(resnet_dir, image_data, tmp_path / "cpu", method="ekfac", max_examples=12)
    gpu = _store(
        resnet_dir, image_data, tmp_path / "gpu", method="ekfac", max_examples=12, device="cuda"
    )
    a, b = total_factors(cpu), total_factors(gpu)
    for name in a:
        scale = a[name].a.abs().max()
        assert (a[name].a - b[name].a).abs().max() <= 1e-2 * scale
        scale = a[name].s.abs().max()
        assert (a[name].s - b[name].s).abs().max() <= 1e-2 * scale


@pytest.mark.parametrize("method", ["tracin", "trak-block", "cosine", "das"])
@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_gpu_scoring_equals_cpu(tmp_path, method, dtype):
    import numpy as np

    from attrib.distributed import Runtime
    from attrib.methods import get_method
    from attrib.score.stream import score
    from attrib.store import Store
    from attrib.store.arrays import write_arrays

    rng = np.random.default_rng(0)
    phi = rng.standard_normal((300, 24)).astype(np.float32)
    scalars = {
        name: rng.uniform(0.5, 1.5, 300).astype(np.float32) for name in ("out_to_loss", "residual")
    }
    features = {"a": phi[:, :8], "b": phi[:, 8:]}
    store = Store(write_arrays(tmp_path / "s", features, scalars, shard_size=64, store_dtype=dtype))
    queries = torch.from_numpy(rng.standard_normal((5, 24)).astype(np.float32))
    prepared = get_method(method, store).prepare()
    cpu = score(store, prepared, queries, 20)
    gpu = score(store, prepared, queries, 20, runtime=Runtime(torch.device("cuda")))
    # float32 products on both (TF32 off for matmuls by default); top-k order may swap ties.
    torch.testing.assert_close(gpu.scores, cpu.scores, rtol=1e-4, atol=1e-5)
    assert (gpu.positions[:, :5] == cpu.positions[:, :5]).float().mean() > 0.95


def test_gpu_contributions_equal_cpu(tmp_path):
    import numpy as np

    from attrib.methods import get_method
    from attrib.store import Store
    from attrib.store.arrays import write_arrays
    from attrib.weights.contributions import Contributions

    rng = np.random.default_rng(1)
    phi = rng.standard_normal((200, 12)).astype(np.float32)
    store = Store(write_arrays(tmp_path / "s", {"a": phi[:, :4], "b": phi[:, 4:]}, shard_size=64))
    queries = torch.from_numpy(rng.standard_normal((6, 12)).astype(np.float32))
    method = get_method("tracin", store).prepare()
    columns = [torch.arange(0, 4), torch.arange(4, 12)]  # unequal widths: the per-group path
    cpu = Contributions(store, method, queries, columns).compute(0, 6)
    gpu = Contributions(store, method, queries, columns, device="cuda").compute(0, 6)
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-5)
