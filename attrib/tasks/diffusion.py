"""Diffusion models: an unconditional `UNet2DModel` with its DDPM scheduler, or text-to-image
Stable Diffusion (`UNet2DConditionModel`, VAE, CLIP text encoder), a pipeline folder or hub id.

Per example, the output function is averaged over K fixed timesteps t in range(0, T, T // K).
The noise at timestep t comes from a generator seeded by (noise seed, t) and is the same for
every example, train or query, whatever its batch: features do not depend on batching.
Output functions (METHODS.md section 3, the main paper's Appendix B.3):
- `loss`   L_simple = mean ||eps - eps_theta(x_t, t)||^2      (tracin, trak, trak-block, ...)
- `square` L_square = mean ||eps_theta(x_t, t)||^2            (dtrak)
- `das`    mean of eps_theta(x_t, t); each timestep's gradient is L2-normalized per example
           before averaging; the residual r = mean_t ||eps_theta - eps||^2 is stored (das)
- `journey` for generated queries that carry their sampling trajectory: at each recorded
           inference step, the predicted clean image x0_hat re-noised at that step's t, L_simple
           of it, averaged over steps (jtrak); training stores use `loss`.
Images go through the VAE (latent mode times its scaling factor) when there is one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import numpy as np
import torch

from attrib import hub
from attrib.data import choose_column, decode_image
from attrib.errors import AttribError
from attrib.tasks.base import (
    ModelRef,
    Task,
    TaskOptions,
    TaskOutput,
    require_column,
)
from attrib.tasks.diffusers_lora import attach_unet_adapter

TRAJECTORY_COLUMN = "trajectory"  # list of x0_hat images along the sampling steps
STEPS_COLUMN = "trajectory_timesteps"


def pipeline_index(ref: ModelRef) -> dict | None:
    """A diffusers pipeline's model_index.json (local or on the hub), or None."""
    path = Path(ref.source).expanduser()
    if path.is_dir():
        index = path / "model_index.json"
        return json.loads(index.read_text()) if index.exists() else None
    if hub.looks_like_path(ref.source):
        return None
    # From the cache first: a transformers checkpoint there needs no question to the hub.
    cached = hub.cached_file(ref.source, "model_index.json", ref.revision)
    if cached is not None:
        return json.loads(Path(cached).read_text())
    if hub.cached_file(ref.source, "config.json", ref.revision) is not None:
        return None
    try:
        return _model_index(ref)
    except Exception:  # not a pipeline on the hub, or no network: other tasks will say
        return None


