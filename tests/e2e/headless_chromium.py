"""Headless Chromium driven over the Chrome DevTools Protocol, for tests that check what a web
page shows once its scripts have run (a React app's DOM, not the HTML the server sent).

`chromium --dump-dom` hands back the DOM when a fixed virtual-time budget is spent, which is
enough for a static page; a page that must be waited for, clicked and scrolled (a virtualised
grid renders only the rows and columns in view) needs DevTools. Commands go over the page's
WebSocket with `websockets` (a dependency of Prefect, pinned in requirements.lock).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
START_TIMEOUT_SECONDS = 60
COMMAND_TIMEOUT_SECONDS = 60
POLL_SECONDS = 0.2


def find_chromium() -> str | None:
    """The first Chromium or Chrome binary on PATH, or None."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


class DevToolsError(RuntimeError):
    """A DevTools command, or a script run in the page, failed."""


class Page:
    """One browser tab: DevTools commands, scripts run in the page, and waits on them."""

    def __init__(self, connection: ClientConnection) -> None:
        self._connection = connection
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a DevTools command and return its result."""
        command_id = next(self._ids)
        self._connection.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._connection.recv(timeout=COMMAND_TIMEOUT_SECONDS))
            # Events (nothing here enables any domain, but a few arrive anyway) are dropped.
            if message.get("id") != command_id:
                continue
            if "error" in message:
                raise DevToolsError(f"{method}: {message['error']}")
            return message["result"]

    def evaluate(self, expression: str) -> Any:
        """The value, as JSON, of a JavaScript expression run in the page (a promise awaited)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise DevToolsError(details.get("exception", {}).get("description", details["text"]))
        return result["result"].get("value")

    def poll(self, expression: str, timeout: float) -> Any:
        """Evaluate `expression` until its value is truthy or `timeout` seconds have passed;
        returns the last value, so that the caller can say what the page showed instead."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        return value

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def insert_text(self, text: str) -> None:
        """Type `text` into the focused element, as a user's keyboard would."""
        self.call("Input.insertText", text=text)


@contextmanager
def headless_chromium(
    binary: str, log: Path, width: int = 1600, height: int = 1000
) -> Iterator[Page]:
    """A fresh headless Chromium (its own throwaway profile) with one blank tab; stopped, with
    its renderer and GPU processes, on exit. Its own output goes to `log`."""
    profile = Path(tempfile.mkdtemp(prefix="tpl-chromium-"))
    command = [
        binary,
        "--headless=new",
        "--no-sandbox",  # Chromium's sandbox refuses to start as root (CI containers)
        "--disable-gpu",
        "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm
        "--no-first-run",
        "--remote-debugging-port=0",  # a free port, written to the profile's DevToolsActivePort
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "about:blank",
    ]
    with log.open("wb") as output:
        # A process group of its own, so that stopping it stops its helper processes too.
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, process_group=0
        )
    try:
        port = _devtools_port(profile, process, log)
        with connect(_page_websocket_url(port), max_size=None) as connection:
            yield Page(connection)
    finally:
        _stop(process)
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_port(profile: Path, process: subprocess.Popen[bytes], log: Path) -> int:
    active_port = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevToolsError(
                f"Chromium exited ({process.returncode}) before DevTools listened:\n"
                f"{log.read_text(errors='replace')[-3000:]}"
            )
        # The file's first line is the port; it may be seen before it is written in full.
        lines = active_port.read_text().splitlines() if active_port.is_file() else []
        if len(lines) >= 2:
            return int(lines[0])
        time.sleep(POLL_SECONDS)
    raise DevToolsError(f"Chromium's DevTools did not listen within {START_TIMEOUT_SECONDS} s")


def _page_websocket_url(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
        targets = json.load(response)
    return next(target["webSocketDebuggerUrl"] for target in targets if target["type"] == "page")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to Chromium's process group (its helpers outlive a crashed browser process),
    SIGKILL if it is still there 20 s later."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
