"""Causal language models (`AutoModelForCausalLM`): f = mean token NLL of an example.

Targets are tokens whose own position and the position before are both real (not padding),
so the set of predicted tokens, and hence the gradient, is the same whichever side pads.
Position ids are counted over real tokens for the same reason. Prompt/completion and chat data
(`attrib.tasks.completions`) count the completion's tokens only, as TRL trains on them.
"""

from __future__ import annotations

import datasets
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

import attrib.tasks.completions as completions
from attrib import hub
from attrib.data import choose_column
from attrib.errors import AttribError
from attrib.tasks.base import (
    ModelRef,
    Task,
    TaskOptions,
    TaskOutput,
    attach_adapter,
    load_pretrained,
    model_record,
    require_column,
)

DEFAULT_MAX_LENGTH = 1024


class CausalLMTask(Task):
    name = "causal-lm"
    query_role = "text"
    architecture_suffixes = ("ForCausalLM", "LMHeadModel")
    output_functions = ("loss",)

    @classmethod
    def load(
        cls, ref: ModelRef, dtype: torch.dtype, options: TaskOptions, model=None
    ) -> CausalLMTask:
        if model is None:
            model = load_pretrained(AutoModelForCausalLM, ref, dtype)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                ref.source, revision=ref.revision, trust_remote_code=ref.trust_remote_code
            )
        except (OSError, ValueError) as exc:
            raise hub.load_error("tokenizer of", ref.source, ref.revision, exc) from None
        if not tokenizer(text="a b c")["input_ids"]:
            # transformers 5 builds an empty tokenizer for a folder without tokenizer files:
            # every text would encode to nothing, and featurize would store zeros.
            raise AttribError(
                f"--model {ref.source}: its tokenizer encodes every text to nothing (no "
                "tokenizer files in the folder?); save the tokenizer beside the weights "
                "(tokenizer.save_pretrained) or copy its files in"
            )
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        tokenizer.padding_side = options.padding_side
        model, adapter = attach_adapter(model, ref)
        info = model_record(ref, model.config, cls.name, dtype, adapter)
        return cls(model, tokenizer, options, info)

    def max_length(self) -> int:
        """--max-length, capped by what the model's position embeddings allow."""
        config = self.model.config
        limits = [
            self.options.max_length or DEFAULT_MAX_LENGTH,
            getattr(config, "n_positions", None),
            getattr(config, "max_position_embeddings", None),
            getattr(self.processor, "model_max_length", None),
        ]
        return min(int(x) for x in limits if isinstance(x, int) and x > 0)

    def settings(self, columns: dict) -> dict:
        return {**super().settings(columns), "max_length": self.max_length()}

    def bind_columns(self, dataset) -> dict[str, str | None]:
        names = set(dataset.column_names)
        chosen = self.options.completion_column
        if chosen is not None:  # a prompt and one of its completions (preference data)
            missing = [c for c in ("prompt", chosen) if c not in names]
            if missing:
                raise AttribError(
                    f"--completion-column {chosen} needs the columns prompt and {chosen}; the "
                    f"data has no {missing[0]!r} (columns: {sorted(names)})"
                )
            return {"prompt": "prompt", "completion": chosen}
        if {"prompt", "chosen", "rejected"} <= names and "completion" not in names:
            raise AttribError(
                "the data holds preference pairs (prompt, chosen, rejected): featurize each "
                "side with --completion-column chosen / rejected, and score with --contrast-queries"
            )
        if self.options.text_column is None:  # TRL's formats, by their column names
            if {"prompt", "completion"} <= names:
                return {"prompt": "prompt", "completion": "completion"}
            if "messages" in names and "text" not in names:
                return {"messages": "messages"}
        strings = [
            name
            for name, feature in dataset.features.items()
            if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
        ]
        candidates = ["text"] if "text" in strings else strings
        text = choose_column(dataset, "text", self.options.text_column, candidates)
        return {"text": require_column(text, "text", dataset)}

    def token_rows(self, batch: dict) -> tuple[dict, list[int]]:
        return token_rows(batch)

    def query_rows(self, values: list[str], stored: dict) -> tuple[dict, dict[str, list]]:
        if completions.data_format(stored) == "text":
            return completions.text_store_query_rows(values)
        return dict(stored), completions.query_rows(values, stored)

    def prepare(self, rows: dict[str, list], positions: range, device, columns: dict) -> dict:
        if completions.data_format(columns) != "text":
            return completions.batch(
                self.processor, rows, positions, columns, self.max_length(), device
            )
        texts = rows[columns["text"]]
        for offset, text in enumerate(texts):
            if not isinstance(text, str):
                column = columns["text"]
                raise AttribError(
                    f"row {positions[offset]}: column {column!r} holds {type(text).__name__}, "
                    "not text; pass --text-column"
                )
        encoded = self.processor(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length(),
            return_tensors="pt",
        )
        if encoded["input_ids"].shape[1] == 0:  # only empty texts: one token, no target
            filler = self.processor.eos_token_id or self.processor.pad_token_id or 0
            encoded = {
                "input_ids": torch.full((len(texts), 1), filler),
                "attention_mask": torch.ones((len(texts), 1), dtype=torch.long),
            }
        mask = encoded["attention_mask"]
        return {
            "input_ids": encoded["input_ids"].to(device),
            "attention_mask": mask.to(device),
            "position_ids": (mask.cumsum(-1) - 1).clamp(min=0).to(device),
        }

    def outputs(self, batch: dict, output_function: str) -> TaskOutput:
        ((logits, loss_of),) = self.loss_passes(batch)
        loss = loss_of(logits)
        counts = _loss_targets(batch).sum(-1).clamp(min=1)
        scalars = {"loss": loss.detach(), "out_to_loss": torch.ones_like(loss), "tokens": counts}
        return TaskOutput(loss, scalars)

    def loss_passes(self, batch: dict):
        model_inputs = {
            k: v for k, v in batch.items() if k not in ("completion_mask", "target_scale")
        }
        logits = self.model(**model_inputs, use_cache=False).logits
        ids = batch["input_ids"]
        targets = _loss_targets(batch)

        def loss_of(z):
            z = z.to(torch.promote_types(z.dtype, torch.float32))  # float64 stays
            nll = F.cross_entropy(z[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            loss = (nll * targets).sum(-1) / targets.sum(-1).clamp(min=1)  # (B,)
            if "target_scale" in batch:  # per-token rows: each token's share of the mean
                loss = loss * batch["target_scale"]
            return loss

        yield logits, loss_of

    def representation_site(self):
        # The last layer's hidden states, as the output head reads them (after the final norm).
        head = self.model.get_output_embeddings()
        return head, "input", head.in_features

    def pool_representation(self, hidden, batch):
        weights = _target_tokens(batch).to(hidden.dtype)[..., None]
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def _loss_targets(batch: dict) -> torch.Tensor:
    """(B, T-1) 1 where token t+1 is a predicted target of the loss (a completion's tokens
    only, when the batch has a completion mask)."""
    mask = batch["attention_mask"]
    targets = mask[:, 1:] * mask[:, :-1]
    if "completion_mask" in batch:
        targets = targets * batch["completion_mask"][:, 1:]
    return targets


def _target_tokens(batch: dict) -> torch.Tensor:
    """(B, T) 1 where a token is a predicted target (a completion's, or every token after
    the first of a plain text); a sequence without any keeps all its tokens."""
    mask = batch["attention_mask"]
    tokens = torch.zeros_like(mask)
    tokens[:, 1:] = mask[:, 1:] * mask[:, :-1]
    if "completion_mask" in batch:
        tokens[:, 1:] *= batch["completion_mask"][:, 1:]
    empty = tokens.sum(1) == 0
    tokens[empty] = mask[empty]
    return tokens


def token_rows(batch: dict) -> tuple[dict, list[int]]:
    """One prepared sequence as one row per target token: row t predicts only token t and
    carries 1/T of the sequence's mean NLL, so the rows' gradients (and any linear score of
    them) sum to the sequence's. Returns the rows and the target positions."""
    mask = batch["attention_mask"]
    targets = mask[0, 1:] * mask[0, :-1]
    if "completion_mask" in batch:
        targets = targets * batch["completion_mask"][0, 1:]
    positions = (targets.nonzero().flatten() + 1).tolist()
    count = max(len(positions), 1)
    rows = {k: v.expand(len(positions), -1).clone() for k, v in batch.items()}
    one_hot = torch.zeros_like(rows["input_ids"])
    one_hot[torch.arange(len(positions)), positions] = 1
    rows["completion_mask"] = one_hot
    rows["target_scale"] = torch.full((len(positions),), 1.0 / count, device=one_hot.device)
    return rows, positions


TASK = CausalLMTask