def _seed(noise_seed: int, timestep: int) -> int:
    digest = hashlib.sha256(f"noise:{noise_seed}:{timestep}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class DiffusionTask(Task):
    name = "diffusion"
    query_role = "image"
    output_functions = ("loss", "square", "das", "journey")

    @classmethod
    def matches(cls, checkpoint: dict) -> bool:
        return checkpoint.get("model_index") is not None

    scalar_columns = ("loss", "out_to_loss", "residual")
    cache_batches = True  # latents (and caption embeddings) are computed once for retraining
    normalized_outputs = ("das",)

    def __init__(self, model, processor, options, info, components: dict):
        super().__init__(model, processor, options, info)
        self.scheduler = components["scheduler"]
        self.vae = components.get("vae")
        self.text_encoder = components.get("text_encoder")
        self.tokenizer = components.get("tokenizer")
        self.conditional = self.text_encoder is not None

    @classmethod
    def load(cls, ref: ModelRef, dtype: torch.dtype, options: TaskOptions) -> DiffusionTask:
        from diffusers import DDPMScheduler

        hub.check_source(ref.source, "--model")
        try:
            index = _model_index(ref)
            components = {
                "scheduler": DDPMScheduler.from_pretrained(
                    ref.source, subfolder="scheduler", revision=ref.revision
                )
            }
            if "text_encoder" in index:
                from diffusers import AutoencoderKL, UNet2DConditionModel
                from transformers import CLIPTextModel, CLIPTokenizer

                unet = UNet2DConditionModel.from_pretrained(
                    ref.source, subfolder="unet", revision=ref.revision, torch_dtype=dtype
                )
                if (index.get("vae") or [None])[0] is not None:  # else pixel-space
                    components["vae"] = AutoencoderKL.from_pretrained(
                        ref.source, subfolder="vae", revision=ref.revision, torch_dtype=dtype
                    )
                components["text_encoder"] = CLIPTextModel.from_pretrained(
                    ref.source, subfolder="text_encoder", revision=ref.revision, dtype=dtype
                )
                components["tokenizer"] = CLIPTokenizer.from_pretrained(
                    ref.source, subfolder="tokenizer", revision=ref.revision
                )
            else:
                from diffusers import UNet2DModel

                unet = UNet2DModel.from_pretrained(
                    ref.source, subfolder="unet", revision=ref.revision, torch_dtype=dtype
                )
        except (OSError, ValueError, KeyError) as exc:
            raise hub.load_error("diffusion pipeline", ref.source, ref.revision, exc) from None
        for part in ("vae", "text_encoder"):
            if part in components:
                components[part].requires_grad_(False).eval()
        unet, adapter = attach_unet_adapter(unet, components.get("text_encoder"), ref)
        commit = hub.resolved_commit(ref.source, ref.revision, "model_index.json")
        info = {
            "source": hub.absolute_if_local(ref.source),
            "revision": ref.revision,
            "commit": commit,
            "fingerprint": hub.fingerprint(ref.source, commit),
            "architecture": index.get("_class_name", "DiffusionPipeline"),
            "task": cls.name,
            "dtype": str(dtype).removeprefix("torch."),
            "adapter": adapter,
        }
        return cls(unet, None, options, info, components)

    def to(self, device) -> DiffusionTask:
        for part in (self.model, self.vae, self.text_encoder):
            if part is not None:
                part.to(device)
        return self

    # -- columns ---------------------------------------------------------------------------
    def bind_columns(self, dataset) -> dict[str, str | None]:
        features = dataset.features
        images = [n for n, f in features.items() if isinstance(f, datasets.Image)]
        image = choose_column(dataset, "image", self.options.image_column, images)
        columns = {"image": require_column(image, "image", dataset)}
        if self.conditional:
            texts = [
                n
                for n, f in features.items()
                if isinstance(f, datasets.Value) and f.dtype in ("string", "large_string")
            ]
            preferred = [n for n in ("caption", "text", "prompt") if n in texts]
            caption = choose_column(
                dataset, "caption", self.options.caption_column, preferred[:1] or texts
            )
            columns["caption"] = require_column(caption, "caption", dataset)
        if TRAJECTORY_COLUMN in features and STEPS_COLUMN in features:
            columns["trajectory"] = TRAJECTORY_COLUMN
        return columns

    def query_columns(self) -> dict[str, str | None]:
        return {"image": "image", **({"caption": "caption"} if self.conditional else {})}

    def available_outputs(self, columns: dict) -> tuple[str, ...]:
        if "trajectory" in columns:
            return self.output_functions
        return tuple(f for f in self.output_functions if f != "journey")

    def settings(self, columns: dict) -> dict:
        return {
            **super().settings(columns),
            "timesteps": self.timesteps().tolist(),
            "noise_seed": self.options.noise_seed,
            "resolution": self.resolution(),
        }

    # -- batches ---------------------------------------------------------------------------
    def resolution(self) -> int:
        size = self.model.config.sample_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        return int(size) * (self.vae_factor() if self.vae is not None else 1)

    def vae_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def timesteps(self) -> torch.Tensor:
        total = self.scheduler.config.num_train_timesteps
        count = self.options.timesteps
        if not 1 <= count <= total:
            raise AttribError(f"--timesteps must be between 1 and {total}")
        return torch.arange(0, total, total // count)[:count]

    def _pixels(self, values, positions, column: str) -> torch.Tensor:
        size, channels = self.resolution(), self._image_channels()
        mode = "L" if channels == 1 else "RGB"
        arrays = []
        for i, value in enumerate(values):
            image = decode_image(value, positions[i], column).convert(mode)
            image = image.resize((size, size), resample=3)  # bicubic
            array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
            arrays.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
        return torch.from_numpy(np.stack(arrays))

    def _image_channels(self) -> int:
        return (
            self.vae.config.in_channels if self.vae is not None else self.model.config.in_channels
        )

    @torch.no_grad()
    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return pixels
        latents = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist.mode()
        return latents * self.vae.config.scaling_factor

    @torch.no_grad()
    def _text(self, captions: list[str], device) -> torch.Tensor:
        tokens = self.tokenizer(
            captions,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(device))[0]

    def prepare(self, rows: dict[str, list], positions, device, columns: dict) -> dict:
        column = columns["image"]
        batch = {"x0": self._encode(self._pixels(rows[column], positions, column).to(device))}
        if self.conditional:
            captions = [str(c) for c in rows[columns["caption"]]]
            batch["text"] = self._text(captions, device)
        if "trajectory" in columns:
            steps = [json.loads(s) if isinstance(s, str) else list(s) for s in rows[STEPS_COLUMN]]
            frames = [
                [decode_image(v, positions[i], TRAJECTORY_COLUMN) for v in row]
                for i, row in enumerate(rows[TRAJECTORY_COLUMN])
            ]
            batch["trajectory"] = [
                self._encode(self._pixels_from_images(f).to(device)) for f in zip(*frames)
            ]
            batch["trajectory_timesteps"] = torch.tensor(steps, device=device)  # B x S
        return batch

    def _pixels_from_images(self, images) -> torch.Tensor:
        return self._pixels(list(images), range(len(images)), TRAJECTORY_COLUMN)

    # -- output functions --------------------------------------------------------------------
    def noise(self, timestep: int, like: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(_seed(self.options.noise_seed, int(timestep)))
        eps = torch.randn(1, *like.shape[1:], generator=generator)
        return eps.to(like.device, like.dtype).expand_as(like)

    def _predict(self, noisy, timestep, batch):
        noisy = noisy.to(self.model.dtype)  # pixels arrive in float32; a half-precision UNet
        t = torch.full((len(noisy),), int(timestep), device=noisy.device, dtype=torch.long)
        if self.conditional:
            return self.model(noisy, t, encoder_hidden_states=batch["text"]).sample
        return self.model(noisy, t).sample

    def passes(self, batch: dict, output_function: str):
        """One TaskOutput per timestep (per trajectory step for `journey`)."""
        if output_function == "journey":
            steps = batch["trajectory_timesteps"]
            if not (steps == steps[:1]).all():
                raise AttribError(
                    "journey queries in one batch have different sampling timesteps; generate "
                    "them with the same --steps (or featurize them with --batch-size 1)"
                )
            for step, x0 in enumerate(batch["trajectory"]):
                yield self._pass(x0, int(steps[0, step]), batch, "loss")
            return
        for t in self.timesteps():
            yield self._pass(batch["x0"], int(t), batch, output_function)

    def _pass(self, x0, t, batch, output_function) -> TaskOutput:
        eps = self.noise(t, x0)
        noisy = self.scheduler.add_noise(x0, eps, torch.tensor([t], device=x0.device))
        pred = self._predict(noisy, t, batch).float()
        residual = (pred - eps.float()).pow(2).flatten(1).mean(1)
        if output_function == "square":
            values = pred.pow(2).flatten(1).mean(1)
        elif output_function == "das":
            values = pred.flatten(1).mean(1)
        else:
            values = residual
        scalars = {
            "loss": residual.detach(),
            "residual": residual.detach(),
            "out_to_loss": torch.ones_like(residual),
        }
        return TaskOutput(values, scalars)

    def loss_passes(self, batch: dict):
        """One (prediction, squared error) per timestep, with the noise `outputs` uses."""
        x0 = batch["x0"]
        for t in self.timesteps():
            eps = self.noise(int(t), x0)
            noisy = self.scheduler.add_noise(x0, eps, torch.tensor([int(t)], device=x0.device))
            target = eps.float()
            yield (
                self._predict(noisy, int(t), batch),
                lambda z, target=target: (z.float() - target).pow(2).flatten(1).mean(1),
            )

    def representation_site(self):
        # The UNet's mid-block: its deepest, most semantic features, at each timestep.
        block = getattr(self.model, "mid_block", None)
        if block is None:
            raise AttribError("--method repsim reads a UNet's mid-block; this model has none")
        return block, "output", self.model.config.block_out_channels[-1]

    def pool_representation(self, hidden, batch):
        return hidden.flatten(2).mean(2)  # (B, C, h, w) -> (B, C): averaged over positions

    def outputs(self, batch: dict, output_function: str) -> TaskOutput:
        """The output function averaged over timesteps (training loss for retraining)."""
        parts = list(self.passes(batch, output_function))
        values = sum(p.values for p in parts) / len(parts)
        scalars = {k: sum(p.scalars[k] for p in parts) / len(parts) for k in parts[0].scalars}
        return TaskOutput(values, scalars)

    def training_losses(self, batch: dict) -> torch.Tensor:
        """DDPM's training objective: a random timestep and fresh noise per example (drawn
        from torch's generator, which the trainer seeds), each example's mean squared error."""
        x0 = batch["x0"]
        t = torch.randint(
            0, self.scheduler.config.num_train_timesteps, (len(x0),), device=x0.device
        )
        eps = torch.randn_like(x0)
        noisy = self.scheduler.add_noise(x0, eps, t)
        if self.conditional:
            pred = self.model(noisy, t, encoder_hidden_states=batch["text"]).sample
        else:
            pred = self.model(noisy, t).sample
        return (pred.float() - eps.float()).pow(2).flatten(1).mean(1)


def _model_index(ref: ModelRef) -> dict:
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.load_config(ref.source, revision=ref.revision)


TASK = DiffusionTask
