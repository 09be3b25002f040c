"""Per-example gradient features captured with hooks, one module at a time.

A forward hook keeps each selected module's input (already projected on the factored path) and
registers a hook on its output tensor; during the backward pass that hook receives the output
gradients dy and turns (dy, input) into per-example features. The model's parameters stay
frozen: no parameter gradient is ever built on the factored path. Where a module's output does
not require grad (it is the first selected module of a frozen model), a zero scalar leaf is
added to it so the backward pass reaches it; the backward computes gradients for those leaves
only, so nothing else is materialized.

Tensor hooks registered before an in-place op (ReLU(inplace=True)) still receive the gradient
of the value the module produced, which is the one we need.

A module called several times in one forward (shared weights, several timesteps) gets the sum
of its per-call gradients, as its parameter gradient would.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attrib.featurize.projection import DenseProjector, ProjectionSpec, factored_matrices
from attrib.store.factors import Factors
from attrib.store.module_spec import ModuleSpec


class ModuleCapture:
    def __init__(
        self,
        spec: ModuleSpec,
        module: nn.Module,
        projection: ProjectionSpec,
        device: torch.device,
        dense_cache_bytes: int,
        stats: bool = False,
        scales: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        self.spec, self.module, self.projection = spec, module, projection
        # TrackStar's normalizer (normalizer.py): diag(rows) G diag(cols). Folded into the
        # factored projection's matrices; applied to dy and the inputs on the other paths.
        self.scales = None if scales is None else (scales[0].to(device), scales[1].to(device))
        self.factors: Factors | None = None
        if stats:
            k_out, k_in = _side_dims(projection, spec)
            self.factors = Factors.zeros(k_out, k_in, device)
        self.anchors: list[torch.Tensor] = []
        self._records: list = []
        self._feature: torch.Tensor | None = None
        self._dense: DenseProjector | None = None
        if projection.factored:
            p_out, p_in = factored_matrices(projection, spec.name, spec.d_out, spec.d_in)
            self.p_out, self.p_in = p_out.to(device), p_in.to(device)
            # A side kept exactly (an identity matrix) is not multiplied at all: the same
            # numbers without the matmul (ungrouped modules; a grouped conv's identity
            # spans the groups, so it goes through the grouped product; a normalized side is
            # a diagonal, multiplied like any projection).
            plain = getattr(module, "groups", 1) == 1 and self.scales is None
            self.out_identity = plain and p_out.shape[0] == p_out.shape[1]
            self.in_identity = plain and p_in.shape[0] == p_in.shape[1]
            if self.scales is not None:
                self.p_out = self.scales[0][:, None] * self.p_out
                self.p_in = self.scales[1][:, None] * self.p_in
            if spec.kind == "conv2d" and not self.in_identity:
                self._conv_weight = self._patch_projection_weight()
        elif projection.dense and spec.d_out * spec.d_in > projection.dim**2:
            self._dense = DenseProjector(
                projection, spec.name, spec.d_out * spec.d_in, dense_cache_bytes
            )

    # -- hooks ---------------------------------------------------------------------------
    def on_forward(self, module, args, kwargs, output):
        x = args[0] if args else next(iter(kwargs.values()))
        record = self._input_record(x.detach())
        # Every output gets an anchor, a zero leaf added to it, and the backward pass asks
        # for the anchors' gradients: it reaches every captured output even when the output
        # already requires grad through something else (a Trainer's enable_input_require_grads
        # hook, used with gradient checkpointing, makes every activation require grad).
        anchor = torch.zeros((), dtype=output.dtype, device=output.device, requires_grad=True)
        self.anchors.append(anchor)
        output = output + anchor
        slot = len(self._records)
        self._records.append(record)
        output.register_hook(lambda grad, slot=slot: self._on_grad(slot, grad))
        return output

    def _on_grad(self, slot: int, grad: torch.Tensor) -> None:
        record, self._records[slot] = self._records[slot], None
        feature = self._features(record, grad.detach())
        self._feature = feature if self._feature is None else self._feature.add_(feature)

    def take(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """This batch's (B x F) float32 features; zeros if the output never got a gradient."""
        feature = self._feature
        if feature is None:
            dim = self.projection.feature_dim(self.spec.d_out, self.spec.d_in, self.spec.name)
            feature = torch.zeros(batch_size, dim, device=device)
        self._feature, self._records, self.anchors = None, [], []
        return feature

    # -- inputs ----------------------------------------------------------------------------
    def _input_record(self, x: torch.Tensor):
        spec = self.spec
        factored = self.projection.factored
        if spec.kind == "conv2d":
            if factored and not self.in_identity:
                return self._project_patches(x.float())
            return self._unfold_patches(x.float())
        x = x.float().reshape(x.shape[0], -1, x.shape[-1])  # (B, L, d_in)
        if factored and not self.in_identity:
            projected = x @ self.p_in[: x.shape[-1]]
            return projected + self.p_in[-1] if spec.bias else projected
        x = _append_ones(x) if spec.bias else x
        return x if self.scales is None else x * self.scales[1]

    def _patch_projection_weight(self) -> torch.Tensor:
        # Projecting every unfolded patch with P_in is a convolution whose kernels are P_in's
        # columns; grouped convs reuse the same P_in for each group.
        conv = self.module
        kh, kw = conv.kernel_size
        per_group_in = conv.in_channels // conv.groups
        rows = per_group_in * kh * kw
        weight = self.p_in[:rows].T.reshape(self.p_in.shape[1], per_group_in, kh, kw)
        return weight.repeat(conv.groups, 1, 1, 1).contiguous()

    def _project_patches(self, x: torch.Tensor) -> torch.Tensor:
        conv, p = self.module, self.p_in.shape[1]
        projected = conv._conv_forward(x, self._conv_weight, None)  # (B, g*p, H', W')
        projected = projected.reshape(x.shape[0], conv.groups, p, -1)  # (B, g, p, L)
        if self.spec.bias:
            projected = projected + self.p_in[-1].view(1, 1, p, 1)
        return projected

    def _unfold_patches(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.module
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
        patches = F.unfold(x, conv.kernel_size, dilation=conv.dilation, stride=conv.stride)
        patches = patches.reshape(x.shape[0], conv.groups, -1, patches.shape[-1])  # (B,g,d,L)
        if self.spec.bias:
            ones = patches.new_ones(patches.shape[0], conv.groups, 1, patches.shape[-1])
            patches = torch.cat([patches, ones], dim=2)
        if self.scales is not None and not self.projection.factored:
            patches = patches * self.scales[1].view(1, 1, -1, 1)
        return patches

    # -- features --------------------------------------------------------------------------
    def _features(self, record: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
        batch = dy.shape[0]
        dy = dy.float()
        if self.scales is not None and not self.projection.factored:
            dy = _scale_outputs(dy, self.scales[0], self.spec)
        if self.spec.kind == "conv2d":
            groups = self.module.groups
            dy = dy.reshape(batch, groups, self.spec.d_out // groups, -1)  # (B, g, o, L)
            if self.projection.factored:
                if self.out_identity:
                    dy_proj = dy
                else:
                    p_out = self.p_out.reshape(groups, self.spec.d_out // groups, -1)
                    dy_proj = torch.einsum("bgol,gop->bgpl", dy, p_out)
                if self.factors is not None:  # groups pooled: exact for ungrouped convs
                    self._conv_stats(record, dy_proj.sum(1))
                return torch.einsum("bgpl,bgql->bpq", dy_proj, record).reshape(batch, -1)
            if self.factors is not None:
                self._conv_stats(record, dy.reshape(batch, self.spec.d_out, -1))
            grad = torch.einsum("bgol,bgil->bgoi", dy, record)
        else:
            dy = dy.reshape(batch, -1, dy.shape[-1])  # (B, L, d_out)
            if self.projection.factored:
                dy_proj = dy if self.out_identity else dy @ self.p_out
                if self.factors is not None:
                    self._token_stats(record, dy_proj, dy)
                return torch.bmm(dy_proj.transpose(1, 2), record).reshape(batch, -1)
            if self.factors is not None:
                self._token_stats(record, dy, dy)
            grad = torch.bmm(dy.transpose(1, 2), record)
        flat = grad.reshape(batch, -1)  # the exact per-example gradient, (out, in) row-major
        return flat if self._dense is None else self._dense(flat)

    # -- Kronecker factors ------------------------------------------------------------------
    def _token_stats(self, x: torch.Tensor, dy_side: torch.Tensor, dy: torch.Tensor) -> None:
        valid = dy.abs().sum(-1) > 0  # (B, L): positions that received a gradient
        self.factors.update(x[valid], dy_side[valid])

    def _conv_stats(self, patches: torch.Tensor, dy_side: torch.Tensor) -> None:
        """patches (B, g, k_in, L) with groups pooled; dy_side (B, k_out, L)."""
        self.factors.update(
            patches.permute(0, 1, 3, 2).reshape(-1, patches.shape[2]),
            dy_side.permute(0, 2, 1).reshape(-1, dy_side.shape[1]),
        )


def _side_dims(projection: ProjectionSpec, spec: ModuleSpec) -> tuple[int, int]:
    if projection.exact:
        return spec.d_out, spec.d_in
    return projection.side_dims(spec.d_out, spec.d_in, spec.name)


def _scale_outputs(dy: torch.Tensor, rows: torch.Tensor, spec: ModuleSpec) -> torch.Tensor:
    """dy with each output unit's gradient times its row scale (channels lead a conv's dy)."""
    if spec.kind == "conv2d":
        return dy * rows.view(1, -1, *([1] * (dy.dim() - 2)))
    return dy * rows


def _append_ones(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, x.new_ones(*x.shape[:-1], 1)], dim=-1)


class GradientCapture:
    """Hooks a set of modules for the duration of a `with` block."""

    def __init__(
        self,
        selected: list[tuple[ModuleSpec, nn.Module]],
        projection: ProjectionSpec,
        device: torch.device,
        dense_cache_bytes: int = 512 * 2**20,
        stats: bool = False,
        scales: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    ):
        self.device = device
        scales = scales or {}
        self.captures = [
            ModuleCapture(
                spec, module, projection, device, dense_cache_bytes, stats, scales.get(spec.name)
            )
            for spec, module in selected
        ]
        self._handles: list = []

    def __enter__(self) -> GradientCapture:
        for capture in self.captures:
            handle = capture.module.register_forward_hook(capture.on_forward, with_kwargs=True)
            self._handles.append(handle)
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def backward(self, total: torch.Tensor) -> None:
        """Run the backward pass of a scalar that is the sum of per-example outputs."""
        if not self.captures:  # a rows-only store (--no-gradients): outputs, no gradients
            return
        anchors = [a for c in self.captures for a in c.anchors]
        if not anchors:
            raise RuntimeError("no selected module took part in the forward pass")
        torch.autograd.grad(total, anchors, allow_unused=True)

    def collect(self, batch_size: int) -> dict[str, torch.Tensor]:
        return {c.spec.name: c.take(batch_size, self.device) for c in self.captures}

    def take_factors(self) -> dict[str, Factors]:
        """The Kronecker factor sums since the last call (then reset to zero)."""
        out = {}
        for c in self.captures:
            if c.factors is None:
                continue
            out[c.spec.name] = c.factors
            k_out, k_in = c.factors.s.shape[0], c.factors.a.shape[0]
            c.factors = Factors.zeros(k_out, k_in, self.device)
        return out
