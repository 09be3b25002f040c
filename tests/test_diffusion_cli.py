"""Diffusion end to end through the CLI: the whole chain on tiny pipelines (generate,
featurize, learn-weights, score, retrain, LDS), generated queries with their prompts, bad
input, and half precision."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import run_cli
from test_cli_errors import _assert_one_line_error
from test_diffusion import _featurize, _phi


@pytest.mark.parametrize("which", ["ddpm", "sd-lora"])
def test_the_whole_chain_on_tiny_pipelines(request, tmp_path, which):
    """generate -> featurize train and queries -> learn-weights -> score -> retrain -> LDS."""
    if which == "ddpm":
        pipe, data = request.getfixturevalue("ddpm")
        extra, prompts = [], []
    else:
        pipe, adapter, data = request.getfixturevalue("sd")
        extra = ["--adapter", str(adapter)]
        prompts = ["--prompt", "a {style} of a cat", "--values", "style=photo,watercolor"]
    for name, seed in (("learn", 1), ("eval", 100)):
        code, _, err = run_cli(
            "generate",
            "--model",
            pipe,
            "--out",
            tmp_path / name,
            "--n",
            "2",
            "--steps",
            "4",
            "--trajectory",
            "2",
            "--seed",
            str(seed),
            "-q",
            *extra,
            *prompts,
        )
        assert code == 0, err
    train = _featurize(pipe, data, tmp_path / "train", "dtrak", *extra)
    learn = _featurize(pipe, tmp_path / "learn", tmp_path / "q-learn", "dtrak", *extra)
    evaluation = _featurize(pipe, tmp_path / "eval", tmp_path / "q-eval", "dtrak", *extra)
    weights = tmp_path / "w.safetensors"
    code, _, err = run_cli(
        "learn-weights",
        "--train",
        train.path,
        "--queries",
        learn.path,
        "--method",
        "dtrak",
        "--out",
        weights,
        "--k",
        "3",
        "--groups",
        "block",
        "--depth",
        "2",
        "-q",
    )
    assert code == 0, err
    code, out, err = run_cli(
        "score",
        "--train",
        train.path,
        "--queries",
        evaluation.path,
        "--method",
        "dtrak",
        "--weights",
        weights,
        "--top",
        "3",
        "--format",
        "jsonl",
        "-q",
    )
    assert code == 0, err
    assert len(out.splitlines()) == 3 * evaluation.num_examples
    truth = tmp_path / "gt.npz"
    code, _, err = run_cli(
        "evaluate",
        "retrain",
        "--train",
        train.path,
        "--queries",
        evaluation.path,
        "--out",
        truth,
        "--subsets",
        "3",
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "-q",
    )
    assert code == 0, err
    code, out, err = run_cli(
        "evaluate",
        "lds",
        "--train",
        train.path,
        "--queries",
        evaluation.path,
        "--groundtruth",
        truth,
        "--method",
        "dtrak",
        "--weights",
        f"none,{weights}",
        "--format",
        "jsonl",
    )
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["weights"] for r in rows] == ["none", "w.safetensors"]
    assert all(-100 <= r["lds"] <= 100 and r["subsets"] == 3 for r in rows)  # percent


def test_a_generated_image_with_its_prompt_scores_like_a_query_store(tmp_path, sd):
    pipe, adapter, data = sd
    train = _featurize(pipe, data, tmp_path / "train", "trak", "--adapter", str(adapter))
    image = tmp_path / "query.png"
    from builders import png_bytes

    image.write_bytes(
        png_bytes((np.random.default_rng(3).random((16, 16, 3)) * 255).astype(np.uint8))
    )
    import datasets

    table = tmp_path / "q.parquet"
    datasets.Dataset.from_dict(
        {"image": [{"bytes": image.read_bytes(), "path": None}], "caption": ["a photo of a cat"]},
        features=datasets.Features(
            {"image": datasets.Image(), "caption": datasets.Value("string")}
        ),
    ).to_parquet(str(table))
    queries = _featurize(pipe, table, tmp_path / "queries", "trak", "--adapter", str(adapter))
    outs = {}
    for name, args in (
        ("store", ["--queries", queries.path]),
        ("file", ["--query", image, "--prompt", "a photo of a cat"]),
    ):
        outs[name] = tmp_path / f"{name}.npy"
        code, _, err = run_cli(
            "score",
            "--train",
            train.path,
            *args,
            "--method",
            "trak",
            "--out",
            outs[name],
            "--device",
            "cpu",
            "--no-preview",
            "-q",
        )
        assert code == 0, err
    want = np.load(outs["store"])
    np.testing.assert_allclose(
        np.load(outs["file"]), want, rtol=1e-4, atol=1e-5 * np.abs(want).max()
    )
    code, _, err = run_cli("score", "--train", train.path, "--query", image, "--device", "cpu")
    assert code == 2 and "text-to-image: pass --prompt" in err


def test_diffusion_bad_input(tmp_path, ddpm):
    pipe, data = ddpm
    code, _, err = run_cli(
        "generate", "--model", pipe, "--out", tmp_path / "g", "--prompt", "a cat", "-q"
    )
    assert code == 2 and "unconditional" in err
    code, _, err = run_cli(
        "featurize",
        "--model",
        pipe,
        "--data",
        data,
        "--out",
        tmp_path / "s",
        "--timesteps",
        "0",
        "-q",
    )
    assert code == 2 and "--timesteps" in err
    assert not (tmp_path / "s").exists()
    code, _, err = run_cli("generate", "--model", pipe, "--out", tmp_path / "g", "--steps", "101")
    assert code == 2 and "--steps 101: this pipeline's scheduler has 100 timesteps" in err
    assert not (tmp_path / "g").exists()


def test_generate_refuses_more_steps_than_the_shifted_schedule_takes(tmp_path, sd):
    """Stable Diffusion's schedulers shift timesteps by steps_offset = 1: 100 sampling steps
    on a 100-step schedule would ask for timestep 100."""
    pipe = sd[0]
    out = tmp_path / "g"
    args = ["generate", "--model", pipe, "--out", out, "--prompt", "a cat", "--trajectory", "0"]
    code, _, err = run_cli(*args, "--steps", "100")
    assert code == 2 and "steps_offset 1; pass --steps 99 or fewer" in err, err
    assert not out.exists()
    # Guidance 1 samples with the conditional pass alone (uncond + 1 x (cond - uncond)).
    code, _, err = run_cli(*args, "--steps", "99", "--guidance", "1", "-q")
    assert code == 0, err
    assert len(list((out / "png").glob("*.png"))) == 1


def test_a_pixel_space_unet_in_bfloat16_featurizes_close_to_float32(tmp_path, ddpm):
    """Pixels arrive in float32: a half-precision UNet took them as they were and failed
    ("Input type (float) and bias type (BFloat16)"), found by benchmarks/gpu_check.sh."""
    pipe, data = ddpm
    full = _featurize(pipe, data, tmp_path / "f32", "trak")
    half = _featurize(pipe, data, tmp_path / "bf16", "trak", "--dtype", "bfloat16")
    # bfloat16 keeps 8 bits of mantissa: per-example features agree to a few percent.
    assert np.corrcoef(_phi(full).ravel(), _phi(half).ravel())[0, 1] > 0.99


def test_generate_run_again_keeps_its_query_set_and_refuses_another(tmp_path, ddpm):
    """The same command after it finished (a rerun, or one killed after its folder was in
    place) answers with the folder as it is; other settings need --overwrite."""
    pipe, _ = ddpm
    out = tmp_path / "g"
    args = ["generate", "--model", pipe, "--out", out, "--n", "1", "--steps", "3",
            "--trajectory", "2", "--device", "cpu"]  # fmt: skip
    code, _, err = run_cli(*args)
    assert code == 0, err
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = run_cli(*args)
    assert code == 0 and "already holds these generated queries" in err, err
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    code, _, err = run_cli(*args, "--seed", "3")
    _assert_one_line_error(code, err, "holds other generated queries; pass --overwrite")
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    code, _, err = run_cli(*args, "--seed", "3", "--overwrite")
    assert code == 0, err
