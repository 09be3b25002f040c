"""Unprojected per-example gradients of a store's rows, recomputed from its checkpoint and data.

A store keeps projected features; two-stage scoring (`score --rescore`) needs, for a few
candidate rows and the queries, the gradients the projection summarized. They are recomputed
here with the store's own settings (model, adapter, modules, output function, task options)
by the code that featurized it, with the projection switched off, so a row's exact gradient
is what `--proj-dim full` would have stored. Also fits the Kronecker eigenbases in full space
(two passes over the store's rows: K-FAC's A and S, or Shampoo's mean G G^T and G^T G of the
exact per-example gradients; then EK-FAC's eigenvalues in that eigenbasis), cached next to
the store: nothing of size rows x parameters is ever kept.
"""

from __future__ import annotations

import hashlib
import json

import torch

from attrib import log
from attrib.data import open_dataset, read_rows, ref_from_settings, undecoded
from attrib.errors import AttribError
from attrib.featurize.batch import Featurizer
from attrib.featurize.modules import select_modules
from attrib.featurize.projection import ProjectionSpec
from attrib.methods.kernels import CACHE_DIR
from attrib.methods.kronecker import (
    KroneckerEigen,
    ShampooMoments,
    eigen_of,
    load_blocks,
    save_blocks,
)
from attrib.progress import progress_bar
from attrib.store import Store
from attrib.tasks import load_task_from_settings

EXACT_VERSION = 1


class ExactGradients:
    """A store's rows (by position in store order) -> their unprojected gradients (n x D),
    modules in store order, each flattened (d_out x d_in) as `--proj-dim full` stores them."""

    def __init__(self, store: Store, device, trust_remote_code: bool = False, factors=False):
        settings = store.settings
        self.store = store
        self.task = load_task_from_settings(settings, trust_remote_code)
        self.task.to(device)
        names = store.module_names
        selected = select_modules(self.task.model, include=names)
        if [spec.name for spec, _ in selected] != names:
            raise AttribError(f"the model's modules differ from those in {store.path}")
        self.specs = [spec for spec, _ in selected]
        self.modules = [module for _, module in selected]
        self.columns = dict(settings["task_options"]["columns"])
        # The store's space unprojected: its normalizer (--optimizer-state), if any, kept.
        exact = ProjectionSpec.from_dict(settings["projection"]).unprojected()
        self.featurizer = Featurizer(
            self.task, self.columns, selected, exact, settings["output_function"], factors
        )
        dataset = open_dataset(ref_from_settings(settings["dataset"]))
        self.dataset = undecoded(dataset, self.columns.get("image"))
        self.index = store.column("index")

    @property
    def widths(self) -> list[int]:
        return [spec.d_out * spec.d_in for spec in self.specs]

    def batches(self, positions, batch_size: int):
        """(positions of this batch, its FeatureBatch) over `positions` (store order)."""
        positions = [int(p) for p in positions]
        for start in range(0, len(positions), batch_size):
            chunk = positions[start : start + batch_size]
            rows = read_rows(self.dataset, [int(self.index[p]) for p in chunk])
            yield chunk, self.featurizer(rows, range(len(chunk)))

    def gradients(self, positions, batch_size: int = 16) -> torch.Tensor:
        names = [spec.name for spec in self.specs]
        parts = [
            torch.cat([batch.features[name] for name in names], dim=1).cpu()
            for _, batch in self.batches(positions, batch_size)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, sum(self.widths))


def exact_kronecker(
    store: Store, device, kind: str, batch_size: int = 16, trust_remote_code=False,
    progress: bool = True,
) -> list[KroneckerEigen]:  # fmt: skip
    """Full-space eigenbases of the store's training rows, one per module, for `kind` kfac,
    ekfac or shampoo: computed on first use (one pass over the rows for K-FAC, two for the
    eigenvalue-corrected ones) and cached."""
    if kind == "shampoo":
        return _exact_shampoo(store, device, batch_size, trust_remote_code, progress)
    corrected = kind == "ekfac"
    path = _cache_path(store, kind)
    count = len(store.module_names)
    if path.exists():
        return load_blocks(path, count)
    log.info(f"fitting the exact {kind} factors of {store.path} (cached for later runs)")
    side = ExactGradients(store, device, trust_remote_code, factors=True)
    rows = range(store.num_examples)
    with progress_bar(progress) as bar:
        task = bar.add_task(f"exact {kind}: factors", total=store.num_examples)
        for chunk, _ in side.batches(rows, batch_size):
            bar.advance(task, len(chunk))
    totals = side.featurizer.capture.take_factors()
    blocks = [eigen_of(*(m.cpu() for m in totals[spec.name].means())) for spec in side.specs]
    if corrected:
        _correct(side, blocks, batch_size, progress)
    save_blocks(path, blocks)
    return blocks


def _cache_path(store: Store, kind: str):
    payload = json.dumps({"v": EXACT_VERSION, "kind": kind, "store": store.content_key()})
    key = hashlib.sha256(payload.encode()).hexdigest()[:16]
    return store.path / CACHE_DIR / f"exact-{kind}-{key}.safetensors"


def _exact_shampoo(store: Store, device, batch_size, trust_remote_code, progress):
    """Eigenvalue-corrected Shampoo on the exact per-example gradients G_n: the eigenbases of
    mean G G^T and mean G^T G (first pass), eigenvalues re-fit in them (second)."""
    path = _cache_path(store, "shampoo")
    if path.exists():
        return load_blocks(path, len(store.module_names))
    log.info(f"fitting the exact shampoo eigenbases of {store.path} (cached for later runs)")
    side = ExactGradients(store, device, trust_remote_code)
    moments = ShampooMoments([(s.d_out, s.d_in) for s in side.specs])
    count = store.num_examples
    with progress_bar(progress) as bar:
        task = bar.add_task("exact shampoo: second moments", total=count)
        for chunk, batch in side.batches(range(count), batch_size):
            for m, spec in enumerate(side.specs):
                moments.add(m, batch.features[spec.name].cpu().reshape(-1, spec.d_out, spec.d_in))
            bar.advance(task, len(chunk))
    blocks = moments.bases(count)
    _correct(side, blocks, batch_size, progress)
    save_blocks(path, blocks)
    return blocks


def _correct(side: ExactGradients, blocks, batch_size: int, progress: bool) -> None:
    """Each eigenvalue re-fit as the mean square of the exact per-example gradients in the
    eigenbasis (EK-FAC, George et al. 2018; eigenvalue-corrected Shampoo), the second pass."""
    for capture in side.featurizer.capture.captures:  # the factors are complete (if any)
        capture.factors = None
    sums = [torch.zeros_like(block.values) for block in blocks]
    count = side.store.num_examples
    with progress_bar(progress) as bar:
        task = bar.add_task("exact: eigenvalues", total=count)
        for chunk, batch in side.batches(range(count), batch_size):
            for spec, block, total in zip(side.specs, blocks, sums):
                g = batch.features[spec.name].cpu().reshape(-1, spec.d_out, spec.d_in)
                rotated = block.q_out.T @ g @ block.q_in
                total += rotated.double().pow(2).sum(0)
            bar.advance(task, len(chunk))
    for block, total in zip(blocks, sums):
        block.values = total / count
