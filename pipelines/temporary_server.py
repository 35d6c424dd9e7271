"""Prefect's temporary API server for `tpl run`, started before the pipeline's imports.

Without a configured API URL, a Prefect flow starts a temporary server on its first API call: it
imports Prefect's server package and then waits for uvicorn to boot, all after the pipeline's
own imports, one after the other (bench/RESULTS.md, "Pipeline overhead"). Started first, the
server boots in its own process, on the other core, while this one imports Prefect, MLflow and
the stages; the flow then talks to it as to any server, and it is stopped when the process
exits.

It runs what Prefect's own temporary server runs (`prefect.server.api.server.
SubprocessASGIServer`): uvicorn on the API's app factory, UI off, in ephemeral mode (only the
services a temporary server needs), on the database under PREFECT_HOME. This module imports
nothing of Prefect: that is the point.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

# Prefect's own allowance for its temporary server, honoured here too (the Makefile raises it).
STARTUP_TIMEOUT_VARIABLE = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
DEFAULT_STARTUP_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 10.0
FLUSH_TIMEOUT_SECONDS = 5.0
POLL_SECONDS = 0.1


class TemporaryServer:
    """A Prefect API server in a child process on a free port of 127.0.0.1."""

    def __init__(self) -> None:
        prefect_spec = importlib.util.find_spec("prefect")
        if prefect_spec is None or prefect_spec.origin is None:
            raise RuntimeError("prefect is not installed")
        self.port = _free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(Path(prefect_spec.origin).parent.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={
                **os.environ,
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
            },
            stdin=subprocess.DEVNULL,
        )
        atexit.register(self.stop)  # however the process ends

    def wait_until_ready(self, timeout: float | None = None) -> None:
        """Block until the API answers its health check; RuntimeError if it exits or times out."""
        limit = timeout if timeout is not None else _startup_timeout()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise RuntimeError(f"Prefect's temporary server exited with code {code}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response,
            ):
                if response.status == 200:
                    return
            time.sleep(POLL_SECONDS)
        self.stop()
        raise RuntimeError(
            f"Prefect's temporary server did not answer within {limit:.0f} s "
            f"(raise {STARTUP_TIMEOUT_VARIABLE})"
        )

    def stop_after_flush(self) -> None:
        """Send the logs and events Prefect still holds for this server, then stop it."""
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=FLUSH_TIMEOUT_SECONDS)
        EventsWorker.drain_all(timeout=FLUSH_TIMEOUT_SECONDS)
        self.stop()

    def stop(self) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_unless_configured() -> TemporaryServer | None:
    """A starting temporary server, or None when PREFECT_API_URL names a server to use or Prefect
    is already imported (a flow in this process may already have a server of its own).

    A URL set in a Prefect profile is only known once Prefect is imported: the caller stops the
    server then (see `transformer_pl.cli`)."""
    if os.environ.get("PREFECT_API_URL") or "prefect" in sys.modules:
        return None
    return TemporaryServer()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _startup_timeout() -> float:
    value = os.environ.get(STARTUP_TIMEOUT_VARIABLE)
    return float(value) if value else DEFAULT_STARTUP_TIMEOUT_SECONDS
