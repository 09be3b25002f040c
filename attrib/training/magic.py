"""MAGIC: exact attribution for a recorded run by metagradients.

The run is theta_T(w), a function of every training row's loss weight w_i (w = 1 as
trained). For a query output f, the score of row i is d f(theta_T(w)) / d w_i at w = 1,
computed in reverse mode through every recorded optimizer step (the REPLAY scheme of
"Optimizing ML Training with Metagradient Descent", arXiv 2503.13751): the adjoint of
(theta, optimizer state) goes back step by step; each step's vector-Jacobian product
(double backward through the step's gradient) also gives the adjoints of the weights of the
rows in that step's batch. The states a step needs are recomputed forward from the nearest
snapshot, one segment at a time (about sqrt(T) states in memory, one extra forward pass).
BatchNorm's running statistics are part of the state the adjoint carries (`running_stats`):
the evaluated model reads them, and each step's batch moves them.

Scores follow attrib's convention, higher = more helpful: +df/dw for a margin (higher is
better), -df/dw for a loss. The prediction the metagradient makes for removing the rows R is
f(1) - sum_{i in R} df/dw_i.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from attrib.training.engine import (
    State,
    model_buffers,
    run_steps,
    set_buffers,
    state_from_snapshot,
)
from attrib.training.load import Loaded
from attrib.training.record import Run
from attrib.training.running_stats import differentiable_eval, stat_names, updated_stats


def output_gradients(
    loaded: Loaded, state: State, batch: dict, output: str
) -> tuple[np.ndarray, list[torch.Tensor]]:
    """The queries' outputs at `state` (eval mode) and their gradients w.r.t. the trainable
    parameters, then w.r.t. the running statistics (`stat_names` order): one tensor per
    input, with a leading dimension over the queries."""
    task, stepper = loaded.task, loaded.stepper
    set_buffers(stepper, state.buffers)
    task.model.eval()
    leaves = [p.detach().requires_grad_(True) for p in state.params]
    stats = _stat_leaves(loaded, state)
    with differentiable_eval(task.model, stats):
        values = stepper.call(leaves, lambda b: task.outputs(b, output).values, batch)
    inputs = [*leaves, *stats.values()]
    # One backward for all queries: the identity's rows as batched cotangents.
    eye = stepper.share(torch.eye(len(values), dtype=values.dtype, device=values.device))
    parts = _batched_grad([values], inputs, [eye], stepper.batched_backward)
    return values.detach().double().cpu().numpy(), parts


def _batched_grad(outputs, inputs, cotangents, batched: bool = True) -> list[torch.Tensor]:
    """Vector-Jacobian products for a batch of cotangents (leading dimension Q) in one
    vectorized backward pass (one pass per row where not `batched`); an input the outputs do
    not reach gets zeros."""
    count = cotangents[0].shape[0]
    if not batched:
        parts = _looped_grad(outputs, inputs, cotangents, count)
    else:
        parts = _vectorized_grad(outputs, inputs, cotangents, count)
    return [
        torch.zeros((count, *x.shape), dtype=x.dtype, device=x.device) if g is None else g.detach()
        for x, g in zip(inputs, parts)
    ]


def _vectorized_grad(outputs, inputs, cotangents, count: int) -> list[torch.Tensor | None]:
    try:  # the graph is kept so that a refused vectorized pass can be redone row by row
        parts = torch.autograd.grad(
            outputs, inputs, grad_outputs=cotangents, is_grads_batched=True, allow_unused=True,
            retain_graph=True,
        )  # fmt: skip
    except RuntimeError:  # PyTorch's vectorized backward lacks a rule for some op, or
        # gets its shapes wrong (seen on a UNet): redone row by row, where a genuine error
        # is raised again
        parts = _looped_grad(outputs, inputs, cotangents, count)
    return parts


def _looped_grad(outputs, inputs, cotangents, count: int) -> list[torch.Tensor | None]:
    """The same products one cotangent row at a time, for a graph the vectorized backward
    cannot run (a UNet convolution's backward in some memory layouts, magic --fsdp's
    gathers). Each row is copied into its place as it comes, so the rows are never held
    twice (a list of them and their stack)."""
    stacked: list[torch.Tensor | None] = [None] * len(inputs)
    for i in range(count):
        row = torch.autograd.grad(
            outputs, inputs, grad_outputs=[c[i] for c in cotangents], allow_unused=True,
            retain_graph=True,
        )  # fmt: skip
        for j, grad in enumerate(row):
            if grad is None:
                continue
            if stacked[j] is None:
                stacked[j] = grad.new_zeros((count, *inputs[j].shape))
            stacked[j][i] = grad
    return stacked


def _stat_leaves(loaded: Loaded, state: State) -> dict[str, torch.Tensor]:
    return {
        name: state.buffers[name].detach().requires_grad_(True)
        for name in stat_names(loaded.task.model)
    }


def metagradients(
    run: Run,
    loaded: Loaded,
    query_batch: dict,
    output: str,
    on_step: Callable[[], None] | None = None,
    graph_bytes: float = 0.0,
) -> np.ndarray:
    """(Q x N) d f_q / d w_i for the queries in `query_batch` (one block: their adjoints are
    carried together, so the recomputed states serve them all). `graph_bytes`: memory the
    step graphs of a segment may hold; where they fit, the segment is recomputed once with
    its graphs kept for the reverse pass (one forward and backward per step fewer) instead of
    recomputing states and then each step's graph."""
    stepper, optimizer = loaded.stepper, loaded.optimizer
    final = state_from_snapshot(run, run.steps, stepper, optimizer)
    _, adjoint_params = output_gradients(loaded, final, query_batch, output)
    # The block's adjoints, each with a leading dimension over its queries: parameters then
    # running statistics; the optimizer state's apart.
    count = adjoint_params[0].shape[0]
    adjoint_state = [
        [p.new_zeros((count, *p.shape)) for p in final.params] for _ in optimizer.state_names()
    ]
    result = np.zeros((count, run.meta["rows"]), dtype=np.float64)
    marks = run.snapshots
    for s0, s1 in reversed(list(zip(marks[:-1], marks[1:]))):
        graphs = _segment_graphs(run, loaded, s0, s1, graph_bytes)
        states = _segment_states(run, loaded, s0, s1) if graphs is None else None
        for t in reversed(range(s0, s1)):
            rows = loaded.batches[t]
            graph = graphs.pop() if graphs else _step_graph(loaded, states[t - s0], rows, t)
            adjoint_params, adjoint_state, moved = graph.vjps(
                adjoint_params, adjoint_state, stepper.batched_backward
            )
            for q, weights_bar in enumerate(moved):  # each process holds 1/replicas of it
                np.add.at(result[q], rows, weights_bar * stepper.replicas)
            if on_step is not None:
                on_step()
    return result


