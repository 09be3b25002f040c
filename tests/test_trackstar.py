"""TrackStar: `featurize --optimizer-state` divides each gradient by sqrt(Adam's second moment)
(Adafactor-factored, normalizer.py) before projecting; `--method trackstar` is the whitened
cosine. Checked against a real Trainer checkpoint's optimizer.pt, and on a ResNet's convs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers
from helpers import run_cli
from safetensors.torch import save_file
from test_cli_errors import _assert_one_line_error
from trainer_runs import train_lm

from attrib.featurize.modules import select_modules
from attrib.featurize.normalizer import module_scales, second_moments
from attrib.featurize.projection import ProjectionSpec, factored_matrices
from attrib.methods import get_method
from attrib.score.stream import stream
from attrib.store import Store


class _KeepSecondMoments(transformers.TrainerCallback):
    """The optimizer's exp_avg_sq by parameter name at the end of training: the truth the
    positional optimizer.pt is mapped back to."""

    def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        names = {id(p): n for n, p in model.named_parameters()}
        self.states = {
            names[id(p)]: {k: v.clone() for k, v in s.items() if torch.is_tensor(v)}
            for p, s in optimizer.state.items()
        }
        self.moments = {n: s["exp_avg_sq"] for n, s in self.states.items() if "exp_avg_sq" in s}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, gpt2_dir, text_data):
    """A tiny GPT-2 fine-tuned by the Trainer for 2 steps: (checkpoint folder, moments)."""
    out = tmp_path_factory.mktemp("trackstar")
    keep = _KeepSecondMoments()
    train_lm(gpt2_dir, text_data, out / "run", keep, steps=2)
    return out / "run" / "checkpoint-2", keep.moments


def _model(path):
    return transformers.AutoModelForCausalLM.from_pretrained(path)


def _featurize(checkpoint, data, out, *extra):
    code, _, err = run_cli("featurize", "-m", checkpoint, "-d", data, "-o", out, "-q",
                           "--store-dtype", "float32", *extra)  # fmt: skip
    assert code == 0, err
    return Store(out)


def test_a_trainers_optimizer_state_is_mapped_back_to_its_parameters(trained):
    checkpoint, truth = trained
    found = second_moments(checkpoint, _model(checkpoint))
    assert found.keys() == truth.keys()  # decayed first, then biases and norms: rebuilt
    for name, value in truth.items():
        assert torch.equal(found[name], value), name


def test_normalized_features_are_the_gradients_times_the_factored_scales(
    trained, text_data, tmp_path
):
    """--proj-dim full: diag(rows) G diag(cols) exactly; factored p = 4: that, projected."""
    checkpoint, _ = trained
    plain = _featurize(checkpoint, text_data, tmp_path / "plain", "--proj-dim", "full",
                       "--max-examples", "6")  # fmt: skip
    normed = _featurize(checkpoint, text_data, tmp_path / "normed", "--proj-dim", "full",
                        "--max-examples", "6", "--optimizer-state", checkpoint)  # fmt: skip
    small = _featurize(checkpoint, text_data, tmp_path / "small", "--proj-dim", "4",
                       "--max-examples", "6", "--optimizer-state", checkpoint)  # fmt: skip
    model = _model(checkpoint)
    selected = select_modules(model)
    scales = module_scales(str(checkpoint), model, selected)
    spec4 = ProjectionSpec.from_dict(small.settings["projection"])  # its allocation's sides
    for spec, _ in selected:
        rows, cols = (s.double() for s in scales[spec.name])
        gradient = torch.from_numpy(plain.matrix(spec.name)).double()
        expected = (gradient.view(-1, spec.d_out, spec.d_in) * rows[:, None] * cols).flatten(1)
        got = torch.from_numpy(normed.matrix(spec.name)).double()
        # float32 products of the same numbers in another order: relative 1e-5 of the row
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max())
        p_out, p_in = factored_matrices(spec4, spec.name, spec.d_out, spec.d_in)
        projected = torch.einsum("noi,op,iq->npq", expected.view(-1, spec.d_out, spec.d_in),
                                 p_out.double(), p_in.double()).flatten(1)  # fmt: skip
        got4 = torch.from_numpy(small.matrix(spec.name)).double()
        assert torch.allclose(got4, projected, rtol=1e-4, atol=1e-5 * projected.abs().max())
    recorded = json.loads((tmp_path / "small" / "manifest.json").read_text())
    assert recorded["settings"]["projection"]["normalizer"]["source"] == str(checkpoint)


def test_conv_layers_under_a_snapshots_second_moments(resnet_dir, image_data, tmp_path):
    """A ResNet's Conv2d and Linear layers, the second moments from a snapshot file (what
    `attrib train` writes): the factored store is the normalized exact one, projected."""
    model = transformers.AutoModelForImageClassification.from_pretrained(resnet_dir)
    generator = torch.Generator().manual_seed(0)
    snapshot = tmp_path / "step-00000002.safetensors"
    save_file(
        {f"v.{n}": torch.rand(p.shape, generator=generator) + 0.1
         for n, p in model.named_parameters()},
        str(snapshot),
    )  # fmt: skip
    args = ("--max-examples", "4", "--optimizer-state", snapshot)
    exact = _featurize(resnet_dir, image_data, tmp_path / "exact", "--proj-dim", "full", *args)
    small = _featurize(resnet_dir, image_data, tmp_path / "small", "--proj-dim", "2", *args)
    assert {s.kind for s in small.modules} == {"conv2d", "linear"}
    spec2 = ProjectionSpec.from_dict(small.settings["projection"])  # its allocation's sides
    for spec in small.modules:
        gradient = torch.from_numpy(exact.matrix(spec.name)).double()
        p_out, p_in = factored_matrices(spec2, spec.name, spec.d_out, spec.d_in)
        projected = torch.einsum("noi,op,iq->npq", gradient.view(-1, spec.d_out, spec.d_in),
                                 p_out.double(), p_in.double()).flatten(1)  # fmt: skip
        got = torch.from_numpy(small.matrix(spec.name)).double()
        assert torch.allclose(got, projected, rtol=1e-4, atol=1e-5 * projected.abs().max())


def test_trackstar_is_the_whitened_cosine(trained, text_data, tmp_path):
    checkpoint, _ = trained
    store = _featurize(checkpoint, text_data, tmp_path / "train", "--method", "trackstar",
                       "--proj-dim", "4", "--optimizer-state", checkpoint)  # fmt: skip
    method = get_method("trackstar", store).prepare()
    phi = torch.cat([torch.from_numpy(store.matrix(n)) for n in store.module_names], 1).double()
    queries = phi[:3].float()
    scores = torch.cat([s for _, _, s in stream(store, method, queries)], dim=1).double()
    kernel = method.kernel.apply(torch.eye(phi.shape[1])).double()  # the damped block inverse
    norms = ((phi @ kernel) * phi).sum(1).sqrt()
    expected = (phi[:3] @ kernel @ phi.T) / norms[:3, None] / norms[None, :]
    assert torch.allclose(scores, expected, atol=1e-5)
    assert torch.allclose(scores[torch.arange(3), torch.arange(3)], torch.ones(3, dtype=float),
                          atol=1e-5)  # fmt: skip


def test_queries_featurized_on_the_fly_use_the_stores_normalizer(trained, text_data, tmp_path):
    checkpoint, _ = trained
    train = tmp_path / "train"
    _featurize(checkpoint, text_data, train, "--method", "trackstar", "--optimizer-state",
               checkpoint)  # fmt: skip
    text = "the quick dog sat"
    code, out, err = run_cli("score", "--train", train, "--query", text, "--method",
                             "trackstar", "--top", "3", "--format", "jsonl")  # fmt: skip
    assert code == 0, err
    on_the_fly = [json.loads(line)["score"] for line in out.splitlines()]
    import datasets

    datasets.Dataset.from_dict({"text": [text]}).to_parquet(str(tmp_path / "q.parquet"))
    _featurize(checkpoint, tmp_path / "q.parquet", tmp_path / "q", "--method", "trackstar",
               "--optimizer-state", checkpoint)  # fmt: skip
    code, out, err = run_cli("score", "--train", train, "--queries", tmp_path / "q", "--method",
                             "trackstar", "--top", "3", "--format", "jsonl")  # fmt: skip
    assert code == 0, err
    from_store = [json.loads(line)["score"] for line in out.splitlines()]
    assert np.allclose(on_the_fly, from_store, rtol=1e-4)
    # A plain query store is refused: it lives in another space.
    _featurize(checkpoint, tmp_path / "q.parquet", tmp_path / "plain-q")
    code, _, err = run_cli("score", "--train", train, "--queries", tmp_path / "plain-q",
                           "--method", "trackstar")  # fmt: skip
    _assert_one_line_error(code, err, "projection")


def test_what_trackstar_cannot_use_is_refused_in_one_line(
    trained, text_data, resnet_dir, image_data, tmp_path
):
    checkpoint, _ = trained
    code, _, err = run_cli("featurize", "-m", checkpoint, "-d", text_data, "-o", tmp_path / "a",
                           "--method", "trackstar")  # fmt: skip
    _assert_one_line_error(code, err, "--optimizer-state")
    assert not (tmp_path / "a").exists()
    _featurize(checkpoint, text_data, tmp_path / "plain", "--max-examples", "4")
    code, _, err = run_cli("score", "--train", tmp_path / "plain", "--query", "x", "--method",
                           "trackstar")  # fmt: skip
    _assert_one_line_error(code, err, "--optimizer-state")
    # Another model's optimizer state: a GPT-2's for a ResNet.
    code, _, err = run_cli("featurize", "-m", resnet_dir, "-d", image_data, "-o", tmp_path / "b",
                           "--optimizer-state", checkpoint)  # fmt: skip
    _assert_one_line_error(code, err, "do not match this model")
    assert not (tmp_path / "b").exists()
    # A pickle holding code is never unpickled.
    evil = tmp_path / "evil" / "optimizer.pt"
    evil.parent.mkdir()
    torch.save({"state": {}, "param_groups": [], "hook": _KeepSecondMoments()}, evil)
    code, _, err = run_cli("featurize", "-m", checkpoint, "-d", text_data, "-o", tmp_path / "c",
                           "--optimizer-state", evil)  # fmt: skip
    _assert_one_line_error(code, err, "can read safely")
    # SGD's state holds no second moments.
    sgd = tmp_path / "sgd.safetensors"
    save_file({"buf.transformer.h.0.mlp.c_fc.weight": torch.ones(2)}, str(sgd))
    code, _, err = run_cli("featurize", "-m", checkpoint, "-d", text_data, "-o", tmp_path / "d",
                           "--optimizer-state", sgd)  # fmt: skip
    _assert_one_line_error(code, err, "no second moments")


def test_a_changed_optimizer_state_is_caught_when_queries_are_featurized(
    trained, text_data, tmp_path
):
    import shutil

    checkpoint, _ = trained
    copy = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, copy)
    _featurize(copy, text_data, tmp_path / "train", "--method", "trackstar", "--max-examples",
               "8", "--optimizer-state", copy)  # fmt: skip
    state = torch.load(copy / "optimizer.pt", weights_only=True)
    for entry in state["state"].values():
        entry["exp_avg_sq"].mul_(2.0).add_(1.0)
    torch.save(state, copy / "optimizer.pt")
    code, _, err = run_cli("score", "--train", tmp_path / "train", "--query", "x", "--method",
                           "trackstar")  # fmt: skip
    _assert_one_line_error(code, err, "not the one the store was featurized with")
    (copy / "optimizer.pt").unlink()
    code, _, err = run_cli("score", "--train", tmp_path / "train", "--query", "x", "--method",
                           "trackstar")  # fmt: skip
    _assert_one_line_error(code, err, "can no longer be read")


def test_a_rank_one_second_moment_is_divided_out_exactly(tmp_path):
    """Where V is rank one (Adafactor's factoring is then exact), diag(rows) G diag(cols)
    is G / sqrt(V) elementwise, the bias as V's last column."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4))
    a, b, beta = torch.rand(4) + 0.5, torch.rand(3) + 0.5, 0.7
    save_file(
        {"v.0.weight": torch.outer(a, b), "v.0.bias": a * beta}, str(tmp_path / "s.safetensors")
    )
    selected = select_modules(model)
    rows, cols = module_scales(str(tmp_path / "s.safetensors"), model, selected)["0"]
    v = torch.outer(a, torch.cat([b, torch.tensor([beta])]))
    assert torch.allclose(rows[:, None] * cols[None, :], v.rsqrt(), rtol=1e-6)


def test_rescoring_a_normalized_store_recomputes_normalized_gradients(
    resnet_dir, image_data, tmp_path
):
    """`score --rescore`: the exact gradients recomputed from the checkpoint are divided as
    the store's were, so re-scoring every row equals the method on the exact normalized store."""
    model = transformers.AutoModelForImageClassification.from_pretrained(resnet_dir)
    generator = torch.Generator().manual_seed(1)
    snapshot = tmp_path / "step-00000001.safetensors"
    save_file(
        {f"v.{n}": torch.rand(p.shape, generator=generator) ** 4 + 0.01
         for n, p in model.named_parameters()},
        str(snapshot),
    )  # fmt: skip
    made = {}
    for dim in ("3", "full"):
        for role, rows in (("train", "10"), ("q", "3")):
            made[dim, role] = _featurize(
                resnet_dir, image_data, tmp_path / f"{role}-{dim}", "--method", "ekfac",
                "--proj-dim", dim, "--max-examples", rows, "--optimizer-state", snapshot,
            )  # fmt: skip

    def scores(dim, out, *extra):
        code, _, err = run_cli("score", "-t", made[dim, "train"].path, "--queries",
                               made[dim, "q"].path, "--out", out, "--method", "ekfac",
                               "--top", "3", *extra)  # fmt: skip
        assert code == 0, err
        return np.load(out)

    want = scores("full", tmp_path / "exact.npy")
    got = scores("3", tmp_path / "mixed.npy", "--rescore", "10")
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    plain = _featurize(resnet_dir, image_data, tmp_path / "plain", "--method", "ekfac",
                       "--proj-dim", "full", "--max-examples", "10")  # fmt: skip
    code, _, err = run_cli("score", "-t", plain.path, "--queries", made["full", "q"].path,
                           "--method", "ekfac")  # fmt: skip
    _assert_one_line_error(code, err, "projection")  # the unnormalized space is another


def test_a_lora_runs_optimizer_state_maps_to_its_adapter(gpt2_dir, text_data, tmp_path):
    """A Trainer that trained a LoRA adapter keeps the adapter's moments alone: they map to
    the adapter's parameters of `--model BASE --adapter CHECKPOINT`, and featurize uses them."""
    from peft import PeftModel

    keep = _KeepSecondMoments()
    train_lm(gpt2_dir, text_data, tmp_path / "run", keep, steps=2, lora=True)
    checkpoint = tmp_path / "run" / "checkpoint-2"
    model = PeftModel.from_pretrained(_model(gpt2_dir), checkpoint)
    found = second_moments(checkpoint, model)
    assert found.keys() == keep.moments.keys() and all("lora_" in n for n in found)
    for name, value in keep.moments.items():
        assert torch.equal(found[name], value), name
    args = ("--adapter", checkpoint, "--method", "trackstar", "--optimizer-state", checkpoint)
    store = _featurize(gpt2_dir, text_data, tmp_path / "s", *args, "--max-examples", "4")
    assert all("lora_" in name for name in store.module_names)


def test_adafactors_factored_moments_are_read_as_it_applies_them(gpt2_dir, text_data, tmp_path):
    """optim="adafactor": a matrix's second moment is kept as row and column sums, and
    Adafactor divides by sqrt((row / mean row) c^T); a vector's as exp_avg_sq."""
    keep = _KeepSecondMoments()
    train_lm(gpt2_dir, text_data, tmp_path / "run", keep, steps=2, optim="adafactor")
    checkpoint = tmp_path / "run" / "checkpoint-2"
    found = second_moments(checkpoint, _model(checkpoint))
    assert found.keys() == keep.states.keys()
    factored = 0
    for name, state in keep.states.items():
        if "exp_avg_sq_row" in state:
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            expected = torch.outer(row / row.mean(), col)
            factored += 1
        else:
            expected = state["exp_avg_sq"]
        assert torch.allclose(found[name], expected, rtol=1e-6), name
    assert factored >= 8  # every Conv1D and the embeddings
    _featurize(checkpoint, text_data, tmp_path / "s", "--method", "trackstar",
               "--optimizer-state", checkpoint, "--max-examples", "4")  # fmt: skip
