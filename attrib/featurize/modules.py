"""Which modules' gradients become features, and how each one's gradient is shaped.

A module's full path (as `model.named_modules()` spells it, less PEFT's `base_model.model.`
wrapper prefix) is its group name everywhere in attrib: store columns, weights artifacts,
plots. Supported: `nn.Linear`, Hugging Face `Conv1D` (GPT-2), `nn.Conv2d` (grouped too), and
the Linear/Conv2d layers inside PEFT LoRA adapters (`...lora_A.<adapter>`, `...lora_B...`).
Embeddings and norms are never selected; they are not linear maps of their inputs.
"""

from __future__ import annotations

import fnmatch

from torch import nn
from transformers.pytorch_utils import Conv1D

from attrib.errors import AttribError
from attrib.store.module_spec import ModuleSpec


def describe(name: str, module: nn.Module) -> ModuleSpec | None:
    """The spec of a supported module, or None when its type is not a linear map we handle."""
    if isinstance(module, nn.Linear):
        bias = module.bias is not None
        return ModuleSpec(name, "linear", module.out_features, module.in_features + bias, bias)
    if isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape
        bias = module.bias is not None
        return ModuleSpec(name, "conv1d", d_out, d_in + bias, bias)
    if isinstance(module, nn.Conv2d):
        bias = module.bias is not None
        per_group_in = module.in_channels // module.groups
        kh, kw = module.kernel_size
        return ModuleSpec(
            name, "conv2d", module.out_channels, per_group_in * kh * kw + bias, bias, module.groups
        )
    return None


PEFT_PREFIX = "base_model.model."


def group_name(path: str) -> str:
    """A module's name in attrib: its path, without PEFT's wrapper prefix, so adapter layers
    read like the network (`down_blocks.0.attentions.0...attn1.to_q.lora_A.default`)."""
    return path.removeprefix(PEFT_PREFIX)


def _is_lora(name: str) -> bool:
    parts = name.split(".")
    return len(parts) >= 2 and parts[-2] in ("lora_A", "lora_B")


def select_modules(
    model: nn.Module,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    adapter: bool = False,
) -> list[tuple[ModuleSpec, nn.Module]]:
    """Supported modules in registration (network) order, filtered by globs.

    Default: every supported module, or only the LoRA layers when an adapter is loaded.
    `include` globs replace that default; `exclude` globs remove from the result.
    """
    supported = []
    for path, module in model.named_modules():
        spec = describe(group_name(path), module)
        if spec is not None:
            supported.append((spec, module))
    if include:
        chosen = [
            (s, m) for s, m in supported if any(fnmatch.fnmatchcase(s.name, g) for g in include)
        ]
        if not chosen:
            sample = ", ".join(s.name for s, _ in supported[:6])
            raise AttribError(
                f"--modules {' '.join(include)} matched no Linear/Conv1D/Conv2d module "
                f"(embeddings and norms are never selected); names look like: {sample}"
            )
    elif adapter:
        chosen = [(s, m) for s, m in supported if _is_lora(s.name)]
        if not chosen:
            raise AttribError(
                "the adapter has no LoRA Linear/Conv2d layers to take gradients from; "
                "pass --modules GLOB to choose modules"
            )
    else:
        chosen = supported
    if exclude:
        chosen = [
            (s, m) for s, m in chosen if not any(fnmatch.fnmatchcase(s.name, g) for g in exclude)
        ]
    if not chosen:
        raise AttribError("no modules left after --exclude; loosen the globs")
    return chosen
