"""Prompt/completion and chat data for causal language models, tokenized as TRL's SFTTrainer
does, so the loss counts exactly the tokens the model was trained on.

Formats (TRL's dataset formats), detected from the column names:
- `prompt` + `completion` strings: the completion gets the EOS token unless it ends with it;
  prompt and prompt+completion are tokenized separately and the completion starts where the
  two token sequences first differ;
- `prompt` + `completion` message lists (conversational): the prompt rendered with the
  tokenizer's chat template and the generation prompt, prompt+completion rendered whole, the
  same common-prefix rule;
- `messages`: a conversation whose last message (the assistant's) is the completion and the
  messages before it the prompt.
Only completion tokens are targets, on the training and the query side. Plain `text` keeps
every token. A query of a model trained on plain text may be a prompt/completion object too
(`TEXT_COMPLETION` columns): its completion's tokens, given the prompt, are attributed, and
no EOS is appended (the training texts had none).
"""

from __future__ import annotations

import json

import torch

from attrib.errors import AttribError

# Columns of prompt/completion queries of a store trained on plain text.
TEXT_COMPLETION = {"prompt": "prompt", "completion": "completion", "continues": "text"}


def data_format(columns: dict) -> str:
    if "messages" in columns:
        return "messages"
    if "completion" in columns:
        return "prompt-completion"
    return "text"


def common_prefix(ids: list[int], other: list[int]) -> int:
    count = 0
    for a, b in zip(ids, other):
        if a != b:
            break
        count += 1
    return count


def split_messages(messages, row: int) -> tuple[list, list]:
    if not isinstance(messages, list) or not messages:
        raise AttribError(f"row {row}: `messages` is not a list of messages")
    if messages[-1].get("role") != "assistant":
        raise AttribError(
            f"row {row}: the last message is not the assistant's; its answer is the completion"
        )
    return messages[:-1], messages[-1:]


def encode(
    tokenizer, prompt, completion, row: int, add_eos: bool = True
) -> tuple[list[int], list[int]]:
    """(token ids, completion mask) of one example."""
    if isinstance(prompt, list) != isinstance(completion, list):
        raise AttribError(f"row {row}: prompt and completion must both be text or both messages")
    if isinstance(prompt, list):
        if not getattr(tokenizer, "chat_template", None):
            raise AttribError(
                "the data is conversational but the model's tokenizer has no chat template; "
                "use a tokenizer with one, or prompt/completion text columns"
            )
        prompt_ids = _chat_ids(tokenizer, prompt, add_generation_prompt=True)
        ids = _chat_ids(tokenizer, prompt + completion, add_generation_prompt=False)
    else:
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise AttribError(f"row {row}: prompt and completion must be text")
        eos = tokenizer.eos_token
        if add_eos and eos and not completion.endswith(eos):
            completion = completion + eos
        prompt_ids = tokenizer(text=prompt)["input_ids"]
        ids = tokenizer(text=prompt + completion)["input_ids"]
    start = common_prefix(prompt_ids, ids)
    if start >= len(ids) and not add_eos:  # a query's completion (training rows get an EOS)
        raise AttribError("a query's completion has no tokens to attribute; pass some text")
    return list(ids), [0] * start + [1] * (len(ids) - start)


def _chat_ids(tokenizer, messages: list, add_generation_prompt: bool) -> list[int]:
    rendered = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return list(rendered["input_ids"])


def batch(tokenizer, rows: dict, positions, columns: dict, max_length: int, device) -> dict:
    """Padded tensors of prompt/completion or chat rows, with their completion masks."""
    encoded = []
    for offset, row in enumerate(positions):
        if "messages" in columns:
            prompt, completion = split_messages(rows[columns["messages"]][offset], row)
        else:
            prompt = rows[columns["prompt"]][offset]
            completion = rows[columns["completion"]][offset]
        ids, mask = encode(tokenizer, prompt, completion, row, "continues" not in columns)
        encoded.append((ids[:max_length], mask[:max_length]))
    width = max(len(ids) for ids, _ in encoded)
    left = tokenizer.padding_side == "left"
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    input_ids = torch.full((len(encoded), width), pad, dtype=torch.long)
    attention = torch.zeros((len(encoded), width), dtype=torch.long)
    completion = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, (ids, mask) in enumerate(encoded):
        place = slice(width - len(ids), width) if left else slice(0, len(ids))
        input_ids[i, place] = torch.tensor(ids, dtype=torch.long)
        attention[i, place] = 1
        completion[i, place] = torch.tensor(mask, dtype=torch.long)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": attention.to(device),
        "position_ids": (attention.cumsum(-1) - 1).clamp(min=0).to(device),
        "completion_mask": completion.to(device),
    }


def text_store_query_rows(values: list[str]) -> tuple[dict, dict[str, list]]:
    """(columns, rows) of `--query` values for a store of plain text: texts, `{"text": ...}`
    objects, or `{"prompt": ..., "completion": ...}` objects (the completion attributed given
    the prompt); not a mix of texts and completions (they are featurized differently)."""
    texts, pairs = [], []
    for value in values:
        record = _json_object(value)
        if record is None:
            texts.append(value)
        elif set(record) == {"text"} and isinstance(record["text"], str):
            texts.append(record["text"])
        elif {"prompt", "completion"} <= set(record) and all(
            isinstance(record[k], str) for k in ("prompt", "completion")
        ):
            pairs.append(record)
        else:
            raise AttribError(
                f"--query {value[:60]!r}: a JSON query of a plain-text store is "
                '{"text": ...} or {"prompt": ..., "completion": ...} (text; messages need a '
                "store of chat data)"
            )
    if texts and pairs:
        raise AttribError(
            "--query: texts and prompt/completion objects are featurized differently; "
            "score them in two calls"
        )
    if not pairs:
        for text in texts:
            if not text.strip():
                raise AttribError("an empty query has no tokens to attribute; pass some text")
        return {"text": "text"}, {"text": texts}
    rows = {"prompt": [p["prompt"] for p in pairs], "completion": [p["completion"] for p in pairs]}
    return dict(TEXT_COMPLETION), rows


def _json_object(value: str) -> dict | None:
    if not value.lstrip().startswith("{"):
        return None
    try:
        record = json.loads(value)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def query_rows(values: list[str], columns: dict) -> dict[str, list]:
    """`--query` values for a prompt/completion or chat store: JSON objects with `prompt` and
    `completion` (text or messages), or `messages`."""
    wanted = ("messages",) if "messages" in columns else ("prompt", "completion")
    rows: dict[str, list] = {columns[key]: [] for key in wanted}
    for value in values:
        try:
            record = json.loads(value)
        except ValueError:
            record = None
        if not isinstance(record, dict) or any(key not in record for key in wanted):
            keys = " and ".join(f'"{key}"' for key in wanted)
            raise AttribError(
                f"--query {value[:60]!r}: this store was made from {data_format(columns)} data, "
                f"so a query is a JSON object with {keys}"
            )
        for key in wanted:
            rows[columns[key]].append(record[key])
    return rows
