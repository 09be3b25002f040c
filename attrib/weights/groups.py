"""Mapping a store's modules (network order) to parameter groups.

- `module`: one group per module (the default);
- `block`: by module-path prefix, the first `depth` components
  (`transformer.h.3.mlp.c_fc` at depth 3 -> `transformer.h.3`);
- `consecutive:N`: N groups of consecutive modules in network order (the paper's 128-group
  UNet study), named `group-000` ...;
- `unet`: a UNet's block (down_blocks.i, mid_block, up_blocks.i, or the stem/time embedding)
  times its function (resnets; attn1 / attn2 = self- / cross-attention with to_q, to_k, to_v,
  to_out; ff; proj), e.g. `up_blocks.1/attn2.to_out`: the paper's Figure 1b groups;
- a JSON file: {"glob": "group name", ...}, the first matching glob wins; every module must
  match one.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from attrib.errors import AttribError

# The kinds of grouping `--groups` takes: the registry its help and errors are made from.
GROUP_KINDS = {
    "module": "one group per module (default)",
    "block": "by module-path prefix (--depth components)",
    "unet": "a UNet's block x function, e.g. up_blocks.1/attn2.to_out",
    "consecutive:N": "N groups of consecutive modules",
    "FILE.json": '{"glob": "group"} rules, first match wins',
}


def groups_help() -> str:
    return "Parameter groups: " + "; ".join(f"{k}: {v}" for k, v in GROUP_KINDS.items()) + "."


def group_modules(modules: list[str], spec: str = "module", depth: int = 3):
    """(group names in network order, module -> group). An ensemble store's modules group
    as their member's do: `member-J/` prefixes are not part of any group."""
    from attrib.store.ensemble import member_module

    plain = [member_module(m) for m in modules]
    order, mapping = _group_plain(list(dict.fromkeys(plain)), spec, depth)
    return order, {m: mapping[p] for m, p in zip(modules, plain)}


def _group_plain(modules: list[str], spec: str, depth: int):
    if spec == "module":
        mapping = {m: m for m in modules}
    elif spec == "block":
        if depth < 1:
            raise AttribError("--depth must be at least 1")
        mapping = {m: ".".join(m.split(".")[:depth]) for m in modules}
    elif spec == "unet":
        mapping = {m: unet_group(m) for m in modules}
    elif spec.startswith("consecutive:"):
        mapping = _consecutive(modules, spec)
    elif Path(spec).is_file():
        mapping = _from_file(modules, Path(spec))
    else:
        raise AttribError(f"--groups {spec!r}: use one of {', '.join(GROUP_KINDS)}")
    order = list(dict.fromkeys(mapping[m] for m in modules))
    return order, mapping


def unet_group(module: str) -> str:
    """`<block>/<function>` for a UNet module path (LoRA suffixes ignored)."""
    parts = [p for p in module.split(".") if p not in ("lora_A", "lora_B", "default")]
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) > 1:
        block, rest = ".".join(parts[:2]), parts[2:]
    else:
        block, rest = parts[0], parts[1:]
    for i, part in enumerate(rest):
        if part in ("attn1", "attn2") and i + 1 < len(rest):
            return f"{block}/{part}.{rest[i + 1]}"
        if part in ("to_q", "to_k", "to_v", "to_out"):
            return f"{block}/attn.{part}"
        if part in ("resnets", "ff", "downsamplers", "upsamplers"):
            return f"{block}/{part}"
        if part in ("proj_in", "proj_out"):
            return f"{block}/proj"
    return block


def _consecutive(modules: list[str], spec: str) -> dict[str, str]:
    try:
        count = int(spec.split(":", 1)[1])
    except ValueError:
        raise AttribError(f"--groups {spec!r}: N in consecutive:N must be an integer") from None
    if not 1 <= count <= len(modules):
        raise AttribError(f"--groups {spec}: N must be between 1 and {len(modules)} (modules)")
    width = len(str(count - 1))
    return {m: f"group-{(i * count) // len(modules):0{width}d}" for i, m in enumerate(modules)}


def _from_file(modules: list[str], path: Path) -> dict[str, str]:
    from attrib.jsonio import load_json

    rules = load_json(path, f"--groups {path} (glob -> group name)")
    if not all(isinstance(v, str) for v in rules.values()):
        raise AttribError(f"--groups {path}: expected an object of glob -> group name")
    mapping, unmatched = {}, []
    for module in modules:
        group = next((g for glob, g in rules.items() if fnmatch.fnmatchcase(module, glob)), None)
        if group is None:
            unmatched.append(module)
        else:
            mapping[module] = group
    if unmatched:
        shown = ", ".join(unmatched[:4])
        raise AttribError(f"--groups {path}: no glob matches {len(unmatched)} module(s): {shown}")
    return mapping
