"""Headless Chromium from the system package: the rendered DOM of a page and a screenshot of it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]


def rendered_dom(url: str, budget_ms: int = 20_000) -> str:
    """The page's DOM after its scripts ran for `budget_ms` of virtual time."""
    assert CHROMIUM, "chromium is not installed"
    result = subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--virtual-time-budget={budget_ms}",
            f"--timeout={budget_ms * 2}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout


def screenshot(url: str, path: Path, budget_ms: int = 20_000, size: str = "1600,1000") -> Path:
    assert CHROMIUM, "chromium is not installed"
    subprocess.run(
        [
            CHROMIUM,
            *FLAGS,
            f"--virtual-time-budget={budget_ms}",
            f"--window-size={size}",
            f"--screenshot={path}",
            url,
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    return path
