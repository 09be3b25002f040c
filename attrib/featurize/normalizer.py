"""TrackStar's normalizer: each per-example gradient divided elementwise by the square root
of the optimizer's second moment v (Adam's `exp_avg_sq`) at the checkpoint, before projection.

Sources (`featurize --optimizer-state`):
- a Trainer checkpoint folder (`checkpoint-N/optimizer.pt`) or that file, read with
  `torch.load(weights_only=True)` (tensors and plain containers only, never code): Adam's
  `exp_avg_sq`, or Adafactor's factored row and column moments;
- a run `attrib train` recorded (its last snapshot) or one snapshot file (safetensors).

A Trainer's optimizer state names its tensors by position, not by parameter: the positions
follow the Trainer's parameter groups (weight-decayed parameters first, then the rest, each
in `named_parameters` order, trainable ones only). The order is rebuilt from the model and
every tensor's shape checked, so an optimizer state from another model is refused.

Per module, v is a (d_out x d_in) matrix with the bias as its last column. It is stored the
way Adafactor factors it, V ~ r c^T / mean(V) (r, c: its row and column means), so that the
scaling is diag(row) G diag(col) and folds into both sides of the factored projection. Every
projection kind (factored, dense, none) uses the same factored scaling, so they agree.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from attrib.errors import AttribError
from attrib.store.module_spec import ModuleSpec

OPTIMIZER_FILE = "optimizer.pt"
FLOOR = 1e-12  # a row or column mean below FLOOR x the module's mean counts as FLOOR x it


def module_scales(
    source: str, model: nn.Module, selected: list[tuple[ModuleSpec, nn.Module]]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per selected module, (row scale: d_out, column scale: d_in) float32 on the CPU."""
    moments = second_moments(Path(source), model)
    names = {id(p): n for n, p in model.named_parameters()}
    scales = {}
    for spec, module in selected:
        # numpy's float64 reductions do not depend on the thread count, so the scales, and
        # the digest a store records, are the same on every machine.
        v = _module_matrix(spec, module, moments, names, source).numpy()
        mean = max(float(v.mean()), np.finfo(np.float64).tiny)
        rows = np.maximum(v.mean(1), FLOOR * mean)
        cols = np.maximum(v.mean(0), FLOOR * mean)
        scales[spec.name] = (
            torch.from_numpy(np.sqrt(mean / rows).astype(np.float32)),
            torch.from_numpy((1.0 / np.sqrt(cols)).astype(np.float32)),
        )
    return scales


def digest(scales: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> str:
    """What a store records of its normalizer: queries featurized later must match it."""
    h = hashlib.sha256()
    for name, (rows, cols) in scales.items():
        h.update(name.encode())
        h.update(rows.numpy().tobytes())
        h.update(cols.numpy().tobytes())
    return h.hexdigest()


def _module_matrix(spec, module, moments, names, source) -> torch.Tensor:
    def moment(param: torch.Tensor) -> torch.Tensor:
        name = names.get(id(param))
        if name not in moments:
            raise AttribError(
                f"the optimizer state {source} has no second moment for {name}: the run did not "
                "train it; leave its module out with --exclude (or --modules)"
            )
        return moments[name].double()

    v = moment(module.weight)
    if spec.kind == "conv1d":  # Hugging Face Conv1D keeps its weight as (in, out)
        v = v.T
    v = v.reshape(spec.d_out, -1)
    if spec.bias:
        v = torch.cat([v, moment(module.bias).reshape(spec.d_out, 1)], dim=1)
    return v


def second_moments(source: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameter name -> its second moment, from any supported source."""
    if source.is_dir() and (source / OPTIMIZER_FILE).is_file():
        return _trainer_moments(source / OPTIMIZER_FILE, model)
    if source.is_dir() and (source / "run.json").is_file():
        snapshots = sorted((source / "snapshots").glob("step-*.safetensors"))
        if not snapshots:
            raise AttribError(f"{source} holds no snapshot: is its `attrib train` complete?")
        return _snapshot_moments(snapshots[-1])
    if source.is_file() and source.suffix == ".safetensors":
        return _snapshot_moments(source)
    if source.is_file():
        return _trainer_moments(source, model)
    raise AttribError(
        f"--optimizer-state {source}: not a Trainer checkpoint (a folder with {OPTIMIZER_FILE}), "
        "an `attrib train` run or a snapshot file"
    )


def _snapshot_moments(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise AttribError(f"--optimizer-state {path} is not a readable snapshot ({exc})") from None
    moments = {k.removeprefix("v."): v for k, v in tensors.items() if k.startswith("v.")}
    if not moments:
        raise AttribError(
            f"--optimizer-state {path} holds no second moments: the run used SGD; TrackStar "
            "needs an Adam-type optimizer's"
        )
    return moments


def _trainer_moments(path: Path, model: nn.Module) -> dict[str, torch.Tensor]:
    import pickle

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AttribError(
            f"--optimizer-state {path} is not an optimizer state torch can read safely ({first})"
        ) from None
    if not isinstance(state, dict) or not {"state", "param_groups"} <= state.keys():
        raise AttribError(f"--optimizer-state {path} is not an optimizer's state_dict")
    positions = [i for group in state["param_groups"] for i in group["params"]]
    moments = {i: _second_moment(state["state"].get(i, {})) for i in positions}
    if not any(v is not None for v in moments.values()):
        raise AttribError(
            f"--optimizer-state {path} holds no exp_avg_sq: TrackStar needs an Adam-type "
            "optimizer's second moments (AdamW, Adam, Adafactor)"
        )
    params = dict(model.named_parameters())
    for order in _trainer_orders(model):
        if len(order) == len(positions) and all(
            moments[i] is not None and moments[i].shape == params[name].shape
            for name, i in zip(order, positions)
        ):
            return {name: moments[i] for name, i in zip(order, positions)}
    raise AttribError(
        f"--optimizer-state {path} holds {len(positions)} tensors that do not match this "
        "model's parameters (their number or shapes): pass the optimizer state saved with this "
        "checkpoint"
    )


def _second_moment(entry: dict) -> torch.Tensor | None:
    """One parameter's second moment: Adam's exp_avg_sq, or Adafactor's factored one
    (row and column sums of squares) expanded as Adafactor applies it, (row / mean row) c^T."""
    if "exp_avg_sq" in entry:
        return entry["exp_avg_sq"]
    if "exp_avg_sq_row" in entry and "exp_avg_sq_col" in entry:
        row, col = entry["exp_avg_sq_row"], entry["exp_avg_sq_col"]
        return (row / row.mean(-1, keepdim=True)).unsqueeze(-1) * col.unsqueeze(-2)
    return None


def _trainer_orders(model: nn.Module) -> list[list[str]]:
    """The parameter orders a Trainer's optimizer may have used: weight-decayed parameters
    first, then the others (its grouping), or plain order; every parameter, or a PEFT
    adapter's alone (the model loaded here is frozen, so trainability is inferred)."""
    from transformers import Trainer

    names = [n for n, _ in model.named_parameters()]
    adapter = [n for n in names if "lora_" in n]
    try:  # the Trainer's own rule (it does not read `self`)
        decayed = set(Trainer.get_decay_parameter_names(None, model))
    except Exception:  # another transformers' signature: plain orders only
        decayed = None
    orders = []
    for trainable in (names, adapter) if adapter else (names,):
        if decayed is not None:
            orders.append(
                [n for n in trainable if n in decayed] + [n for n in trainable if n not in decayed]
            )
        orders.append(list(trainable))
    return orders
