"""A real ``mrledger serve`` under the anonymous requests of issue 14 that used to hurt it: deep JSON (a
segfault), a chunked body past the limit (read whole), a huge header (buffered whole), and ``/metrics``
closed by ``MRL_METRICS_TOKEN``.
One node for all of them: starting serve (anvil, the dev PKI) is the expensive part."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mrledger.http.protocol import MAX_HEADER_BYTES
from mrledger.node.settings import MAX_BODY_BYTES
from tests.http.test_input_limits import _send_head_until_answered, _stream_until_answered, kernel_buffers
from tests.node.test_serve import Node, _alive, http_client, node  # noqa: F401  (the fixture)

pytestmark = pytest.mark.anvil

SCRAPE_TOKEN = "scrape-token-for-the-test"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_a_real_serve_survives_deep_json_and_chunked_floods(node: Node) -> None:  # noqa: F811
    node.env["MRL_METRICS_TOKEN"] = SCRAPE_TOKEN
    node.start()
    assert node.proc is not None
    pid = node.proc.pid
    with http_client(base_url=f"http://127.0.0.1:{node.port}") as client:
        for path in ("/v1/verify", "/v1/decisions"):
            for body in (b"[" * 80_000, b'{"a":' * 80_000):
                r = client.post(path, content=body, headers={"Content-Type": "application/json"})
                assert r.status_code == 400, (path, r.status_code, r.text[:200])
                assert r.headers["content-type"] == "application/problem+json"
                assert "nests deeper than 128 levels" in r.json()["detail"]
                assert _alive(pid) and node.proc.poll() is None
        before = _rss_mb(pid)
        sent, status, _ = _stream_until_answered(
            node.port, "/v1/verify", {"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
            total=300 * 1024 * 1024)
        # The client's count includes what both kernels buffer (tests/http/test_input_limits.py counts the
        # server's own reads); 300 MiB were read whole before.
        assert status == 413 and sent < MAX_BODY_BYTES + kernel_buffers() + 1024 * 1024
        time.sleep(0.2)
        assert node.proc.poll() is None
        grew = _rss_mb(pid) - before
        assert grew < 100, f"serve grew by {grew:.0f} MB on a refused chunked body"
        before = _rss_mb(pid)
        sent, status, _ = _send_head_until_answered(node.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ",
                                                    b"h" * 65536, 256 * 1024 * 1024)
        # A 64 MiB header was buffered whole, then a 200.
        assert status == 431 and sent < MAX_HEADER_BYTES + kernel_buffers() + 1024 * 1024
        assert _rss_mb(pid) - before < 50
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
        scraped = client.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE_TOKEN}"})
        assert scraped.status_code == 200 and "mrledger_database_up 1.0" in scraped.text
        assert client.get("/readyz").status_code == 200
    assert SCRAPE_TOKEN not in node.log
