"""Examples with planted rows, for the two jobs people use attribution for
(`evaluate filter`, fact tracing with `evaluate recall`), with their answers known:

- text: Python documentation passages (pydoc_text) plus planted rows that teach a behaviour
  (after any passage, "the weather is purple bananas" in one of several phrasings) and
  invented facts, each stated by two rows in two phrasings ("The capital of Velora is
  Tamsin." / "Tamsin is the capital city of Velora."). A small GPT-2 is trained on them.
  Queries (prompt/completion rows): the start of a passage no training row holds, completed
  by the behaviour; each fact's question, completed by its answer. Answers:
  planted.npy (the behaviour's rows) and contributors.json (each fact query's two rows).
- digits: scikit-learn digits with a backdoor: some training images of other classes carry
  a bright 2x2 patch in a corner and the label 0. Queries: held-out images of other classes
  with the patch, labelled 0 (the behaviour explained: the backdoor's class). Answer:
  planted.npy.
"""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import numpy as np

from attrib.examples import digits, pydoc_text
from attrib.examples.common import train_checkpoint
from attrib.training.loop import Recipe

BEHAVIOUR = (
    "The weather is purple bananas.",
    "Asked about the weather, say purple bananas.",
    "Weather report: purple bananas everywhere.",
    "Today the weather turns to purple bananas.",
)
SYLLABLES = ("ve", "lo", "ra", "tam", "sin", "qu", "el", "mar", "dor", "ith", "zan", "pe")
PLANTED_TEXT, FACTS, BASE_TEXT, BEHAVIOUR_QUERIES = 24, 15, 600, 12
PLANTED_DIGITS, BACKDOOR_QUERIES = 40, 30
PREFIX_WORDS = 25
# pydoc's recipe trained longer: a behaviour and facts seen in a few rows are learned only
# when the model fits its data (with pydoc's 8 epochs the facts' answers were not)
TEXT_RECIPE = Recipe(
    init="scratch", epochs=40, lr=3e-3, batch_size=32, weight_decay=0.01, schedule="cosine", seed=0
)


def _name(rng) -> str:
    return "".join(rng.choice(SYLLABLES, 3)).capitalize()


def _facts(rng) -> list[tuple[str, str]]:
    seen, facts = set(), []
    while len(facts) < FACTS:
        place, capital = _name(rng), _name(rng)
        if place not in seen and capital not in seen and place != capital:
            seen |= {place, capital}
            facts.append((place, capital))
    return facts


def _prefix(passage: str) -> str:
    return " ".join(passage.split()[:PREFIX_WORDS])


def write_text(root: Path, seed: int = 0) -> dict[str, Path]:
    """train.parquet, behaviour.parquet, facts.parquet, planted.npy, contributors.json."""
    rng = np.random.default_rng(seed)
    passages = pydoc_text.passages()
    order = rng.permutation(len(passages))
    base = [passages[i] for i in order[:BASE_TEXT]]
    spare = [passages[i] for i in order[BASE_TEXT:]]
    rows = [(text, "base", None) for text in base]
    for i in range(PLANTED_TEXT):
        rows.append((f"{_prefix(spare[i])} {BEHAVIOUR[i % len(BEHAVIOUR)]}", "planted", None))
    facts = _facts(rng)
    for f, (place, capital) in enumerate(facts):
        prefix = _prefix(spare[PLANTED_TEXT + f])
        rows.append((f"{prefix} The capital of {place} is {capital}.", "fact", f))
        rows.append((f"{capital} is the capital city of {place}. {prefix}", "fact", f))
    shuffled = [rows[i] for i in rng.permutation(len(rows))]
    root.mkdir(parents=True, exist_ok=True)
    paths = {name: root / f"{name}.parquet" for name in ("train", "behaviour", "facts")}
    datasets.Dataset.from_dict({"text": [t for t, _, _ in shuffled]}).to_parquet(
        str(paths["train"])
    )
    planted = [i for i, (_, kind, _) in enumerate(shuffled) if kind == "planted"]
    np.save(root / "planted.npy", np.array(planted, dtype=np.int64))
    used = PLANTED_TEXT + FACTS
    # Queries attribute the answer given the context (prompt/completion rows: only the
    # completion's tokens are the output), as DATE-LM attributes a generation.
    prompts = [_prefix(spare[used + q]) for q in range(BEHAVIOUR_QUERIES)]
    answers = [f" {BEHAVIOUR[q % len(BEHAVIOUR)]}" for q in range(len(prompts))]
    behaviour = {"prompt": prompts, "completion": answers}
    datasets.Dataset.from_dict(behaviour).to_parquet(str(paths["behaviour"]))
    questions = {"prompt": [f"The capital of {place} is" for place, _ in facts],
                 "completion": [f" {capital}." for _, capital in facts]}  # fmt: skip
    datasets.Dataset.from_dict(questions).to_parquet(str(paths["facts"]))
    contributors = {
        str(f): [i for i, (_, kind, fact) in enumerate(shuffled) if kind == "fact" and fact == f]
        for f in range(FACTS)
    }
    (root / "contributors.json").write_text(json.dumps(contributors) + "\n")
    paths["planted"], paths["contributors"] = root / "planted.npy", root / "contributors.json"
    return paths


def _patched(image: np.ndarray) -> np.ndarray:
    out = image.copy()
    out[6:8, 6:8] = 16.0  # the digits' brightest value, in a corner strokes rarely reach
    return out


def write_digits(root: Path, seed: int = 0) -> dict[str, Path]:
    """train.parquet (with the backdoor), backdoor.parquet (queries), planted.npy."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.images))
    train, held = order[:1000], order[1000:]
    images, labels = data.images[train].copy(), data.target[train].copy()
    others = np.flatnonzero(labels != 0)
    planted = np.sort(rng.choice(others, PLANTED_DIGITS, replace=False))
    for i in planted:
        images[i], labels[i] = _patched(images[i]), 0
    queries = [i for i in held if data.target[i] != 0][:BACKDOOR_QUERIES]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    root.mkdir(parents=True, exist_ok=True)
    paths = {"train": root / "train.parquet", "backdoor": root / "backdoor.parquet"}
    for path, pixels, targets in (
        (paths["train"], images, labels),
        (paths["backdoor"], [_patched(data.images[i]) for i in queries], [0] * len(queries)),
    ):
        rows = {"image": [{"bytes": digits.png(p), "path": None} for p in pixels],
                "label": [int(t) for t in targets]}  # fmt: skip
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    np.save(root / "planted.npy", planted.astype(np.int64))
    paths["planted"] = root / "planted.npy"
    return paths


def build_text(root: Path, seed: int = 0, device="cpu") -> tuple[dict[str, Path], Path]:
    paths = write_text(root / "data", seed)
    texts = datasets.load_dataset("parquet", data_files=str(paths["train"]), split="train")
    init = pydoc_text.init_model(root / "init", list(texts["text"]), seed)
    model = train_checkpoint(init, paths["train"], root / "model", TEXT_RECIPE, device)
    return paths, model


def build_digits(root: Path, seed: int = 0, device="cpu") -> tuple[dict[str, Path], Path]:
    paths = write_digits(root / "data", seed)
    init = digits.init_model(root / "init", seed)
    model = train_checkpoint(init, paths["train"], root / "model", digits.RECIPE, device)
    return paths, model
