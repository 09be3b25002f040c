"""Bar plots over parameter groups in network order, coloured by block: learned weights (the
paper's Figure 3, `learn-weights --plot`) and per-group LDS (Figure 1, `evaluate groups`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attrib.atomic import atomic_path
from attrib.errors import AttribError


def block_of(group: str, depth: int = 2) -> str:
    if "/" in group:  # `--groups unet` names: block/function
        return group.split("/")[0]
    return ".".join(group.split(".")[:depth])


def plot_bars(
    path: Path,
    groups: list[str],
    values,
    ylabel: str,
    title: str = "",
    errors=None,
    reference: float | None = 1.0,
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise AttribError("--plot needs matplotlib: pip install 'attrib[plot]'") from None
    depth = 3 if len({block_of(g, 2) for g in groups}) <= 2 else 2
    blocks = [block_of(g, depth) for g in groups]
    palette = plt.get_cmap("tab20")
    colours = {b: palette(i % 20) for i, b in enumerate(dict.fromkeys(blocks))}
    width = min(max(6.0, 0.12 * len(groups)), 24.0)
    figure, axes = plt.subplots(figsize=(width, 3.5))
    axes.bar(
        range(len(groups)),
        np.asarray(values),
        color=[colours[b] for b in blocks],
        width=0.85,
        yerr=errors,
        error_kw={"linewidth": 0.6},
    )
    if reference is not None:
        axes.axhline(reference, color="grey", linewidth=0.8, linestyle="--")
    axes.set_xlabel("parameter group (network order)")
    axes.set_ylabel(ylabel)
    axes.set_xlim(-0.6, len(groups) - 0.4)
    if len(groups) <= 40:
        axes.set_xticks(range(len(groups)), groups, rotation=75, fontsize=6, ha="right")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colours.values()]
    if len(colours) <= 20:
        axes.legend(handles, list(colours), fontsize=6, ncol=2, loc="upper left")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    with atomic_path(path, Path(path).suffix) as tmp:
        figure.savefig(tmp, dpi=130, bbox_inches="tight")  # long group names stay whole
    plt.close(figure)


def plot_weights(path: Path, groups: list[str], weights: np.ndarray, title: str = "") -> None:
    plot_bars(path, groups, weights, "weight (1 = uniform)", title)