def _segment_states(run: Run, loaded: Loaded, s0: int, s1: int) -> list[State]:
    """The states before steps s0..s1-1, recomputed forward from the snapshot at s0."""
    first = state_from_snapshot(run, s0, loaded.stepper, loaded.optimizer)
    states = [first]
    run_steps(
        loaded.stepper,
        loaded.optimizer,
        loaded.source,
        loaded.batches,
        first,
        s0,
        s1 - 1,
        after_step=lambda _, state: states.append(state),
    )
    return states


def _segment_graphs(run: Run, loaded: Loaded, s0: int, s1: int, budget: float):
    """Steps s0..s1-1's graphs, recomputed forward from the snapshot at s0, each step's
    state read from the last one's outputs; None when the first step's saved tensors times
    the segment's length exceed `budget` (the caller recomputes states, then graphs)."""
    if budget <= 0:
        return None
    state = state_from_snapshot(run, s0, loaded.stepper, loaded.optimizer)
    graphs = []
    for t in range(s0, s1):
        saved = _SavedBytes()
        with saved:
            graph = _step_graph(loaded, state, loaded.batches[t], t, own_buffers=True)
        if t == s0 and saved.total * (s1 - s0) > budget:
            return None
        graphs.append(graph)
        state = graph.next_state(loaded.stepper)
    return graphs


