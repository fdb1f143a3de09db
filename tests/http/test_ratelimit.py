"""The per-address limit of anonymous verification (http/ratelimit.py; issue 14, finding 9)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from mrledger.http.app import create_app
from mrledger.http.ratelimit import RateLimiter, client_key, retry_after
from mrledger.node.settings import Settings
from tests.harness import Api
from tests.http.test_hospitals import assert_problem
from tests.http.test_results import record, submit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2, burst=3, clock=clock)
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a") == pytest.approx(0.5)  # one token per half second
    assert limiter.take("b") == 0  # another address has its own bucket
    clock.now += 0.5
    assert limiter.take("a") == 0 and limiter.take("a") == pytest.approx(0.5)
    clock.now += 60
    assert [limiter.take("a") for _ in range(4)][:3] == [0, 0, 0]  # refilled to the burst, not beyond


def test_a_refused_request_spends_nothing_and_retry_after_is_whole_seconds() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.1, burst=1, clock=clock)
    assert limiter.take("a") == 0
    assert limiter.take("a") == pytest.approx(10) and limiter.take("a") == pytest.approx(10)  # hammering adds none
    clock.now += 10
    assert limiter.take("a") == 0
    assert (retry_after(0.01), retry_after(1.0), retry_after(9.2)) == ("1", "1", "10")


def test_memory_is_bounded_by_the_number_of_buckets() -> None:
    limiter = RateLimiter(rate=1, burst=1, max_clients=100, clock=Clock())
    for i in range(10_000):
        limiter.take(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100


def test_ipv6_clients_are_keyed_by_their_64() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == client_key("192.0.2.7") == "192.0.2.7"
    assert client_key(None) == "?" and client_key("testclient") == "testclient"


def test_zero_switches_the_limit_off_and_settings_carry_it() -> None:
    assert RateLimiter(rate=0, burst=1).take("a") == 0
    settings = Settings(verify_rate_limit=0.5, verify_burst=7)
    assert (settings.verify_rate_limit, settings.verify_burst) == (0.5, 7)
    assert Settings().verify_rate_limit > 0  # on by default
    with pytest.raises(ValueError):
        Settings(verify_rate_limit=-1)


def _client(api: Api, limiter: RateLimiter, host: str = "192.0.2.10") -> TestClient:
    return TestClient(create_app(api.ledger, verify_limit=limiter), client=(host, 40000))


def _receipt(api: Api) -> dict[str, Any]:
    assert submit(api, record(1)).status_code == 202
    api.ledger.store.seal("gz-001", 100)
    receipt = api.ledger.store.receipt("gz-001", "R1")
    assert receipt is not None
    return {"receipt": receipt.to_obj()}


def test_anonymous_verification_over_the_limit_is_a_429_with_retry_after(api: Api) -> None:
    body = _receipt(api)
    clock = Clock()
    limiter = RateLimiter(rate=1, burst=2, clock=clock)
    client = _client(api, limiter)
    assert [client.post("/v1/verify", json=body).status_code for _ in range(2)] == [200, 200]
    refused = client.post("/v1/verify", json=body)
    problem = assert_problem(refused, 429, "too-many-requests")
    assert refused.headers["retry-after"] == "1" and "1 receipt(s) per second" in problem["detail"]
    # Refused before the body is read or parsed: malformed JSON is a 429 too, not a 400.
    assert client.post("/v1/verify", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 429
    # Another address is not affected, and the bucket refills with time.
    assert _client(api, limiter, "198.51.100.1").post("/v1/verify", json=body).status_code == 200
    clock.now += 1
    assert client.post("/v1/verify", json=body).status_code == 200


@pytest.mark.parametrize("role", ["doctor", "auditor", "admin"])
def test_tokens_are_not_limited(api: Api, role: str) -> None:
    body = _receipt(api)
    client = _client(api, RateLimiter(rate=1, burst=1, clock=Clock()))
    assert client.post("/v1/verify", json=body).status_code == 200
    assert client.post("/v1/verify", json=body).status_code == 429
    for _ in range(5):
        assert client.post("/v1/verify", json=body, headers=api.auth(role)).status_code == 200
    # An unknown token is no way around the limit: it is refused outright.
    assert client.post("/v1/verify", json=body, headers={"Authorization": "Bearer mrl_nope"}).status_code == 401


def test_other_routes_are_not_limited(api: Api) -> None:
    client = _client(api, RateLimiter(rate=1, burst=1, clock=Clock()))
    assert client.post("/v1/verify", json={"receipt": {}}).status_code == 422
    assert client.post("/v1/verify", json={"receipt": {}}).status_code == 429
    assert [client.get("/v1/catalogue").status_code for _ in range(3)] == [200, 200, 200]
