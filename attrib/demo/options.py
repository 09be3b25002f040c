"""`attrib demo`'s options, defined once (the CLI is built from this class)."""

from __future__ import annotations

from pathlib import Path

from attrib.options import Options, at_least, option

DEMO_TASKS = {
    "image": "digits, a small ResNet",
    "text": "Python docs, a 2-layer GPT-2",
    "diffusion": "digits, a tiny DDPM",
}


class DemoOptions(Options):
    """Run the whole job offline in minutes: build a small task from data shipped with
    installed packages, featurize, learn weights, explain a query, measure LDS with and
    without the weights. Built artifacts are cached and reused on later runs."""

    task: str = option(
        "image",
        help="; ".join(f"{k}: {v}" for k, v in DEMO_TASKS.items()) + ".",
        choices=tuple(DEMO_TASKS),
    )
    out: Path = option(Path("attrib-demo"), help="Folder for the demo's outputs.", output="folder")
    subsets: int | None = option(
        None,
        help="Retrained models for the LDS ground truth (default: the one shipped with attrib, "
        "text: 20 subsets, made for this Python's pydoc topics, else 20 retrained here; "
        "diffusion: 64 subsets x 2 seeds; image: 20 retrained here).",
    )
    root: Path | None = option(
        None, help="Cache folder (default: $XDG_CACHE_HOME/attrib/demo/TASK).", cli=False
    )

    def check(self) -> None:
        at_least(self.subsets, 2, "--subsets")

    @property
    def retrained_subsets(self) -> int | None:
        """Subsets to retrain, or None where a shipped ground truth is used."""
        if self.subsets is None:
            return None if self.task in ("diffusion", "text") else DEFAULT_SUBSETS
        return self.subsets


DEFAULT_SUBSETS = 20