class _SavedBytes(torch.autograd.graph.saved_tensors_hooks):
    """Counts the bytes autograd saves for backward while a graph is built."""

    def __init__(self):
        self.total = 0

        def pack(tensor):
            self.total += tensor.numel() * tensor.element_size()
            # Detached: a saved output kept with its grad_fn would be a reference cycle
            # through C++ that no garbage collection breaks under retain_graph (every kept
            # graph leaked, 1.5 GB a segment on pydoc-finetune). Lossless: autograd gives
            # the unpacked tensor its grad_fn back.
            return tensor.detach()

        super().__init__(pack, lambda tensor: tensor)


class _StepGraph:
    """One step as a function of (parameters, running statistics, optimizer state, the
    batch rows' loss weights), built with its graph; `vjps` moves a block's adjoints back
    through it."""

    def __init__(self, inputs, outputs, carried: int, size: int, groups: int):
        self.inputs, self.outputs = inputs, outputs
        self.carried, self.size, self.groups = carried, size, groups

    def next_state(self, stepper) -> State:
        """The state after the step (the model's buffers moved by its forward)."""
        params = [p.detach() for p in self.outputs[: self.size]]
        start = self.carried
        opt = [
            [s.detach() for s in self.outputs[start + k * self.size : start + (k + 1) * self.size]]
            for k in range(self.groups)
        ]
        return State(params, opt, model_buffers(stepper))

    def vjps(self, adjoint_params, adjoint_state, batched: bool = True):
        """(parameter and statistics adjoints, optimizer state adjoints, each query's
        d f / d w for the step's rows), in one vectorized double backward (`batched`)."""
        cotangents = [*adjoint_params, *(s for group in adjoint_state for s in group)]
        parts = _batched_grad(self.outputs, self.inputs, cotangents, batched)
        self.inputs = self.outputs = None  # the graph is used once
        flat, size = parts[self.carried : -1], self.size
        state_adjoints = [flat[k * size : (k + 1) * size] for k in range(self.groups)]
        return parts[: self.carried], state_adjoints, parts[-1].double().cpu().numpy()


def _step_graph(loaded: Loaded, state: State, rows, t: int, own_buffers=False) -> _StepGraph:
    """Step t from `state`, its graph kept. `own_buffers`: the model gets new buffer tensors
    first, so later steps' in-place updates leave the ones this graph saved untouched."""
    stepper, optimizer = loaded.stepper, loaded.optimizer
    if own_buffers:
        _replace_buffers(stepper, state.buffers)
    else:
        set_buffers(stepper, state.buffers)
    params = [p.detach().requires_grad_(True) for p in state.params]
    stats = _stat_leaves(loaded, state)
    opt = [[s.detach().requires_grad_(True) for s in group] for group in state.opt]
    weights = torch.ones(
        len(rows), dtype=params[0].dtype, device=params[0].device, requires_grad=True
    )
    batch = loaded.source.batch(rows.tolist())
    new_stats: dict[str, torch.Tensor] = {}
    with updated_stats(stepper.task.model, stats, new_stats):
        grads = stepper.gradient(params, batch, weights, t, create_graph=True)
    new_params, new_opt = optimizer.step(params, opt, grads, t)
    outputs = [*new_params, *(new_stats.get(n, stats[n]) for n in stats)]
    outputs += [s for group in new_opt for s in group]
    inputs = [*params, *stats.values(), *(s for group in opt for s in group), weights]
    return _StepGraph(inputs, outputs, len(params) + len(stats), len(params), len(opt))


def _replace_buffers(stepper, buffers: dict[str, torch.Tensor]) -> None:
    modules = dict(stepper.task.model.named_modules())
    for name, value in buffers.items():
        owner, _, leaf = name.rpartition(".")
        modules[owner]._buffers[leaf] = value.detach().clone()
