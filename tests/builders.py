"""Tiny checkpoints and datasets built from configs and saved locally, loaded by path through
the same code a hub id takes. Nothing here touches the network."""

from __future__ import annotations

import io
import random
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

WORDS = (
    "the a cat dog bird sat ran flew on under over mat tree house red blue green small big "
    "quick lazy happy sad old new river hill garden window"
).split()


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(3, 14)
        out.append(" ".join(rng.choice(WORDS) for _ in range(length)))
    return out


def tiny_tokenizer(texts: list[str]):
    from attrib.examples.pydoc_text import tokenizer

    return tokenizer(texts, vocab_size=320)


def save_tiny_gpt2(path: Path, texts: list[str], seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_tokenizer(texts)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _image_processor(size: int):
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": size, "width": size}, do_rescale=True)


def save_tiny_resnet(path: Path, num_labels: int = 3, seed: int = 0) -> Path:
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        num_labels=num_labels,
    )
    torch.manual_seed(seed)
    model = ResNetForImageClassification(config)
    # Non-trivial BatchNorm statistics, so eval-mode normalization is exercised.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    model.save_pretrained(path)
    _image_processor(16).save_pretrained(path)
    return path


def save_tiny_vit(path: Path, num_labels: int = 3, seed: int = 0) -> Path:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=num_labels,
    )
    torch.manual_seed(seed)
    ViTForImageClassification(config).save_pretrained(path)
    _image_processor(16).save_pretrained(path)
    return path


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def save_text_data(path: Path, texts: list[str]) -> Path:
    datasets.Dataset.from_dict({"text": texts}).to_parquet(str(path))
    return path


def save_image_data(path: Path, n: int, num_labels: int = 3, seed: int = 0, size: int = 20):
    rng = np.random.default_rng(seed)
    images = [
        {"bytes": png_bytes((rng.random((size, size, 3)) * 255).astype(np.uint8)), "path": None}
        for _ in range(n)
    ]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=[f"c{i}" for i in range(num_labels)]),
        }
    )
    labels = [int(x) for x in rng.integers(0, num_labels, n)]
    data = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    data.to_parquet(str(path))
    return path


def save_lora_adapter(model_dir: Path, path: Path, target_modules: list[str], seed: int = 0):
    """A LoRA adapter with random A and B (PEFT's default B = 0 would zero A's gradients)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageClassification

    config = AutoConfig.from_pretrained(model_dir)
    causal = any(a.endswith("LMHeadModel") for a in config.architectures)
    loader = AutoModelForCausalLM if causal else AutoModelForImageClassification
    model = loader.from_pretrained(model_dir)
    torch.manual_seed(seed)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=target_modules, init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(path)
    return path


def save_tiny_ddpm(path: Path, seed: int = 0, timesteps: int = 100) -> Path:
    """An unconditional DDPM pipeline folder (UNet2DModel + DDPMScheduler), 8x8 RGB."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=timesteps)).save_pretrained(
        path
    )
    return path


def save_plain_images(path: Path, n: int, seed: int = 0, size: int = 8, captions=None):
    """Images (and optional captions) without labels, as parquet."""
    rng = np.random.default_rng(seed)
    images = [
        {"bytes": png_bytes((rng.random((size, size, 3)) * 255).astype(np.uint8)), "path": None}
        for _ in range(n)
    ]
    columns = {"image": images}
    features = {"image": datasets.Image()}
    if captions is not None:
        columns["caption"] = [captions[i % len(captions)] for i in range(n)]
        features["caption"] = datasets.Value("string")
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).to_parquet(str(path))
    return path


CAPTIONS = [
    "a photo of a cat",
    "a watercolor of a dog",
    "an oil painting of a bird",
    "a sketch of a house on a hill",
    "a photo of a red car",
]


def clip_tokenizer(texts: list[str], max_length: int = 16):
    """A CLIP tokenizer trained on the fly (byte-level BPE with CLIP's specials)."""
    from attrib.examples.shapes_sd import tokenizer

    return tokenizer(texts, max_length, vocab_size=120)


def save_tiny_sd(path: Path, seed: int = 0, timesteps: int = 100) -> Path:
    """A text-to-image Stable Diffusion folder: tiny UNet2DConditionModel, VAE (16 px images,
    8 px latents), CLIP text encoder and its tokenizer, DDPM scheduler."""
    from diffusers import (
        AutoencoderKL,
        DDPMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(CAPTIONS)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            projection_dim=16,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
        sample_size=16,
    )
    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDPMScheduler(num_train_timesteps=timesteps),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(path)
    return path


def save_unet_lora(pipeline: Path, path: Path, seed: int = 0) -> Path:
    """A PEFT LoRA adapter on the attention projections of a pipeline's UNet (random A, B)."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model

    unet = UNet2DConditionModel.from_pretrained(pipeline, subfolder="unet")
    torch.manual_seed(seed)
    config = LoraConfig(
        r=2,
        lora_alpha=4,
        init_lora_weights=False,
        target_modules=["to_q", "to_k", "to_v", "to_out.0"],
    )
    get_peft_model(unet, config).save_pretrained(path)
    return path
