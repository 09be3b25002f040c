"""`score --html REPORT.html`: the answer as a person judges it, in one self-contained file.

Per query (collapsed sections with an index at the top, so a page of 1,000 queries stays
usable): the query itself (its image, text, or prompt and completion), then its most helpful
and, with --opponents, most harmful training rows, each with its image or text, label or
caption, index and score. For --per-token records the answer is drawn token by token, each
coloured by the attribution mass of its top rows; clicking a token shows them. A --weights
file adds its per-group bar chart. Images are inlined as PNG data URIs: no network, no
external scripts or fonts.
"""

from __future__ import annotations

import base64
import html
from collections import defaultdict
from pathlib import Path

from attrib.atomic import atomic_path
from attrib.report.rows import RowReader

THUMB = 96
# C0 controls (but tab, newline, return) and DEL as their visible Unicode pictures: a raw
# NUL or ESC from the data would otherwise be written into the page as it is.
_CONTROLS = {c: chr(0x2400 + c) for c in range(32) if c not in (9, 10, 13)} | {0x7F: "\u2421"}


def _escape(text: str) -> str:
    return html.escape(str(text).translate(_CONTROLS))


STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#1d2330;
background:#fafbfc}
h1{font-size:20px;margin:0 0 4px}.meta{color:#5b6475;font-size:13px;margin-bottom:16px}
details.query{background:#fff;border:1px solid #dde2ea;border-radius:8px;margin:10px 0;
padding:10px 14px}summary{cursor:pointer;font-weight:600}
.querybox{display:flex;gap:14px;align-items:flex-start;margin:10px 0}
.lists{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.list h3{font-size:14px;margin:6px 0}.pro h3{color:#11703a}.opp h3{color:#a3261b}
.row{display:flex;gap:10px;align-items:center;border-top:1px solid #eef1f5;padding:6px 0}
.row img,.querybox img{width:96px;height:96px;image-rendering:pixelated;border-radius:4px;
border:1px solid #dde2ea;background:#fff}
.rank{font-weight:700;width:26px;text-align:right;color:#5b6475}
.score{font-variant-numeric:tabular-nums;color:#5b6475;font-size:12px}
.text{font-size:13px;max-width:520px;overflow-wrap:anywhere}
.label{display:inline-block;background:#eef1f5;border-radius:10px;padding:1px 8px;
font-size:12px;margin-right:6px}
.tok{padding:2px 1px;border-radius:3px;cursor:pointer;white-space:pre-wrap}
.tok.ctx{cursor:default;color:#8a93a3}
.tokens{font-family:ui-monospace,Menlo,monospace;font-size:14px;line-height:2;
margin:8px 0}.tokrows{display:none}.tokrows.open{display:block}
nav a{margin-right:10px;font-size:13px}svg text{font-size:10px;fill:#1d2330}
"""
SCRIPT = """
document.querySelectorAll('.tok[data-target]').forEach(function(t){t.addEventListener('click',function(){
var box=document.getElementById(t.dataset.target);document.querySelectorAll('.tokrows.open')
.forEach(function(o){if(o!==box){o.classList.remove('open')}});box.classList.toggle('open');
});});
"""


def write_report(
    path: Path,
    records: list[dict],
    train,
    queries,
    query_values,
    weights=None,
    title: str = "attrib",
    contexts: dict[int, list[str]] | None = None,
) -> Path:
    """Write the report of `records` (score's) for the training store `train`; the queries
    are rows of the query store `queries`, or the `query_values` (paths or texts). Per-token
    records: `contexts` gives each query's whole token sequence, drawn around its targets."""
    rows = RowReader(train, without="the report shows row numbers only")
    shown = {r["index"] for r in records}
    images = rows.thumbnails(sorted(shown), THUMB) if rows.has_images else {}
    texts = rows.texts(sorted(shown))
    by_query = defaultdict(list)
    for record in records:
        by_query[record["query"]].append(record)
    query_rows = RowReader(queries, "queries by number") if queries is not None else None
    contexts = contexts or {}
    sections = [
        _query_section(q, found, images, texts, query_rows, query_values, contexts.get(q))
        for q, found in sorted(by_query.items())
    ]
    index = "".join(f'<a href="#q{q}">query {q}</a>' for q in sorted(by_query))
    body = [
        f"<h1>{_escape(title)}</h1>",
        f'<div class="meta">{_plural(len(by_query), "query", "queries")}; higher scores = '
        f"more helpful; training store {_escape(str(train.path))}</div>",
        _weights_chart(weights) if weights is not None else "",
        f"<nav>{index}</nav>" if len(by_query) > 1 else "",
        *sections,
    ]
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_escape(title)}</title><style>{STYLE}</style></head><body>"
        + "".join(body)
        + f"<script>{SCRIPT}</script></body></html>"
    )
    with atomic_path(path, ".html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return Path(path)


def _query_section(q, records, images, texts, query_rows, query_values, context) -> str:
    head = _query_box(q, records[0], query_rows, query_values)
    if "token" in records[0]:
        content = _tokens(q, records, images, texts, context)
    else:
        content = _lists(records, images, texts)
    first = records[0]
    preview = _escape(str(first.get("query_preview") or f"row {first.get('query_id')}"))
    minus = ""
    if "contrast" in first:  # scores are the query's minus its contrast's
        contrast = first["contrast"]
        named = f"row {contrast}" if isinstance(contrast, int) else str(contrast)[:120]
        minus = f" <b>minus</b> {_escape(named)}"
    return (
        f'<details class="query" id="q{q}"{" open" if q < 20 else ""}><summary>query {q}: '
        f"{preview[:120]}{minus}</summary>{head}{content}</details>"
    )


def _query_box(q, record, query_rows, query_values) -> str:
    parts = []
    if query_rows is not None:
        index = int(record["query_id"])
        if query_rows.has_images:
            parts.append(_img(query_rows.thumbnails([index], THUMB).get(index)))
        parts.append(_text_block(query_rows.texts([index]).get(index, {})))
    elif query_values is not None:
        value = query_values[q]
        image = RowReader.file_thumbnail(value, THUMB)
        parts.append(_img(image) if image else f'<div class="text">{_escape(value)}</div>')
    if "explains" in record:  # a file has no label: the model's prediction is explained
        parts.append(
            f'<span class="label">explains class {_escape(record["explains"])}</span>'
            '<span class="meta">the model\'s prediction</span>'
        )
    return f'<div class="querybox"><b>the query</b>{"".join(parts)}</div>'


def _lists(records, images, texts) -> str:
    names = {"proponents": ("pro", "most helpful"), "opponents": ("opp", "most harmful")}
    groups = defaultdict(list)
    for record in records:
        groups[record.get("list", "proponents")].append(record)
    columns = []
    for name in ("proponents", "opponents"):
        if name in groups:
            css, heading = names[name]
            if name == "opponents" and min(r["score"] for r in groups[name]) >= 0:
                # Methods whose scores are never negative (DAS squares them) have no
                # harmful rows to show: the bottom of the ranking is the least helpful.
                heading = "least helpful (no score is negative)"
            rows = "".join(_row(r, images, texts) for r in groups[name])
            columns.append(f'<div class="list {css}"><h3>{heading}</h3>{rows}</div>')
    return f'<div class="lists">{"".join(columns)}</div>'


def _row(record, images, texts) -> str:
    index = record["index"]
    return (
        f'<div class="row"><span class="rank">{record["rank"]}</span>'
        f"{_img(images.get(index))}<div>{_text_block(texts.get(index, {}))}"
        f'<div class="score">row {index} · score {record["score"]:.4g}</div></div></div>'
    )


def _text_block(fields: dict) -> str:
    label = fields.get("label")
    text = fields.get("text")
    chip = f'<span class="label">label {_escape(str(label))}</span>'
    parts = [chip] if label is not None else []
    if text:
        parts.append(f'<div class="text">{_escape(text)}</div>')
    return "".join(parts)


def _img(data: bytes | None) -> str:
    if not data:
        return ""
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _tokens(q, records, images, texts, context: list[str] | None = None) -> str:
    """The answer token by token, coloured by the summed scores of each token's top rows;
    the tokens of `context` that are no target (the first, a prompt's) drawn plain."""
    by_token = defaultdict(list)
    for record in records:
        by_token[(record["token"], record["token_text"])].append(record)
    # A token's mass is its proponents' (with --opponents the harmful rows are listed beside
    # them, not summed in: the colour says how strongly the top rows helped).
    masses = {
        key: sum(r["score"] for r in rows if r.get("list") != "opponents")
        for key, rows in by_token.items()
    }
    scale = max((abs(m) for m in masses.values()), default=1.0) or 1.0
    strongest = max(masses, key=masses.get, default=None)
    spans, boxes = {}, []
    for position, text in enumerate(context or []):
        spans[position] = (
            f'<span class="tok ctx" title="context: not attributed">{_escape(text)}</span>'
        )
    for n, (key, rows) in enumerate(sorted(by_token.items())):
        mass = masses[key] / scale
        colour = (
            f"rgba(17,112,58,{abs(mass):.2f})" if mass >= 0 else f"rgba(163,38,27,{abs(mass):.2f})"
        )
        target = f"q{q}t{n}"
        spans[key[0]] = (
            f'<span class="tok" style="background:{colour}" data-target="{target}" '
            f'title="mass {masses[key]:.3g}">{_escape(key[1])}</span>'
        )
        listed = _lists(rows, images, texts)
        shown = " open" if key == strongest else ""  # a first view shows what a click gives
        boxes.append(
            f'<div class="tokrows{shown}" id="{target}"><h3>token '
            f"&ldquo;{_escape(key[1].strip() or key[1])}&rdquo; (position {key[0]})</h3>"
            f"{listed}</div>"
        )
    hint = (
        '<div class="meta">each predicted token, coloured by the summed scores of its most '
        "helpful training rows (darker: more; red where even those are negative); click a "
        "token for its rows (the strongest is open)</div>"
    )
    strip = "".join(spans[p] for p in sorted(spans))
    return f'{hint}<div class="tokens">{strip}</div>{"".join(boxes)}'


def _weights_chart(artifact) -> str:
    """The learned weights as an inline SVG bar chart (1 = uniform)."""
    weights = [float(w) for w in artifact.weights]
    top = max(weights + [1.0])
    width, height, bar = max(320, 14 * len(weights)), 120, 12
    bars, labels = [], []
    for i, (group, w) in enumerate(zip(artifact.groups, weights)):
        h = 100 * w / top
        bars.append(
            f'<rect x="{i * 14}" y="{105 - h:.1f}" width="{bar}" height="{h:.1f}" '
            f'fill="#3b6fb6"><title>{_escape(group)}: {w:.3f}</title></rect>'
        )
    line = 105 - 100 / top
    labels.append(
        f'<line x1="0" x2="{width}" y1="{line:.1f}" y2="{line:.1f}" stroke="#999" '
        f'stroke-dasharray="4 3"/><text x="2" y="{line - 3:.1f}">1 = uniform</text>'
    )
    return (
        f'<div class="meta">learned weights of {len(weights)} groups (hover for names)</div>'
        f'<svg width="{width}" height="{height}" role="img">{"".join(bars)}{"".join(labels)}'
        "</svg>"
    )


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
