"""Headless Chromium from the system packages, driven through chromedriver (W3C WebDriver over HTTP).

A page is read once the texts a test expects are visible, not after a fixed time, and a page can be
clicked on (the Plots toggle on an asset's overview).
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.ports import free_port, wait_for_port
from tests.support.waiting import wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars"]
#: What Dagster's UI keeps in localStorage once a user has dismissed its first-visit "Join the Dagster
#: community" dialog (`CommunityNux`, shown on localhost while the key is unset; the value is JSON).
DISMISSED_FIRST_VISIT_DIALOG = {"communityNux": json.dumps("1")}
_ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C key of an element reference


class Browser:
    """One Chromium window of `width` x `height` in a fresh profile; use it as a context manager."""

    def __init__(self, width: int = 1600, height: int = 1000) -> None:
        assert CHROMIUM and CHROMEDRIVER, "chromium and chromium-driver are not installed"
        port = free_port()
        self._profile = tempfile.TemporaryDirectory(prefix="iot-chromium-")
        self._driver = subprocess.Popen(
            [CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._base = f"http://127.0.0.1:{port}"
        self._session = ""
        try:
            wait_for_port("127.0.0.1", port, timeout=30, process=self._driver)
            options = {
                "binary": CHROMIUM,
                "args": [*FLAGS, f"--window-size={width},{height}", f"--user-data-dir={self._profile.name}"],
            }
            created = self._call(
                "POST",
                "/session",
                {"capabilities": {"alwaysMatch": {"goog:chromeOptions": options}}},
                session=False,
            )
            self._session = created["sessionId"]
            self._size_viewport(width, height)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._session:
            with contextlib.suppress(OSError, RuntimeError):  # the browser may be gone already
                self._call("DELETE", "")
            self._session = ""
        self._driver.terminate()
        try:
            self._driver.wait(10)
        except subprocess.TimeoutExpired:
            self._driver.kill()
            self._driver.wait(10)
        self._profile.cleanup()

    def _call(self, method: str, path: str, body: object = None, *, session: bool = True) -> Any:
        url = f"{self._base}/session/{self._session}{path}" if session else f"{self._base}{path}"
        data = json.dumps({} if body is None else body).encode() if method == "POST" else None
        request = urllib.request.Request(
            url, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"WebDriver {method} {path}: {exc.read().decode(errors='replace')}") from exc

    def _size_viewport(self, width: int, height: int) -> None:
        """Make the page area (what a screenshot shows) `width` x `height`: the window is that plus
        the browser's own frame."""
        script = "return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight]"
        frame_w, frame_h = self._call("POST", "/execute/sync", {"script": script, "args": []})
        self._call("POST", "/window/rect", {"width": width + frame_w, "height": height + frame_h})

    def set_local_storage(self, origin: str, items: dict[str, str]) -> None:
        """Store `items` for `origin` before any of its pages runs: a plain response of that origin
        (`/server_info`, JSON) is opened to reach its storage."""
        self._call("POST", "/url", {"url": f"{origin}/server_info"})
        self._call(
            "POST",
            "/execute/sync",
            {
                "script": "for (const [k, v] of Object.entries(arguments[0])) localStorage.setItem(k, v);",
                "args": [items],
            },
        )

    def visible_text(self) -> str:
        script = {"script": "return document.body.innerText", "args": []}
        return str(self._call("POST", "/execute/sync", script))

    def wait_for_texts(self, texts: Iterable[str], timeout_s: float = 90) -> str:
        """The page's visible text once every one of `texts` is in it; AssertionError naming the missing
        ones when they are not within `timeout_s`."""
        wanted = list(texts)

        def shown_with_all() -> str | None:
            shown = self.visible_text()
            return shown if all(text in shown for text in wanted) else None

        if (shown := wait_until(shown_with_all, timeout_s, interval_s=0.5)) is not None:
            return shown
        missing = [text for text in wanted if text not in self.visible_text()]
        raise AssertionError(f"{missing} not shown at {self._call('GET', '/url')}")

    def wait_for_texts_gone(self, texts: Iterable[str], timeout_s: float = 60) -> None:
        """Until none of `texts` (spinners, "Loading…") is visible any more."""
        unwanted = list(texts)
        if not wait_until(
            lambda: not any(text in self.visible_text() for text in unwanted), timeout_s, interval_s=0.5
        ):
            raise AssertionError(f"still shown after {timeout_s} s: {self.visible_text()[:500]}")

    def open(self, url: str, expect: Iterable[str], timeout_s: float = 90) -> str:
        """Load `url`; its visible text once `expect` is all shown."""
        self._call("POST", "/url", {"url": url})
        return self.wait_for_texts(expect, timeout_s)

    def _find(self, xpath: str, timeout_s: float = 30) -> dict[str, str]:
        """The first element at `xpath`, waiting for it while the page (re)renders."""
        query = {"using": "xpath", "value": xpath}

        def element() -> dict[str, str] | None:
            try:
                return self._call("POST", "/element", query)
            except RuntimeError:
                return None

        if found := wait_until(element, timeout_s, interval_s=0.5):
            return found
        return self._call("POST", "/element", query)  # raises the WebDriver's error: no such element

    def click_button(self, label: str) -> None:
        """Click the first button whose visible text is `label`."""
        found = self._find(f"//button[normalize-space(.)='{label}']")
        self._call("POST", f"/element/{found[_ELEMENT]}/click", {})

    def scroll_to(self, text: str) -> None:
        """Scroll the first element whose own text is `text` to the top of its scrolling area."""
        found = self._find(f"//*[normalize-space(text())='{text}']")
        script = "arguments[0].scrollIntoView({block: 'start'});"
        self._call("POST", "/execute/sync", {"script": script, "args": [found]})

    def screenshot(self, path: Path, settle_s: float = 1.5) -> Path:
        """The window as a PNG, after `settle_s` for transitions and charts to finish drawing."""
        time.sleep(settle_s)
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))
        return path
