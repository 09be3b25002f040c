"""`magic --fsdp`: the metagradient of a run whose weights, optimizer state and queries'
adjoints are sharded over 2 processes (gloo), each transformer block's weights gathered
inside the step's graph as it runs and gathered again for backward (training/gathered.py).
Its scores are one process's within float rounding; the blocks it writes resume in one
process; without a launch it is refused in one line."""

from __future__ import annotations

import json

import numpy as np
from helpers import run_cli
from test_cli_errors import _assert_one_line_error
from test_fsdp_training import _attrib, gpt2_run  # noqa: F401 (a fixture)


def test_fsdp_magic_equals_one_unsharded_process(gpt2_run, tmp_path):  # noqa: F811
    args = ["magic", "--run", gpt2_run / "run", "--queries", gpt2_run / "q", "--block", "2"]
    args += ["--device", "cpu", "--format", "jsonl"]
    one = _attrib(*args, "--out", tmp_path / "one.npy", "--cache", tmp_path / "c1", "-q")
    sharded = [*args, "--out", tmp_path / "two.npy", "--cache", tmp_path / "c2", "--fsdp"]
    two = _attrib(*sharded, launch=True)
    assert "3 units gathered as they run; this process holds" in two.stderr  # really sharded
    want, got = np.load(tmp_path / "one.npy"), np.load(tmp_path / "two.npy")
    # float32 steps: the sharded reverse pass runs one query's backward at a time, the
    # unsharded one vectorized over the block (about 1e-7 of the largest score here).
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
    made_by = json.loads((tmp_path / "two.npy.json").read_text())["made_by"]
    assert made_by == {"processes": 2, "fsdp": True}
    ranked = [json.loads(line)["index"] for line in two.stdout.splitlines()]
    assert ranked == [json.loads(line)["index"] for line in one.stdout.splitlines()]

    # The blocks the launch wrote (once: by its main process) resume in one process.
    blocks = sorted((tmp_path / "c2").rglob("queries-*.npy"))
    assert len(blocks) == 2  # 3 queries in blocks of 2
    blocks[1].unlink()
    (tmp_path / "two.npy").unlink()
    resumed = _attrib(*sharded[:-1])
    assert "resuming: 1 of 2 query blocks kept" in resumed.stderr
    np.testing.assert_allclose(
        np.load(tmp_path / "two.npy"), got, rtol=0, atol=2e-6 * np.abs(want).max()
    )


def test_fsdp_magic_is_refused_without_a_launch(gpt2_run, tmp_path):  # noqa: F811
    code, _, err = run_cli(
        "magic", "--run", gpt2_run / "run", "--queries", gpt2_run / "q", "--device", "cpu",
        "--out", tmp_path / "m.npy", "--fsdp",
    )  # fmt: skip
    _assert_one_line_error(code, err, "start 2 or more with torchrun")
    assert not (tmp_path / "m.npy").exists()


def test_gathered_weights_are_saved_as_shards_and_give_the_same_second_derivatives():
    """In one process (a gloo group of 1, where the gathers are copies), a GPT-2's step
    gradient and its Hessian-vector product through the gathered stepper equal the plain
    stepper's in float64; the model's own tensors are emptied, and the weights autograd saves
    are saved as shards in the forward pass and again in the gradient's graph (the memory
    the sharded reverse pass relies on)."""
    import copy
    from types import SimpleNamespace

    import torch
    import torch.distributed as dist
    from transformers import GPT2Config, GPT2LMHeadModel

    from attrib.training.gathered import GatheredStepper
    from attrib.training.stepper import Stepper

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config).double().eval()  # eval: no dropout draws to match
    ids = torch.randint(0, 40, (3, 8))

    def task_of(module):
        def losses(batch):
            logits = module(input_ids=batch).logits[:, :-1]
            flat = torch.nn.functional.cross_entropy(
                logits.reshape(-1, 40), batch[:, 1:].reshape(-1), reduction="none"
            )
            return flat.view(len(batch), -1).mean(1)

        return SimpleNamespace(model=module, info={}, training_losses=losses)

    def first_and_second(stepper, params):
        leaves = [p.detach().requires_grad_(True) for p in params]
        weights = torch.ones(3, dtype=torch.float64)
        grads = stepper.gradient(leaves, ids, weights, 0, create_graph=True)
        stepper.task.model.eval()  # gradient() sets train mode
        directions = [torch.ones_like(g) for g in grads]
        products = torch.autograd.grad(grads, leaves, directions, allow_unused=True)
        return [g.detach() for g in grads], products

    plain = Stepper(task_of(model), seed=0)
    want_grads, want_products = first_and_second(plain, plain.initial_params())
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        gathered = GatheredStepper(task_of(copy.deepcopy(model)), 0, world_size=1, rank=0)
        assert all(p.numel() == 0 for p in gathered.task.model.parameters())
        assert "3 units gathered as they run" in gathered.describe()
        packed = []  # weights saved as shards: after the forward pass, after the gradient's
        differentiate = gathered._differentiate

        def counted(*args):
            packed.append(gathered.saved.packed)
            grads = differentiate(*args)
            packed.append(gathered.saved.packed)
            return grads

        gathered._differentiate = counted
        got_grads, got_products = first_and_second(gathered, gathered.initial_params())
    finally:
        dist.destroy_process_group()
    assert 0 < packed[0] < packed[1]
    for i, name in enumerate(plain.names):
        shape = want_grads[i].shape
        torch.testing.assert_close(got_grads[i].view(shape), want_grads[i], rtol=1e-12, atol=0)
        want = want_products[i]
        got = got_products[i].view(shape) if got_products[i] is not None else torch.zeros(shape)
        want = want if want is not None else torch.zeros(shape)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-14, msg=name)
