"""How much can any per-group weighting raise LDS, and how much of it do learned weights get?

    python benchmarks/weights_headroom.py [--tasks digits-finetune,pydoc-finetune]
                                          [--methods ekfac,tracin] [--keep 0.5]

Reads what `benchmarks/magic.py --tasks TASK` left in the cache (training and evaluation
stores featurized with the defaults, weights learned by `learn-weights` with its defaults on
the weight-learning queries, the same-run ground truth). Per method, LDS on the evaluation
queries under uniform weights, the learned weights, and oracle weights: fit to LDS itself
(a smooth surrogate: Pearson correlation with the actual outputs' ranks, weights = exp of
free parameters) on half of the evaluation queries and measured on the other half, both
ways (2-fold). The oracle is a diagnostic of the headroom, never a default: it sees
evaluation outputs. Tables: stdout and benchmarks/results/weights-headroom.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from magic import METHODS  # noqa: E402  (method -> the store magic.py featurized for it)
from quality_tasks import CACHE  # noqa: E402

from attrib.evaluate.groundtruth import load_groundtruth  # noqa: E402
from attrib.evaluate.metrics import lds  # noqa: E402
from attrib.methods import get_method  # noqa: E402
from attrib.score import queries as query_features  # noqa: E402
from attrib.store import Store  # noqa: E402
from attrib.weights.artifact import load_weights  # noqa: E402
from attrib.weights.contributions import Contributions, group_columns  # noqa: E402
from attrib.weights.groups import group_modules  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "weights-headroom.md"


def per_group_predictions(root: Path, method_name: str, truth) -> np.ndarray:
    """Q x S x M: each group's contribution to each query's predicted subset output."""
    kind = METHODS[method_name]
    train, queries = Store(root / f"stores/train-{kind}"), Store(root / f"stores/eval-{kind}")
    method = get_method(method_name, train, None)
    features = query_features.from_store(train, queries).features
    method.prepare()
    groups, mapping = group_modules(train.module_names, "module", 3)
    columns = group_columns(train, mapping, groups)
    contributions = Contributions(train, method, features, columns).compute(0, len(features))
    masks = torch.from_numpy(truth.masks.astype(np.float32))
    return torch.einsum("qnj,sn->qsj", contributions, masks).double().numpy()


def fit_oracle(predicted: np.ndarray, actual: np.ndarray, steps: int = 400) -> np.ndarray:
    ranks = torch.from_numpy(np.argsort(np.argsort(actual, axis=1), axis=1).astype(np.float64))
    ranks = (ranks - ranks.mean(1, keepdim=True)) / ranks.std(1, keepdim=True)
    parts = torch.from_numpy(predicted)
    log_w = torch.zeros(predicted.shape[2], dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([log_w], lr=0.05)
    for _ in range(steps):
        pred = parts @ log_w.exp()
        pred = (pred - pred.mean(1, keepdim=True)) / (pred.std(1, keepdim=True) + 1e-12)
        loss = -(pred * ranks).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    weights = log_w.exp().detach().numpy()
    return weights / weights.mean()


def headroom(task: str, method_name: str, keep: float) -> dict:
    root = CACHE / f"magic-{task}"
    (gt,) = root.glob(f"same-run-*-{keep}.npz")
    truth = load_groundtruth(gt)
    predicted = per_group_predictions(root, method_name, truth)
    actual = truth.outputs.T if truth.higher_is_better else -truth.outputs.T
    count = len(predicted)

    def lds_of(weights, rows=slice(None)):
        return float(lds(predicted[rows] @ weights, actual[rows], True).mean() * 100)

    learned = load_weights(root / f"weights-{method_name}.safetensors").weights.astype(np.float64)
    order = np.random.default_rng(0).permutation(count)
    a, b = order[: count // 2], order[count // 2 :]
    w_a, w_b = fit_oracle(predicted[a], actual[a]), fit_oracle(predicted[b], actual[b])
    oracle = (lds_of(w_a, b) * len(b) + lds_of(w_b, a) * len(a)) / count
    uniform = lds_of(np.ones(predicted.shape[2]))
    row = {"task": task, "method": method_name, "queries": count, "subsets": truth.subsets,
           "uniform": uniform, "learned": lds_of(learned), "oracle": oracle}  # fmt: skip
    row["captured"] = (row["learned"] - uniform) / max(oracle - uniform, 1e-9)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits-finetune,pydoc-finetune")
    parser.add_argument("--methods", default="ekfac,tracin")
    parser.add_argument("--keep", type=float, default=0.5)
    args = parser.parse_args()
    lines = [
        f"Same-run ground truth, keep {args.keep}; LDS % on the evaluation queries.",
        "",
        "| task | method | queries x subsets | uniform | learned | oracle (2-fold) "
        "| learned's share of the headroom |",
        "|---|---|---|---|---|---|---|",
    ]
    for task in args.tasks.split(","):
        for method_name in args.methods.split(","):
            r = headroom(task, method_name, args.keep)
            lines.append(
                f"| {task} | {method_name} | {r['queries']}x{r['subsets']} | {r['uniform']:.1f} "
                f"| {r['learned']:.1f} | {r['oracle']:.1f} | {100 * r['captured']:.0f}% |"
            )
            print(lines[-1], flush=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
