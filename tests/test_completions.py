"""Prompt/completion and chat data for language models: only completion tokens are targets
(gradients equal autograd of the completion-only loss), chat rows are tokenized and masked as
the chat template and TRL's rule give, and `--query` takes JSON prompt/completion objects."""

from __future__ import annotations

import json
import shutil

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from builders import sentences
from helpers import features, load, run_cli
from test_cli_errors import _assert_one_line_error

from attrib.featurize.modules import select_modules
from attrib.featurize.projection import ProjectionSpec

TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} ; {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)


def _chat_model(tmp_path, gpt2_dir):
    """The tiny GPT-2 saved with a chat template: (its folder, its tokenizer)."""
    from transformers import AutoTokenizer

    model = tmp_path / "chat-model"
    shutil.copytree(gpt2_dir, model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(model)
    return model, tok


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Prompt/completion rows made of the tiny model's words."""
    texts = sentences(12, seed=3)
    words = [t.split() for t in texts]
    prompts = [" ".join(w[: max(1, len(w) // 2)]) for w in words]
    completions = [" " + " ".join(w[max(1, len(w) // 2) :] or ["the"]) for w in words]
    path = tmp_path_factory.mktemp("pairs") / "pairs.parquet"
    datasets.Dataset.from_dict({"prompt": prompts, "completion": completions}).to_parquet(path)
    return path, prompts, completions


def _manual_gradients(task, prompts, completions, rows):
    """One backward per example of the mean NLL over completion tokens, tokenized by hand."""
    tok, model = task.processor, task.model
    selected = select_modules(model)
    for _, module in selected:  # untie GPT-2's lm_head and wte, as the hooks see them
        module.weight = torch.nn.Parameter(module.weight.detach().clone(), requires_grad=False)
    out = {spec.name: [] for spec, _ in selected}
    for row in rows:
        prompt_ids = tok(text=prompts[row])["input_ids"]
        ids = tok(text=prompts[row] + completions[row] + tok.eos_token)["input_ids"]
        start = 0
        while start < len(prompt_ids) and prompt_ids[start] == ids[start]:
            start += 1
        params = [p for _, m in selected for p in (m.weight, m.bias) if p is not None]
        for p in params:
            p.requires_grad_(True)
        logits = model(torch.tensor([ids])).logits[0].float()
        targets = list(range(max(start, 1), len(ids)))
        loss = F.cross_entropy(logits[[t - 1 for t in targets]], torch.tensor(ids)[targets])
        grads = iter(torch.autograd.grad(loss, params))
        for p in params:
            p.requires_grad_(False)
        for spec, module in selected:
            weight = next(grads)
            weight = weight.T if spec.kind == "conv1d" else weight
            matrix = weight.reshape(weight.shape[0], -1)
            if module.bias is not None:
                matrix = torch.cat([matrix, next(grads)[:, None]], dim=1)
            out[spec.name].append(matrix.reshape(-1))
    return {k: torch.stack(v) for k, v in out.items()}


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_completion_only_gradients_equal_autograd(gpt2_dir, pairs, padding_side):
    from attrib.tasks.options import TaskOptions

    path, prompts, completions = pairs
    task, dataset = load(gpt2_dir, path, TaskOptions(padding_side=padding_side))
    assert task.bind_columns(dataset) == {"prompt": "prompt", "completion": "completion"}
    rows = range(0, 6)
    got = features(task, dataset, ProjectionSpec("none", None), rows, "loss")
    want = _manual_gradients(task, prompts, completions, rows)
    for name in want:
        scale = want[name].abs().max()
        assert scale > 0 and (got[name] - want[name]).abs().max() <= 1e-4 * scale, name


def test_chat_rows_are_tokenized_and_masked_as_the_template_says(tmp_path, gpt2_dir):
    model, tok = _chat_model(tmp_path, gpt2_dir)
    words = sentences(4, seed=5)
    messages = [
        [{"role": "user", "content": w}, {"role": "assistant", "content": w.split()[0]}]
        for w in words
    ]
    path = tmp_path / "chat.parquet"
    datasets.Dataset.from_dict({"messages": messages}).to_parquet(path)
    task, dataset = load(model, path)
    columns = task.bind_columns(dataset)
    assert columns == {"messages": "messages"}
    batch = task.prepare(dataset[0:4], range(0, 4), torch.device("cpu"), columns)
    for i, conversation in enumerate(messages):
        # TRL's rule: the prompt with the generation prompt, the whole conversation, and the
        # completion from where their tokens first differ.
        prompt = tok.apply_chat_template(conversation[:1], add_generation_prompt=True)["input_ids"]
        whole = tok.apply_chat_template(conversation)["input_ids"]
        differ = [j for j, (a, b) in enumerate(zip(prompt, whole)) if a != b]
        start = differ[0] if differ else min(len(prompt), len(whole))
        real = batch["attention_mask"][i].bool()
        assert batch["input_ids"][i][real].tolist() == whole
        mask = batch["completion_mask"][i][real].tolist()
        assert mask == [0] * start + [1] * (len(whole) - start)
        assert 0 < start < len(whole)
    # The same data with a tokenizer that has no chat template is one line.
    code, _, err = run_cli(
        "featurize", "--model", gpt2_dir, "--data", path, "--out", tmp_path / "x", "-q"
    )
    _assert_one_line_error(code, err, "has no chat template")


def test_queries_are_json_prompt_completion_objects(tmp_path, gpt2_dir, pairs):
    path, prompts, completions = pairs
    common = ["--model", gpt2_dir, "--proj-dim", "4", "-q"]
    train, queries = tmp_path / "train", tmp_path / "queries"
    for out, extra in ((train, []), (queries, ["--max-examples", "3"])):
        code, _, err = run_cli("featurize", *common, "--data", path, "--out", out, *extra)
        assert code == 0, err
    score = ["score", "-t", train, "--method", "tracin", "-q"]
    code, _, err = run_cli(*score, "--queries", queries, "--out", tmp_path / "store.npy")
    assert code == 0, err
    values = [json.dumps({"prompt": p, "completion": c}) for p, c in zip(prompts, completions)]
    query_args = [a for v in values[:3] for a in ("--query", v)]
    code, out, err = run_cli(*score, *query_args, "--out", tmp_path / "values.npy", "--top", "2")
    assert code == 0, err
    want = np.load(tmp_path / "store.npy")  # float16 store features: rounding, no more
    np.testing.assert_allclose(
        np.load(tmp_path / "values.npy"), want, atol=2e-3 * np.abs(want).max()
    )
    record = json.loads(out.splitlines()[0])
    assert record["prompt"] and record["completion"]  # previews show both
    code, _, err = run_cli(*score, "--query", "just some text")
    _assert_one_line_error(code, err, "prompt-completion data", '"prompt" and "completion"')


@pytest.mark.parametrize("data", ["pairs", "plain"])
def test_per_token_scores_sum_to_the_sequence_score(tmp_path, gpt2_dir, pairs, text_data, data):
    """--per-token: one row per completion (or, for plain text, target) token; a query's rows
    sum to its sequence scores, for a kernel-free and a kernel method."""
    path, prompts, completions = pairs
    source = path if data == "pairs" else text_data
    train = tmp_path / "train"
    args = ["featurize", "--model", gpt2_dir, "--data", source, "--out", train]
    code, _, err = run_cli(*args, "--proj-dim", "4", "--store-dtype", "float32", "-q")
    assert code == 0, err
    if data == "pairs":
        values = [json.dumps({"prompt": p, "completion": c}) for p, c in zip(prompts, completions)]
    else:
        values = sentences(3, seed=9)
    query_args = [a for v in values[:3] for a in ("--query", v)]
    for method in ("tracin", "trak-block"):
        score = ["score", "-t", train, "--method", method, *query_args, "-q", "--format", "jsonl"]
        code, out, err = run_cli(*score, "--out", tmp_path / "seq.npy")
        assert code == 0, err
        code, out, err = run_cli(*score, "--per-token", "--top", "1", "--out", tmp_path / "tok.npy")
        assert code == 0, err
        records = [json.loads(line) for line in out.splitlines()]
        owners = np.array([r["query"] for r in records])
        assert {"token", "token_text"} <= set(records[0]) and set(owners) == {0, 1, 2}
        per_token, sequence = np.load(tmp_path / "tok.npy"), np.load(tmp_path / "seq.npy")
        assert len(per_token) == len(records) > 3
        summed = np.stack([per_token[owners == q].sum(0) for q in range(3)])
        np.testing.assert_allclose(summed, sequence, rtol=1e-4, atol=1e-5 * np.abs(sequence).max())
    code, _, err = run_cli("score", "-t", train, "--queries", train, "--per-token", "-q")
    _assert_one_line_error(code, err, "--per-token scores --query values")


def test_chat_answer_explained_end_to_end(tmp_path, gpt2_dir, monkeypatch):
    """The README's chat example on a tiny chat model: featurize conversations, then explain
    one answer token by token from a JSON query on stdin; a training conversation asked
    again ranks itself first (cosine: exactly 1)."""
    import io

    model, tok = _chat_model(tmp_path, gpt2_dir)
    words = sentences(10, seed=7)
    chats = [
        [{"role": "user", "content": w}, {"role": "assistant", "content": " ".join(w.split()[:3])}]
        for w in words
    ]
    data = tmp_path / "chats.parquet"
    datasets.Dataset.from_dict({"messages": chats}).to_parquet(data)
    store = tmp_path / "stores" / "chat"
    code, _, err = run_cli(
        "featurize", "--model", model, "--data", data, "--method", "cosine", "--out", store, "-q"
    )
    assert code == 0, err
    query = json.dumps({"messages": chats[4]})
    monkeypatch.setattr("sys.stdin", io.StringIO(query + "\n"))
    args = ("score", "-t", store, "--query", "-", "--method", "cosine", "--format", "jsonl")
    code, out, err = run_cli(*args, "--top", "3")
    assert code == 0, err
    ranked = [json.loads(line) for line in out.splitlines()]
    assert ranked[0]["index"] == 4 and ranked[0]["score"] == pytest.approx(1.0, abs=1e-3)
    monkeypatch.setattr("sys.stdin", io.StringIO(query + "\n"))
    code, out, err = run_cli(*args, "--per-token", "--top", "2")
    assert code == 0, err
    tokens = [json.loads(line) for line in out.splitlines()]
    answer = tok.apply_chat_template(chats[4])["input_ids"]
    prompt = tok.apply_chat_template(chats[4][:1], add_generation_prompt=True)["input_ids"]
    assert len(tokens) == 2 * (len(answer) - len(prompt))  # each answer token, top 2 each
    assert {r["token_text"] for r in tokens} <= {tok.decode([t]) for t in answer}


def test_a_plain_text_store_takes_text_and_prompt_completion_objects(tmp_path, gpt2_dir, text_data):
    """`{"text": t}` is the text t (it was scored as the literal JSON); a prompt/completion
    object attributes the completion given the prompt, with no EOS added: with an empty
    prompt it is the text itself, with a prompt it differs; an empty text is refused."""
    train = tmp_path / "train"
    code, _, err = run_cli("featurize", "--model", gpt2_dir, "--data", text_data, "--out", train,
                           "--proj-dim", "4", "--device", "cpu", "-q")  # fmt: skip
    assert code == 0, err

    def scores(*values) -> np.ndarray:
        out = tmp_path / "s.npy"
        args = [a for v in values for a in ("--query", v)]
        code, _, err = run_cli("score", "-t", train, "--method", "tracin", *args, "--out", out,
                               "-q")  # fmt: skip
        assert code == 0, err
        return np.load(out)

    text = "the cat sat on the mat"
    plain = scores(text)
    np.testing.assert_array_equal(scores(json.dumps({"text": text})), plain)
    whole = scores(json.dumps({"prompt": "", "completion": text}))
    np.testing.assert_allclose(whole, plain, rtol=1e-5, atol=1e-6 * np.abs(plain).max())
    answer = scores(json.dumps({"prompt": "the cat", "completion": " sat on the mat"}))
    assert not np.allclose(answer, plain, rtol=0.05)
    for bad, phrase in (("", "empty query"), ('{"messages": []}', "plain-text store")):
        _assert_one_line_error(*run_cli("score", "-t", train, "--query", bad)[::2], phrase)
    mixed = run_cli("score", "-t", train, "--query", text, "--query",
                    json.dumps({"prompt": "a", "completion": " b"}))  # fmt: skip
    _assert_one_line_error(mixed[0], mixed[2], "two calls")
