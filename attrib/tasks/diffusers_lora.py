"""LoRA adapters in diffusers' own format (`pytorch_lora_weights.safetensors`, what
`save_lora_weights` and most published Stable Diffusion LoRAs are), beside PEFT folders.

diffusers reads the file (its own keys, kohya's and the older attention-processor keys are
converted by `lora_state_dict`) and injects PEFT LoRA layers into the UNet under the adapter
name `default`, the name a PEFT folder gets: gradients, groups and retraining see the same
`...to_q.lora_A.default` layers whichever format the adapter came in. LoRA layers for the
text encoder in the same file are loaded into it (it stays frozen), so captions are encoded
as the adapted pipeline encodes them.
"""

from __future__ import annotations

from pathlib import Path

from attrib import hub
from attrib.errors import AttribError
from attrib.tasks.base import adapter_source, attach_adapter
from attrib.tasks.options import ModelRef

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
ADAPTER_NAME = "default"


def diffusers_lora_file(folder_or_file: str) -> Path | None:
    """The diffusers-format LoRA file at a local path, or None (a PEFT folder, or no path)."""
    path = Path(folder_or_file).expanduser()
    if path.is_file():
        return path if path.suffix == ".safetensors" else None
    if (path / "adapter_config.json").exists():
        return None
    if (path / WEIGHT_NAME).exists():
        return path / WEIGHT_NAME
    found = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    return found[0] if len(found) == 1 else None


def attach_unet_adapter(unet, text_encoder, ref: ModelRef):
    """The UNet with its adapter (PEFT folder or diffusers LoRA file) and the adapter's
    record (None without one)."""
    if not ref.adapter:
        return unet, None
    source, commit = adapter_source(ref)
    if diffusers_lora_file(source) is None:
        return attach_adapter(unet, ref)
    return unet, _inject(unet, text_encoder, ref, source, commit)


def _inject(unet, text_encoder, ref: ModelRef, source: str, commit: str | None) -> dict:
    """Inject the LoRA file's layers into `unet` (and `text_encoder`); returns its record."""
    from diffusers import StableDiffusionPipeline

    file = diffusers_lora_file(source)
    try:
        state, alphas, metadata = StableDiffusionPipeline.lora_state_dict(
            str(file), return_lora_metadata=True
        )
        # The file's adapter config (rank, alpha, targets) when it has one; else diffusers
        # infers it from the weights and the network alphas of kohya-style files.
        scaling = {"metadata": metadata} if metadata else {"network_alphas": alphas}
        unet_keys = [k for k in state if k.startswith("unet.")]
        if not unet_keys:
            raise AttribError(
                f"--adapter {ref.adapter}: {file.name} has no UNet LoRA layers (keys "
                "starting with 'unet.'); attrib takes gradients over the UNet's adapter"
            )
        unet.load_lora_adapter(state, prefix="unet", adapter_name=ADAPTER_NAME, **scaling)
        if text_encoder is not None and any(k.startswith("text_encoder.") for k in state):
            StableDiffusionPipeline.load_lora_into_text_encoder(
                state,
                alphas if not metadata else None,
                text_encoder,
                prefix="text_encoder",
                adapter_name=ADAPTER_NAME,
                metadata=metadata,
            )
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise hub.load_error("adapter", ref.adapter, ref.adapter_revision, exc) from None
    return {
        "source": hub.absolute_if_local(ref.adapter),
        "revision": ref.adapter_revision,
        "fingerprint": hub.fingerprint(str(file) if commit is None else source, commit),
        "format": "diffusers",
    }
