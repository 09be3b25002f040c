"""Handwritten digits (scikit-learn, 1,797 8x8 images) and a small ResNet trained on them."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

from attrib.examples.common import split_rows, train_checkpoint
from attrib.training.loop import Recipe

SIZES = {"train": 1000, "learn": 250, "val": 150, "eval": 250}
RECIPE = Recipe(
    init="scratch", epochs=15, lr=3e-3, batch_size=64, weight_decay=1e-4, schedule="cosine", seed=0
)
IMAGE_SIZE = 16


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray((image * (255 / 16)).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def write_data(root: Path, seed: int = 0, sizes: dict | None = None, flip: float = 0.0):
    """One parquet file per role (image + label); with `flip`, that fraction of the training
    labels is changed to another class (their positions are saved as mislabeled.npy)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = split_rows(len(digits.images), sizes or SIZES, seed)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role, index in rows.items():
        labels = digits.target[index].copy()
        if role == "train" and flip > 0:
            rng = np.random.default_rng(seed + 1)
            flipped = rng.choice(len(index), round(flip * len(index)), replace=False)
            labels[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
            np.save(root / "mislabeled.npy", np.sort(flipped))
        images = [{"bytes": png(digits.images[i]), "path": None} for i in index]
        data = datasets.Dataset.from_dict(
            {"image": images, "label": [int(x) for x in labels]}, features=features
        )
        paths[role] = root / f"{role}.parquet"
        data.to_parquet(str(paths[role]))
    return paths


def init_model(path: Path, seed: int = 0) -> Path:
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    config = ResNetConfig(
        num_channels=1,
        embedding_size=16,
        hidden_sizes=[16, 32, 64],
        depths=[1, 1, 1],
        layer_type="basic",
        num_labels=10,
        downsample_in_first_stage=False,
    )
    config.id2label = {i: str(i) for i in range(10)}
    config.label2id = {str(i): i for i in range(10)}
    torch.manual_seed(seed)
    ResNetForImageClassification(config).save_pretrained(path)
    ViTImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=[0.5], image_std=[0.5]
    ).save_pretrained(path)
    return path


def build(root: Path, seed: int = 0, recipe: Recipe | None = None, flip: float = 0.0, device="cpu"):
    """Data files and a trained checkpoint under `root`; returns (paths by role, model dir)."""
    paths = write_data(root / "data", seed, flip=flip)
    init = init_model(root / "init", seed)
    model = train_checkpoint(init, paths["train"], root / "model", recipe or RECIPE, device)
    return paths, model
