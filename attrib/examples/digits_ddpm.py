"""The handwritten digits as a tiny unconditional DDPM: the diffusion quality task.

Same images and roles (`digits.SIZES`) as `digits` (scikit-learn's 8x8 digits), generated
at their own 8x8 size by a small UNet2DModel (two resolutions, attention at the lower) with
a cosine noise schedule of 100 steps, trained from scratch. Small enough to retrain on a CPU
many times for an LDS ground truth, large enough that its loss on a held-out digit depends
on which training digits it saw.
"""

from __future__ import annotations

from pathlib import Path

import torch

from attrib.examples import digits
from attrib.examples.common import train_pipeline
from attrib.training.recipe import Recipe

TIMESTEPS = 100  # the scheduler's T
RECIPE = Recipe(
    init="scratch", epochs=40, lr=2e-3, batch_size=64, weight_decay=0.0, schedule="cosine", seed=0
)


def init_model(path: Path, seed: int = 0) -> Path:
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=8,
    )
    scheduler = DDPMScheduler(num_train_timesteps=TIMESTEPS, beta_schedule="squaredcos_cap_v2")
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(path)
    return path


def build(root: Path, seed: int = 0, recipe: Recipe | None = None, device="cpu"):
    """Data files (the digits' roles) and a trained pipeline under `root`."""
    paths = digits.write_data(root / "data", seed)
    init = init_model(root / "init", seed)
    model = train_pipeline(init, paths["train"], root / "model", recipe or RECIPE, device)
    return paths, model
