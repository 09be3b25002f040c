"""Runs inside the peers' own environment (kronfluence, traker, dattri from PyPI); started by
peers.py. Scores the evaluation queries against the training set of the digits task with each
peer tool and writes `<tool>.npy` (queries x train, higher = more helpful) and timings.

    python peers_child.py MODEL_DIR TRAIN.parquet EVAL.parquet OUT_DIR [tool ...]
"""

from __future__ import annotations

import io
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from torch import nn

torch.manual_seed(0)
# TRAK's kernel (Phi^T Phi)^-1 is singular when the projection is wider than the 1,000
# training examples; 512 keeps it invertible, as the TRAK paper's proj_dim << N does.
PROJ_DIM = 512


def load_images(path: Path, processor):
    import datasets
    from PIL import Image

    data = datasets.load_dataset("parquet", data_files=str(path), split="train")
    data = data.cast_column("image", datasets.Image(decode=False))
    images = [Image.open(io.BytesIO(row["image"]["bytes"])).convert("L") for row in data]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"].float()
    return pixels, torch.tensor(data["label"])


class Logits(nn.Module):
    """The Hugging Face classifier as logits = f(pixels), what the peers expect."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).logits


def margin(logits, labels):
    picked = logits.gather(1, labels[:, None])[:, 0]
    others = logits.scatter(1, labels[:, None], float("-inf")).logsumexp(-1)
    return picked - others


def kronfluence_ekfac(model, train, queries, out: Path):
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    class Classification(Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, y = batch
            logits = model(x)
            if sample:
                with torch.no_grad():
                    y = torch.multinomial(torch.softmax(logits.detach(), -1), 1)[:, 0]
            return nn.functional.cross_entropy(logits, y, reduction="sum")

        def compute_measurement(self, batch, model):
            x, y = batch
            return margin(model(x), y).sum()

    task = Classification()
    model = prepare_model(model, task)
    analyzer = Analyzer(
        "digits", model, task, output_dir=str(out / "kronfluence"), disable_tqdm=True, cpu=True
    )
    train_set = torch.utils.data.TensorDataset(*train)
    query_set = torch.utils.data.TensorDataset(*queries)
    analyzer.fit_all_factors(
        "ekfac",
        train_set,
        per_device_batch_size=256,
        factor_args=FactorArguments(strategy="ekfac"),
        overwrite_output_dir=True,
    )
    analyzer.compute_pairwise_scores(
        "scores",
        "ekfac",
        query_set,
        train_set,
        per_device_query_batch_size=64,
        per_device_train_batch_size=256,
        score_args=ScoreArguments(),
        overwrite_output_dir=True,
    )
    scores = analyzer.load_pairwise_scores("scores")["all_modules"]
    # kronfluence scores the effect of up-weighting a training example on the measurement:
    # positive = the margin grows, i.e. helpful, as in attrib.
    return scores.numpy()


def traker_trak(model, train, queries, out: Path):
    from trak import TRAKer

    trainer = TRAKer(
        model=model,
        task="image_classification",
        train_set_size=len(train[0]),
        save_dir=str(out / "traker"),
        device="cpu",
        proj_dim=PROJ_DIM,
        use_half_precision=False,
        projector_seed=0,
    )
    trainer.load_checkpoint(model.state_dict(), model_id=0)
    for start in range(0, len(train[0]), 100):
        batch = [t[start : start + 100] for t in train]
        trainer.featurize(batch=batch, num_samples=len(batch[0]))
    trainer.finalize_features()
    trainer.start_scoring_checkpoint(
        exp_name="eval", checkpoint=model.state_dict(), model_id=0, num_targets=len(queries[0])
    )
    for start in range(0, len(queries[0]), 100):
        batch = [t[start : start + 100] for t in queries]
        trainer.score(batch=batch, num_samples=len(batch[0]))
    return trainer.finalize_scores(exp_name="eval").T  # traker: train x queries


def _dattri(model, train, queries, kind: str):
    from dattri.algorithm.tracin import TracInAttributor
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask

    def loss(params, data):
        x, y = data
        logits = torch.func.functional_call(model, params, x.unsqueeze(0))
        return nn.functional.cross_entropy(logits, y.unsqueeze(0))

    def target(params, data):  # TRAK's output function, the margin, as dattri's docs define it
        x, y = data
        logits = torch.func.functional_call(model, params, x.unsqueeze(0))
        return margin(logits, y.unsqueeze(0))[0]

    task = AttributionTask(
        loss_func=target if kind == "trak" else loss, model=model, checkpoints=model.state_dict()
    )
    train_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*train), 64)
    query_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*queries), 64)
    projector = {"device": "cpu", "proj_dim": PROJ_DIM}
    if kind == "tracin":
        attributor = TracInAttributor(
            task, torch.tensor([1.0]), normalized_grad=False, projector_kwargs=projector
        )
        scores = attributor.attribute(train_loader, query_loader)
        return scores.T.numpy()  # dattri: train x test; its TracIn is a loss-gradient dot

    def probability(params, data):  # dattri 0.3 passes parameters as a dict here
        x, y = data
        logits = torch.func.functional_call(model, params, x.unsqueeze(0))
        return torch.softmax(logits, -1)[0, y]

    attributor = TRAKAttributor(task, probability, projector_kwargs=projector)
    attributor.cache(train_loader)
    return attributor.attribute(query_loader).T.numpy()


TOOLS = {
    "kronfluence-ekfac": kronfluence_ekfac,
    "traker-trak": traker_trak,
    "dattri-tracin": lambda m, tr, q, out: _dattri(m, tr, q, "tracin"),
    "dattri-trak": lambda m, tr, q, out: _dattri(m, tr, q, "trak"),
}


def main():
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model_dir, train_path, eval_path, out = (Path(a) for a in sys.argv[1:5])
    tools = sys.argv[5:] or list(TOOLS)
    out.mkdir(parents=True, exist_ok=True)
    processor = AutoImageProcessor.from_pretrained(model_dir)
    train, queries = load_images(train_path, processor), load_images(eval_path, processor)
    report = {}
    for name in tools:
        model = Logits(AutoModelForImageClassification.from_pretrained(model_dir)).eval()
        start = time.perf_counter()
        try:
            scores = TOOLS[name](model, train, queries, out)
            np.save(out / f"{name}.npy", np.asarray(scores, dtype=np.float32))
            report[name] = {"seconds": time.perf_counter() - start}
        except Exception as exc:  # a peer failing is a result to report, not a crash
            report[name] = {
                "error": f"{type(exc).__name__}: {exc}",
                "trace": traceback.format_exc()[-2000:],
            }
        print(name, report[name].get("seconds", report[name].get("error")), flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
