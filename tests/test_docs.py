"""The docs cannot rot: the site builds with `mkdocs build --strict` (a broken link or a
missing page fails it), every `attrib` command shown in README.md or docs/ names a command
and flags that exist, the README's five-minute tour runs as written on a tiny ResNet, and the
site's home page repeats the README's tour and method table word for word."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from helpers import run_cli
from PIL import Image

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TOUR_MARK = "<!-- tested: tests/test_docs.py runs this block on a tiny ResNet -->"


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """Each `attrib ...` command of a shell block (also after a launcher's `--`), continuation
    lines joined, as argv (after the pipes and redirections a shell would take away)."""
    joined = re.sub(r"\\\n\s*", " ", block)
    found = []
    for line in joined.splitlines():
        line = line.split(" #")[0].strip()
        for part in re.split(r"\s(?:\||&&|;)\s", line):
            # `attrib ...`, or a launcher's `torchrun ... -- attrib ...`
            launched = re.search(r"(?:^|\s--\s)(attrib\s.*)$", part.strip())
            if launched:
                words = shlex.split(launched[1].split(" < ")[0].split(" > ")[0], comments=True)
                found.append(words)
    return found


def _all_commands() -> list[tuple[str, list[str]]]:
    return [
        (page.name, argv)
        for page in PAGES
        for block in _bash_blocks(page.read_text())
        for argv in _commands(block)
    ]


def test_the_docs_show_commands(tmp_path):
    # The scan finds what it should (a scan that finds nothing would pass everything).
    assert len(_all_commands()) > 60


@pytest.mark.parametrize(
    "page, argv", _all_commands(), ids=lambda v: v if isinstance(v, str) else " ".join(v)[:60]
)
def test_every_command_shown_exists_with_those_flags(page, argv):
    from attrib_cli.app import app

    command = typer.main.get_command(app)
    words = argv[1:]
    while hasattr(command, "commands") and words and not words[0].startswith("-"):
        assert words[0] in command.commands, f"{page}: no command {' '.join(argv[:2])}"
        command, words = command.commands[words[0]], words[1:]
    known = {name for param in command.params for name in (*param.opts, *param.secondary_opts)}
    known |= {"--help"}
    flags = {w.split("=")[0] for w in words if w.startswith("--")}
    assert flags <= known, f"{page}: {' '.join(argv)}: unknown {sorted(flags - known)}"


def test_the_site_builds_strictly(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    if not mkdocs.exists():
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "magic" / "index.html").exists()


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end, text.index(start))]


def test_the_home_page_repeats_the_readme_tour_and_methods():
    readme = (ROOT / "README.md").read_text().replace("](docs/", "](")
    home = (ROOT / "docs" / "index.md").read_text()
    for start, end in (("## Five minutes", "![An HTML"), ("## Methods", "## Documentation")):
        assert (
            _section(readme, start, end).strip()
            == _section(home + "\n## Documentation", start, end).strip()
        )


def test_the_readme_tour_runs_as_written(tmp_path, resnet_dir, image_data, monkeypatch):
    readme = (ROOT / "README.md").read_text()
    block = _bash_blocks(readme.split(TOUR_MARK)[1])[0]
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (16, 16), (120, 30, 200)).save(tmp_path / "cat.png")
    swaps = {
        "./my-model": str(resnet_dir),
        "data/train.parquet": str(image_data),
        "data/learn.parquet": str(image_data),
        "data/eval.parquet": str(image_data),
        "--subsets 20": "--subsets 3",  # 3 retrained models: the command, not the statistic
    }
    for argv in _commands(block):
        line = shlex.join(argv)
        for old, new in swaps.items():
            line = line.replace(old, new)
        code, _, err = run_cli(*shlex.split(line)[1:])
        assert code == 0, f"{line}\n{err}"
    page = (tmp_path / "report.html").read_text()
    assert page.count('class="list pro"') == page.count('class="list opp"') == 1
    assert (tmp_path / "gt.npz").exists() and (tmp_path / "weights.safetensors").exists()
