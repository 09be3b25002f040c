"""attrib next to traker, dattri and kronfluence on the digits task: LDS and wall seconds.

    python benchmarks/peers.py --setup        # once: the peers' own venv, from PyPI
    python benchmarks/peers.py                # the table

The peers are installed from PyPI into a separate environment (benchmarks/.peers-venv; their
requirements pull their own torch) and run on their CPU paths by peers_child.py on the same
checkpoint, training set and evaluation queries; every score matrix is judged against the same
retraining ground truth (the quality benchmark's, 100 subsets). Sign conventions: kronfluence
scores the change of the measurement (the margin here) per up-weighting with the opposite
sign of "helpful", so its scores are negated; traker and dattri already use "higher = helps".
Wall seconds: each tool end to end from the saved checkpoint and data (attrib: featurize the
training and query sets, then score), on this machine, one run.

Patches needed: none to the peers' code. dattri 0.3's random projection takes no
`use_half_precision`, and its TRAK passes parameters to the probability function as a dict
(the docs' `flatten_func` decorator breaks it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))

from quality_tasks import digits_task  # noqa: E402

from attrib import log  # noqa: E402
from attrib.evaluate.metrics import lds, mean_ci  # noqa: E402
from attrib.featurize.options import FeaturizeOptions  # noqa: E402
from attrib.featurize.run import run_featurize  # noqa: E402
from attrib.score.options import ScoreOptions  # noqa: E402
from attrib.score.run import run_score  # noqa: E402

HERE = Path(__file__).parent
VENV = HERE / ".peers-venv"
PEERS = ("kronfluence-ekfac", "traker-trak", "dattri-tracin", "dattri-trak")
NEGATE = {"kronfluence-ekfac"}
ATTRIB = (  # method, featurize method, projection dim (None: exact gradients)
    ("tracin", "tracin", 16),
    ("trak", "trak", 16),
    ("trak-block", "trak", 16),
    ("ekfac", "ekfac", None),
    ("ekfac", "ekfac", 16),
)


def setup() -> None:
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + ["--upgrade", "pip"], check=True)
    subprocess.run(pip + ["torch==2.13.0"], check=True)
    subprocess.run(
        pip + ["kronfluence", "traker", "dattri", "transformers", "datasets", "pillow"], check=True
    )


def attrib_scores(task, method, output, dim, root: Path):
    start = time.perf_counter()
    stores = {}
    for role in ("train", "eval"):
        stores[role] = root / role
        run_featurize(
            FeaturizeOptions(
                model=str(task.model),
                data=str(task.data[role]),
                out=stores[role],
                method=output,
                proj_dim=dim or "full",
                batch_size=64,
                progress=False,
                device="cpu",
            )
        )
    out = root / "scores.npy"
    run_score(
        ScoreOptions(
            train=stores["train"],
            method=method,
            queries=stores["eval"],
            out=out,
            preview=False,
            device="cpu",
        )
    )
    return np.load(out), time.perf_counter() - start


def judge(scores: np.ndarray, truth) -> tuple[float, float]:
    predicted = scores.astype(np.float64) @ truth.masks.T.astype(np.float64)
    return mean_ci(lds(predicted, truth.outputs.T, truth.higher_is_better))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="create the peers' venv and exit")
    parser.add_argument("--peers-python", default=str(VENV / "bin" / "python"))
    args = parser.parse_args()
    if args.setup:
        setup()
        return
    log.set_quiet(True)
    task = digits_task()
    truth = task.groundtruth(100)["eval"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method, output, dim in ATTRIB:
            scores, seconds = attrib_scores(task, method, output, dim, Path(tmp) / f"{method}{dim}")
            projection = f"p={dim}" if dim else "exact gradients"
            rows.append(("attrib", f"{method} ({projection})", *judge(scores, truth), seconds))
        out = Path(tmp) / "peers"
        child = [
            args.peers_python,
            str(HERE / "peers_child.py"),
            str(task.model),
            str(task.data["train"]),
            str(task.data["eval"]),
            str(out),
            *PEERS,
        ]
        subprocess.run(child, check=True, capture_output=True)
        report = json.loads((out / "report.json").read_text())
        for name in PEERS:
            if "error" in report[name]:
                rows.append((name.split("-")[0], name, float("nan"), float("nan"), float("nan")))
                continue
            scores = np.load(out / f"{name}.npy") * (-1 if name in NEGATE else 1)
            rows.append(
                (
                    name.split("-")[0],
                    name.split("-", 1)[1],
                    *judge(scores, truth),
                    report[name]["seconds"],
                )
            )
    table = Table(
        title=f"digits: LDS (%) on {truth.outputs.shape[1]} evaluation queries, "
        f"{truth.subsets} retrained models; wall seconds on this machine"
    )
    for column in ("tool", "method", "LDS %", "± 95% CI", "seconds"):
        table.add_column(column, justify="right")
    lines = ["| tool | method | LDS % | ± 95% CI | seconds |", "|---|---|---|---|---|"]
    for tool, method, value, ci, seconds in rows:
        cells = [tool, method, f"{100 * value:.2f}", f"{100 * ci:.2f}", f"{seconds:.1f}"]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    Console().print(table)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "peers.md").write_text(
        "Command: `python benchmarks/peers.py`\n\n" + "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
