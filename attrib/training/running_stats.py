"""BatchNorm's running statistics as a differentiable part of a run's state.

A BatchNorm layer normalises a training batch by the batch's own statistics, but an
evaluated model by running averages of them: running_mean_t+1 = (1 - f) running_mean_t +
f batch_mean(x_t), the same for the (unbiased) variance. Those averages depend on every
step's parameters, so on the data weights w. PyTorch updates them inside the kernel, outside
autograd, and refuses gradients with respect to them; a metagradient that treated them as
constants would differentiate a different function from the one the run computes (on the
digits ResNet it disagreed with finite differences by 2x). Here the updates and the eval-mode
normalisation are written out once more, as autograd sees them; the kernel still computes
every value (training, replay and scores stay bitwise what they were), the formulas only
supply derivatives.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.modules.batchnorm import _BatchNorm

STATS = ("running_mean", "running_var")


def batch_norms(model: torch.nn.Module) -> dict[str, _BatchNorm]:
    """Layers that keep running statistics, by module name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm)
        and module.track_running_stats
        and module.running_mean is not None
    }


def stat_names(model: torch.nn.Module) -> list[str]:
    """Buffer names (as `named_buffers` spells them) of every running statistic."""
    return [f"{layer}.{stat}" for layer in batch_norms(model) for stat in STATS]


def _channel_shape(x: torch.Tensor) -> list[int]:
    return [1, -1] + [1] * (x.dim() - 2)


@contextlib.contextmanager
def updated_stats(model: torch.nn.Module, current: dict[str, torch.Tensor], out: dict):
    """While a training forward runs, put into `out` each running statistic after the step as
    a differentiable function of `current` (the statistics before it) and of the layer's
    input."""
    layers = batch_norms(model)
    handles = []
    for layer_name, module in layers.items():

        def hook(module, args, layer_name=layer_name):
            if not module.training:
                return
            x = args[0]
            dims = [d for d in range(x.dim()) if d != 1]
            count = x.numel() // x.shape[1]
            if module.momentum is None:  # cumulative average: 1 / batches seen, this one too
                factor = 1.0 / (float(module.num_batches_tracked) + 1.0)
            else:
                factor = module.momentum
            mean_key, var_key = (f"{layer_name}.{s}" for s in STATS)
            mean = out.get(mean_key, current[mean_key])
            var = out.get(var_key, current[var_key])
            batch_mean = x.mean(dims)
            batch_var = x.var(dims, unbiased=False) * (count / max(count - 1, 1))
            out[mean_key] = (1 - factor) * mean + factor * batch_mean.to(mean.dtype)
            out[var_key] = (1 - factor) * var + factor * batch_var.to(var.dtype)

        handles.append(module.register_forward_pre_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def differentiable_eval(model: torch.nn.Module, stats: dict[str, torch.Tensor]):
    """While an eval-mode forward runs, let each BatchNorm layer's output carry gradients to
    its running statistics `stats` (leaves keyed like `updated_stats`'s). The value stays the
    kernel's: output.detach() + (formula - formula.detach()) adds an exact zero."""
    handles = []
    for layer_name, module in batch_norms(model).items():

        def hook(module, args, output, layer_name=layer_name):
            if module.training:
                return None
            x = args[0]
            shape = _channel_shape(x)
            mean = stats[f"{layer_name}.running_mean"].view(shape)
            var = stats[f"{layer_name}.running_var"].view(shape)
            formula = (x - mean) / torch.sqrt(var + module.eps)
            if module.affine:
                formula = formula * module.weight.view(shape) + module.bias.view(shape)
            return output.detach() + (formula - formula.detach())

        handles.append(module.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
