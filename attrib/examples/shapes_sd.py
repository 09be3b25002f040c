"""Coloured shapes on textured backgrounds as a tiny text-to-image pipeline: the fine-grained
attribution task (the main paper's SB-Pokemon in miniature).

Every training image shows a coloured shape on a grey textured background, so each has one
value of each attribute (colour, shape, background), known by construction. Its caption names
each attribute with probability 0.8 ("red circle on stripes", "circle on stripes", "red"), as
real captions leave things out; this is also what lets the model follow prompts that name one
attribute only. 100 of the 125 combinations are trained on (3 images each); the other 25 (a
Latin square: every colour/shape, colour/background and shape/background pair still occurs in
training) are held out. A query's contributors for an attribute are the training images with
its value (60 of 300: chance is 20% at any k). Weight-learning prompts name one attribute only
("red"), as the paper's do; evaluation prompts name all three.

The pipeline is Stable Diffusion's layout at toy size, in pixel space (no VAE: a VAE small
enough to train here decoded sampled latents poorly): a CLIP text encoder (random, frozen, as
in SD training) and a UNet2DConditionModel trained from scratch on 16 px images.

A first version trained on single-concept images (20 per colour, shape or background, as
SB-Pokemon does): a UNet trained from scratch never sees the concepts together, so its
samples for combined prompts were colour smudges and recall stayed at chance. A pretrained
pipeline composes; a toy one has to be shown compositions.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

from attrib.examples.common import train_pipeline
from attrib.training.recipe import Recipe

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
}
SHAPES = ("circle", "square", "triangle", "cross", "ring")
BACKGROUNDS = ("stripes", "checks", "dots", "waves", "grid")
ATTRIBUTES = {"colour": tuple(COLOURS), "shape": SHAPES, "background": BACKGROUNDS}
# Prompts that name one attribute only (weight learning), and the evaluation prompt.
FOCUS_PROMPTS = {"colour": "{colour}", "shape": "{shape}", "background": "on {background}"}
QUERY_PROMPT = "{colour} {shape} on {background}"
NAMED = 0.8  # probability that a caption names an attribute
PER_COMBINATION = 3
SIZE = 16
RECIPE = Recipe(
    init="scratch", epochs=400, lr=2e-3, batch_size=32, weight_decay=0.0, schedule="cosine", seed=0
)


def held_out(colour: str, shape: str, background: str) -> bool:
    """The 25 combinations not trained on: background index = colour + shape (mod 5)."""
    c, s = list(COLOURS).index(colour), SHAPES.index(shape)
    return BACKGROUNDS.index(background) == (c + s) % len(BACKGROUNDS)


def combinations(held: bool = False) -> list[tuple[str, str, str]]:
    """The trained (or, with held=True, the held-out) (colour, shape, background) triples."""
    return [
        (c, s, b) for c in COLOURS for s in SHAPES for b in BACKGROUNDS if held_out(c, s, b) == held
    ]


def caption(colour: str | None, shape: str | None, background: str | None) -> str:
    """The caption naming the given attributes (None: left out)."""
    words = [w for w in (colour, shape) if w] + ([f"on {background}"] if background else [])
    return " ".join(words)


def _grid(rng) -> tuple[np.ndarray, np.ndarray]:
    shift = rng.uniform(-1.5, 1.5, size=2)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    return y - (SIZE - 1) / 2 - shift[0], x - (SIZE - 1) / 2 - shift[1]


def shape_mask(shape: str, rng) -> np.ndarray:
    y, x = _grid(rng)
    r = rng.uniform(4.0, 6.0)
    if shape == "circle":
        return x**2 + y**2 <= r**2
    if shape == "ring":
        d = np.sqrt(x**2 + y**2)
        return (d <= r) & (d >= r - 2)
    if shape == "square":
        return (np.abs(x) <= r * 0.8) & (np.abs(y) <= r * 0.8)
    if shape == "triangle":
        return (y <= r * 0.7) & (y >= -r) & (np.abs(x) <= (y + r) * 0.6)
    return (np.abs(x) <= 1.2) & (np.abs(y) <= r) | (np.abs(y) <= 1.2) & (np.abs(x) <= r)


def texture(background: str, rng) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) + rng.uniform(0, 4, size=2)[:, None, None]
    if background == "stripes":
        return (np.floor(x / 2) % 2).astype(np.float32)
    if background == "checks":
        return ((np.floor(x / 3) + np.floor(y / 3)) % 2).astype(np.float32)
    if background == "dots":
        return (((x % 4) - 1.5) ** 2 + ((y % 4) - 1.5) ** 2 <= 1.2).astype(np.float32)
    if background == "waves":
        return (np.sin(x / 1.5 + 2 * np.sin(y / 3)) > 0).astype(np.float32)
    return ((x % 4 < 1) | (y % 4 < 1)).astype(np.float32)


def render(colour: str, shape: str, background: str, rng) -> np.ndarray:
    """A 16x16 RGB image (uint8): the shape in the colour on the grey texture."""
    grey = 60 + 120 * texture(background, rng)
    image = np.repeat(grey[:, :, None], 3, axis=2)
    image[shape_mask(shape, rng)] = COLOURS[colour]
    return image.astype(np.uint8)


def _png(array: np.ndarray) -> dict:
    buffer = io.BytesIO()
    Image.fromarray(array, mode="RGB").save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def write_data(root: Path, seed: int = 0) -> Path:
    """The training images with captions and their true colour, shape and background."""
    rng = np.random.default_rng(seed)
    rows = {"image": [], "caption": [], **{a: [] for a in ATTRIBUTES}}
    for values in combinations():
        for _ in range(PER_COMBINATION):
            rows["image"].append(_png(render(*values, rng)))
            named = rng.random(len(values)) < NAMED
            rows["caption"].append(caption(*(v if n else None for v, n in zip(values, named))))
            for attribute, value in zip(ATTRIBUTES, values):
                rows[attribute].append(value)
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "caption": datasets.Value("string"),
            **{a: datasets.Value("string") for a in ATTRIBUTES},
        }
    )
    root.mkdir(parents=True, exist_ok=True)
    path = root / "train.parquet"
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return path


def all_texts() -> list[str]:
    """Every caption and prompt the task uses (the tokenizer's training text)."""
    names = [None, *COLOURS], [None, *SHAPES], [None, *BACKGROUNDS]
    return [caption(c, s, b) for c in names[0] for s in names[1] for b in names[2]][1:]


def contributors(queries: Path, train: Path) -> dict[str, dict[str, list[int]]]:
    """For each attribute, {query row: training rows with the query's value}; `queries` is a
    query set `attrib generate` wrote (one column per template field)."""
    query_rows = datasets.load_dataset("parquet", data_files=str(queries), split="train")
    table = datasets.load_dataset("parquet", data_files=str(train), split="train")
    out = {}
    for attribute in ATTRIBUTES:
        by_value = {}
        for i, value in enumerate(table[attribute]):
            by_value.setdefault(value, []).append(i)
        out[attribute] = {str(q): by_value[value] for q, value in enumerate(query_rows[attribute])}
    return out


def tokenizer(texts: list[str], max_length: int = 16, vocab_size: int = 200):
    """A CLIP tokenizer trained on the task's words (byte-pair merges with CLIP's specials)."""

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    core = Tokenizer(models.BPE(unk_token="<|endoftext|>", end_of_word_suffix="</w>"))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        end_of_word_suffix="</w>",
    )
    core.train_from_iterator(texts * 4, trainer)
    state = json.loads(core.to_str())["model"]
    merges = [tuple(m.split()) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return CLIPTokenizer(vocab=state["vocab"], merges=merges, model_max_length=max_length)


def init_pipeline(path: Path, seed: int = 0) -> Path:
    """The untrained pipeline (random UNet and text encoder), saved to `path`."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tok = tokenizer(all_texts())
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            projection_dim=32,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=SIZE,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64),
        # Cross-attention at 8 px only: at 16 px it doubled the training time and the prompt
        # reaches the 16 px up block through the 8 px features anyway.
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    scheduler = DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    StableDiffusionPipeline(
        vae=None,
        text_encoder=text,
        tokenizer=tok,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(path)
    # StableDiffusionPipeline turns the scheduler's clip_sample off (right for latents); in
    # pixel space the predicted x0 must be clipped to [-1, 1], or sampling blows up near t = T.
    config = path / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "clip_sample": True}))
    return path


def build(root: Path, seed: int = 0, recipe: Recipe | None = None, device="cpu"):
    """Training data and a trained pipeline under `root`; returns (data file, model dir)."""
    data = write_data(root / "data", seed)
    init = root / "init"
    if not (init / "model_index.json").exists():
        init_pipeline(init, seed)
    model = train_pipeline(init, data, root / "model", recipe or RECIPE, device)
    return data, model
