"""pyproject lists every package (a missing one installs without error and fails at run)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_is_listed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    found = set()
    for top, name in (("attrib", "attrib"), ("cli", "attrib_cli")):
        for init in (ROOT / top).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *parts)))
    assert listed == found


def test_the_wheel_builds_without_warnings_and_ships_the_ground_truth(tmp_path):
    """`pip wheel .` prints no setuptools warning (package data declared, every package
    listed) and the wheel holds the diffusion demo's ground truth and every package."""
    import importlib.util
    import subprocess
    import sys
    import zipfile

    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", str(ROOT),
         "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    # pip's notes on this machine's index configuration are not the build's warnings
    lines = [line for line in result.stderr.splitlines() if "Location '" not in line]
    noise = [line for line in lines if "warning" in line.lower()]
    assert not noise, noise
    (wheel,) = tmp_path.glob("attrib-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("attrib/examples/groundtruth/") and n.endswith(".npz") for n in names)
    assert "attrib/integrations/trainer.py" in names
