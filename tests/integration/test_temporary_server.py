"""The temporary Prefect server `tpl run` starts before its imports: it serves Prefect's API (a
flow run is recorded through it), and stopping it ends its process and frees its port."""

from __future__ import annotations

import socket
import sys
import urllib.request

import pytest

from pipelines.temporary_server import TemporaryServer, start_unless_configured


def _port_is_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_server_serves_prefect_and_stops() -> None:
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    server = TemporaryServer()
    try:
        server.wait_until_ready()
        with urllib.request.urlopen(f"{server.api_url}/health", timeout=10) as response:
            assert response.status == 200

        @flow(name="through-the-temporary-server")
        def answer() -> int:
            return 42

        with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_UI_URL: ""}):
            state = answer(return_state=True)
            assert state.result() == 42
            with get_client(sync_client=True) as client:
                recorded = client.read_flow_run(state.state_details.flow_run_id)
        assert recorded.state is not None and recorded.state.is_completed()
        process = server._process
        assert process is not None
    finally:
        server.stop_after_flush()
    assert process.poll() is not None, "the server process is still running"
    assert not _port_is_open(server.port)


def test_no_server_when_one_is_configured_or_prefect_is_loaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert start_unless_configured() is None
    monkeypatch.delenv("PREFECT_API_URL")
    # Already imported (as here): a flow of this process may have started Prefect's own server
    # on the same database.
    assert "prefect" in sys.modules
    assert start_unless_configured() is None


def test_a_server_that_cannot_start_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://nobody@127.0.0.1:1/x"
    )
    server = TemporaryServer()
    with pytest.raises(RuntimeError, match=r"temporary server (exited|did not answer)"):
        server.wait_until_ready(timeout=60)
    server.stop()
