"""Shared fixtures: tiny checkpoints and datasets, saved once per session, loaded by path."""

from __future__ import annotations

import os
import tempfile

# Before any Hugging Face import: never touch the network, keep caches out of $HOME.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="attrib-test-hf-"))
os.environ["TOKENIZERS_PARALLELISM"] = "false"

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))

import builders  # noqa: E402


@pytest.fixture(scope="session")
def texts():
    return builders.sentences(40)


@pytest.fixture(scope="session")
def gpt2_dir(tmp_path_factory, texts):
    return builders.save_tiny_gpt2(tmp_path_factory.mktemp("gpt2"), texts)


@pytest.fixture(scope="session")
def resnet_dir(tmp_path_factory):
    return builders.save_tiny_resnet(tmp_path_factory.mktemp("resnet"))


@pytest.fixture(scope="session")
def vit_dir(tmp_path_factory):
    return builders.save_tiny_vit(tmp_path_factory.mktemp("vit"))


@pytest.fixture(scope="session")
def text_data(tmp_path_factory, texts):
    return builders.save_text_data(tmp_path_factory.mktemp("text") / "train.parquet", texts)


@pytest.fixture(scope="session")
def image_data(tmp_path_factory):
    return builders.save_image_data(tmp_path_factory.mktemp("images") / "train.parquet", 24)


@pytest.fixture(scope="session")
def ddpm(tmp_path_factory):
    """A tiny unconditional DDPM pipeline and 12 images: (pipeline folder, data file)."""
    root = tmp_path_factory.mktemp("ddpm")
    pipe = builders.save_tiny_ddpm(root / "pipe")
    return pipe, builders.save_plain_images(root / "train.parquet", 12, seed=1)


@pytest.fixture(scope="session")
def sd(tmp_path_factory):
    """A tiny Stable Diffusion pipeline, a LoRA adapter on its UNet, and 10 captioned
    images: (pipeline folder, adapter folder, data file)."""
    root = tmp_path_factory.mktemp("sd")
    pipe = builders.save_tiny_sd(root / "pipe")
    adapter = builders.save_unet_lora(pipe, root / "lora")
    data = builders.save_plain_images(
        root / "train.parquet", 10, seed=2, size=16, captions=builders.CAPTIONS
    )
    return pipe, adapter, data


@pytest.fixture(scope="session")
def lm_run(tmp_path_factory, gpt2_dir, text_data):
    """A run `attrib train` recorded on the tiny GPT-2: AdamW with weight decay, warm-up and a
    cosine schedule, in float64, 2 epochs of 40 rows (tests/test_runs.py, test_magic.py)."""
    from helpers import train_run

    out = tmp_path_factory.mktemp("runs") / "lm"
    flags = ["--epochs", "2", "--lr", "1e-3", "--weight-decay", "0.1", "--schedule", "cosine"]
    return train_run(gpt2_dir, text_data, out, *flags, "--warmup", "2", "--dtype", "float64")
