"""A small GPT-2 trained on the text of Python's own documentation (`pydoc_data.topics`)."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import torch

from attrib.examples.common import split_rows, train_checkpoint
from attrib.training.loop import Recipe

SIZES = {"train": 1000, "learn": 200, "val": 150, "eval": 250}
RECIPE = Recipe(
    init="scratch", epochs=8, lr=3e-3, batch_size=32, weight_decay=0.01, schedule="cosine", seed=0
)
WORDS_PER_PASSAGE = 40


def passages() -> list[str]:
    """The documentation split into passages of about 40 words, in a fixed order."""
    from pydoc_data.topics import topics

    words = []
    for name in sorted(topics):
        words += re.sub(r"\s+", " ", topics[name]).split(" ")
    return [
        " ".join(words[i : i + WORDS_PER_PASSAGE])
        for i in range(0, len(words) - WORDS_PER_PASSAGE, WORDS_PER_PASSAGE)
    ]


def write_data(root: Path, seed: int = 0, sizes: dict | None = None) -> dict[str, Path]:
    texts = passages()
    rows = split_rows(len(texts), sizes or SIZES, seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for role, index in rows.items():
        paths[role] = root / f"{role}.parquet"
        datasets.Dataset.from_dict({"text": [texts[i] for i in index]}).to_parquet(str(paths[role]))
    return paths


def tokenizer(texts: list[str], vocab_size: int = 1024):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )


def init_model(path: Path, train_texts: list[str], seed: int = 0) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = tokenizer(train_texts)
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=96,
        n_embd=64,
        n_layer=2,
        n_head=4,
        # No dropout: retraining on subsets then differs only by data and seed, which keeps
        # the LDS ground truth less noisy (and training twice as fast on a CPU).
        attn_pdrop=0.0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def build(root: Path, seed: int = 0, recipe: Recipe | None = None, device="cpu"):
    paths = write_data(root / "data", seed)
    train_texts = datasets.load_dataset("parquet", data_files=str(paths["train"]), split="train")
    init = init_model(root / "init", list(train_texts["text"]), seed)
    model = train_checkpoint(init, paths["train"], root / "model", recipe or RECIPE, device)
    return paths, model
