"""Query features: from a featurized query store, or featurized on the fly from image files or
text with exactly the training store's settings (model, revision, adapter, output function,
modules, projection seeds), so both sides are gradients of the same function in the same space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from attrib.data import image_problem
from attrib.errors import AttribError
from attrib.featurize.modules import select_modules
from attrib.featurize.projection import ProjectionSpec
from attrib.featurize.representation import MODULE, featurizer_for
from attrib.methods import output_pairs
from attrib.store import Store
from attrib.store.kinds import is_representation
from attrib.store.manifest import settings_diff
from attrib.tasks import load_task_from_settings

# Settings a query's features must share with the training store's to be comparable.
MATCHING = (
    "model.fingerprint",
    "model.adapter",
    "task",
    "projection",
    "modules",
)


@dataclass
class Queries:
    features: torch.Tensor  # (Q x D) float32, in the training store's layout
    ids: list  # what identifies each query in output: a row index, a path or a text
    # Per-token rows (--per-token): for each row, (query number, token position, token text).
    tokens: list[tuple[int, int, str]] | None = None
    # Per-token: each query's whole token sequence (texts by position), targets or not (the
    # first token and a prompt's are context: a report draws them uncoloured).
    contexts: dict[int, list[str]] | None = None
    # Classifier queries given as image files: the class index each one's features explain
    # (the model's prediction: a file has no label).
    explained: list[int] | None = None


def check_compatible(train: Store, settings: dict, what: str) -> None:
    differing = [
        key
        for key in settings_diff(train.settings, settings)
        if any(key == m or key.startswith(m + ".") for m in MATCHING)
    ]
    # Output functions must agree, or be a pair some method scores together (Journey-TRAK:
    # queries along their sampling trajectory, training examples with L_simple).
    outputs = (settings.get("output_function"), train.settings.get("output_function"))
    if outputs[0] != outputs[1] and outputs not in output_pairs():
        differing.append("output_function")
    if differing:
        raise AttribError(
            f"{what} was made with other settings than the training store "
            f"({', '.join(differing[:6])}); featurize both with the same model, adapter, "
            "--method, --proj-dim, --seed and modules"
        )


_WARNED_INT4: set = set()


def from_store(train: Store, queries: Store) -> Queries:
    check_compatible(train, queries.settings, f"query store {queries.path}")
    if queries.settings.get("store_dtype") == "int4" and queries.path not in _WARNED_INT4:
        _WARNED_INT4.add(queries.path)  # once: evaluate reads a query store per method
        # A query's rounding error shifts its score of every training row alike, so it does
        # not average out over rows as a training row's does (docs/quality.md, "Bits for
        # dimensions": pydoc-finetune 73.1 with int4 queries, 78.9 with float16 ones).
        from attrib import log

        log.warn(
            f"query store {queries.path} keeps its features in 4 bits, which costs LDS that "
            "int4 training rows do not; featurize queries with --store-dtype int8 or float16"
        )
    matrix = np.concatenate([queries.matrix(name) for name in train.module_names], axis=1)
    return Queries(torch.from_numpy(matrix), [int(i) for i in queries.column("index")])


def from_values(
    train: Store,
    values: list[str],
    device: str = "auto",
    batch_size: int = 16,
    trust_remote_code: bool = False,
    prompts: list[str] | None = None,
    per_token: bool = False,
    projection: ProjectionSpec | None = None,
) -> Queries:
    """Featurize image paths or texts with the training store's settings (diffusion queries
    of a text-to-image model also take one prompt per image, or one for all)."""
    from attrib.distributed import resolve_device
    from attrib.store.ensemble import is_ensemble
    from attrib.store.kinds import is_perturbed

    if not values:
        raise AttribError("no queries given: pass --query FILE_OR_TEXT, --query - or --queries")
    settings = train.settings
    if is_perturbed(train):
        raise AttribError(
            f"{train.path} holds outputs of perturbed copies: record the queries' outputs with "
            "`attrib perturb --queries` and pass --queries"
        )
    if is_ensemble(train):
        args = (device, batch_size, trust_remote_code, prompts, per_token)
        return _ensemble_values(train, values, args)
    from attrib import log

    count = f"{len(values)} quer{'y' if len(values) == 1 else 'ies'}"
    log.status(f"loading {settings['model']['source']} to featurize {count} ...")
    task = load_task_from_settings(settings, trust_remote_code)
    task.to(resolve_device(device))
    names = train.module_names
    columns, query_rows = task.query_rows(values, settings["task_options"]["columns"])
    featurizer = _featurizer(train, task, columns, projection)
    if task.query_role == "image":
        check_image_values(train, values)
    captions = _captions(task, prompts, len(values))
    if per_token and is_representation(train):
        raise AttribError(
            f"{train.path} holds hidden states pooled per sequence: --per-token needs a "
            "gradient store"
        )
    if per_token:
        return _per_token(task, featurizer, columns, query_rows, values, names)
    parts, explained = [], []
    for start in range(0, len(values), batch_size):
        chunk = values[start : start + batch_size]
        rows = {name: column[start : start + batch_size] for name, column in query_rows.items()}
        if captions is not None:
            rows["caption"] = captions[start : start + batch_size]
        batch = featurizer(rows, range(start, start + len(chunk)))
        parts.append(torch.cat([batch.features[name] for name in names], dim=1).cpu())
        if "explained" in batch.scalars:
            explained += [int(i) for i in batch.scalars["explained"].tolist()]
    return Queries(torch.cat(parts), list(values), explained=explained or None)


def _featurizer(train: Store, task, columns: dict, projection: ProjectionSpec | None):
    """The training store's featurizer for queries: its modules and projection, or (a
    representation store) its hidden states."""
    settings = train.settings
    if is_representation(train):
        featurizer = featurizer_for(task, columns, [], None, settings["output_function"],
                                    representation=True)  # fmt: skip
        if featurizer.modules[0].d_in != train.feature_dims[MODULE]:
            raise AttribError(f"the model's hidden states differ from those in {train.path}")
        return featurizer
    names = train.module_names
    selected = select_modules(task.model, include=names)
    if [spec.name for spec, _ in selected] != names:
        raise AttribError(f"the model's modules differ from those in {train.path}")
    projection = projection or ProjectionSpec.from_dict(settings["projection"])
    return featurizer_for(task, columns, selected, projection, settings["output_function"])


def _ensemble_values(train: Store, values: list[str], args: tuple) -> Queries:
    """An ensemble's query features: each member's, under its own model (featurized with its
    own store's settings), scaled by sqrt(member weight) as `attrib ensemble` scales the
    training features, side by side in member order."""
    parts, tokens, contexts = [], None, None
    for member in train.settings["ensemble"]["members"]:
        path = Path(member["store"])
        if not (path / "manifest.json").is_file():
            raise AttribError(
                f"{train.path}: its member store {path} is gone; featurize the queries with "
                "each member and pass --queries with their `attrib ensemble`"
            )
        store = Store(path)
        if store.fingerprint() != member["fingerprint"]:
            raise AttribError(
                f"{train.path}: its member store {path} changed since the ensemble was made; "
                "rebuild the ensemble"
            )
        queries = from_values(store, values, *args)
        parts.append(queries.features * float(member["weight"]) ** 0.5)
        tokens, contexts = queries.tokens, queries.contexts
    return Queries(torch.cat(parts, dim=1), list(values), tokens, contexts)


def _per_token(task, featurizer, columns, query_rows, values, names) -> Queries:
    """One row of features per target token of each query; the rows of a query sum to its
    sequence features (each token carries 1/T of the mean NLL)."""
    if not hasattr(task, "token_rows"):
        raise AttribError(f"--per-token is for language models, not {task.name} models")
    parts, tokens, contexts = [], [], {}
    for q in range(len(values)):
        rows = {name: column[q : q + 1] for name, column in query_rows.items()}
        batch = task.prepare(rows, range(q, q + 1), task.device, columns)
        expanded, positions = task.token_rows(batch)
        if not positions:
            raise AttribError(f"--query {str(values[q])[:60]!r} has no target tokens")
        features = featurizer.from_batch(expanded, range(len(positions))).features
        parts.append(torch.cat([features[name] for name in names], dim=1).cpu())
        real = batch["attention_mask"][0].bool().tolist()
        texts = [
            task.processor.decode([i]) if r else ""
            for i, r in zip(batch["input_ids"][0].tolist(), real)
        ]
        tokens += [(q, p, texts[p]) for p in positions]
        contexts[q] = texts
    return Queries(torch.cat(parts), list(values), tokens, contexts)


def _captions(task, prompts: list[str] | None, count: int) -> list[str] | None:
    conditional = getattr(task, "conditional", False)
    if not conditional:
        if prompts:
            raise AttribError("--prompt is only for text-to-image diffusion models")
        return None
    if not prompts:
        raise AttribError("this model is text-to-image: pass --prompt with the query's prompt")
    if len(prompts) == 1:
        return prompts * count
    if len(prompts) != count:
        raise AttribError(f"pass one --prompt, or one per --query ({count}), not {len(prompts)}")
    return list(prompts)


def read_query_lines(data: bytes, name: str) -> list[str]:
    """Queries one per line (texts, or JSON objects for prompt/completion and chat stores),
    blank lines skipped; a line that is not UTF-8 is named instead of reaching the tokenizer."""
    out = []
    for number, line in enumerate(data.splitlines(), 1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise AttribError(f"{name} line {number} is not UTF-8 text; convert it") from None
        if text.strip():
            out.append(text)
    return out


def check_image_values(store: Store, values: list[str]) -> None:
    """--query values of an image store: files that decode as images."""
    for value in values:
        if not _is_file(value):
            if not Path(value).suffix or " " in value:  # text, not a path
                raise AttribError(
                    f"--query {value[:60]!r}: {store.path} was made from an image model, "
                    "so queries are image files (or --queries STORE), not text"
                )
            raise AttribError(f"--query {value}: no such image file")
        problem = image_problem(value)
        if problem is not None:
            raise AttribError(f"--query {value}: the image cannot be decoded ({problem})")


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # a long text is no file name (ENAMETOOLONG, NUL bytes)
        return False


def looks_like_path(value: str) -> bool:
    """One word with a slash or a file suffix (`query.txt`, `data/q.jsonl`, `cat.png`)."""
    if not value or any(c.isspace() for c in value):
        return False
    return "/" in value or re.fullmatch(r".+\.[A-Za-z][A-Za-z0-9]{0,4}", value) is not None


def resolve_text_values(store: Store, values: list[str], texts: list[str]) -> list[str]:
    """`--query` values for a text store: an existing file is a file of queries (one per
    line), a value that looks like a path but names no file is an error (it would otherwise
    be scored as the literal string), anything else is the text itself; `--text` values are
    always literal. Image stores take `--query` values as image files (checked later)."""
    from attrib.tasks import task_class, task_names

    task = store.settings.get("task")
    if task in task_names() and task_class(task).query_role == "image":
        if texts:
            raise AttribError(f"--text: {store.path} was made from an image model; pass images")
        check_image_values(store, values)  # before the model loads: a typo fails at once
        return list(values)
    out = []
    for value in values:
        path = Path(value)
        if _is_file(value):
            if image_problem(value) is None:
                raise AttribError(
                    f"--query {value} is an image, but {store.path} was made from a {task} "
                    "model: its queries are texts (or --queries STORE)"
                )
            lines = read_query_lines(path.read_bytes(), f"--query {value}")
            if not lines:
                raise AttribError(f"--query {value} holds no queries (every line is blank)")
            out += lines
        elif looks_like_path(value):
            raise AttribError(
                f"--query {value}: no such file (to score this literal text, pass --text {value!r})"
            )
        else:
            out.append(value)
    return out + list(texts)
