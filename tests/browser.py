"""Headless Chromium (Debian's package) for the report tests; they skip, saying why, where
it is not installed."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browser(page, screenshot):
    """(the DOM after load, the console's messages) from headless Chromium, and a PNG."""
    if CHROMIUM is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium)")
    common = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,1400",
    ]
    dom = subprocess.run(
        [*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    )
    subprocess.run(
        [*common, f"--screenshot={screenshot}", page.as_uri()], capture_output=True, timeout=120
    )
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    return dom.stdout, console


def images_decode(page_text):
    sources = re.findall(r'src="data:image/png;base64,([^"]+)"', page_text)
    for data in sources:
        Image.open(io.BytesIO(base64.b64decode(data))).verify()
    return len(sources)
