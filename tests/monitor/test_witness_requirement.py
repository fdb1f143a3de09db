"""``MRL_WITNESS_K``: the node's ``POST /v1/verify`` requires k of n witnesses to vouch for an authentic result's
batch (issue 19). Two real monitors (a real node over HTTP, a real anvil) sign checkpoints into directories served
over HTTP, as a region publishes them; until they have checked the batch the verdict is ``unknown`` (failed check
``witnesses``), after it ``authentic`` with the witnesses named; a batch sealed after their last pass is not
vouched for; a witness that is down counts for nothing, and k-of-n decides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mrledger.service.witnesses import WitnessPolicy, WitnessSetupError
from tests.harness import witness_site
from tests.monitor.test_monitor import GZ, World, world  # noqa: F401 - fixture

#: On SQLite and PostgreSQL (the node's database; the monitor keeps its own SQLite state either way).
pytestmark = [pytest.mark.anvil]


def witness(w: World, name: str) -> tuple[Path, bytes, Path]:
    key = Ed25519PrivateKey.generate()
    path = w.tmp / f"{name}.key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    out = w.tmp / f"{name}-out"
    out.mkdir()
    return path, key.public_key().public_bytes_raw(), out


def verify(w: World, receipt: dict[str, Any]) -> dict[str, Any]:
    got = w.api.client.post("/v1/verify", json={"receipt": receipt})
    assert got.status_code == 200, got.text
    return got.json()


def test_the_node_requires_k_of_n_witnesses(world: World) -> None:  # noqa: F811
    names = ("commission", "association")
    made = {n: witness(world, n) for n in names}
    receipt = world.api.client.get(f"/v1/hospitals/{GZ}/results/R0/receipt", headers=world.api.auth(f"hospital:{GZ}"))
    assert receipt.status_code == 200, receipt.text
    body = receipt.json()
    with witness_site(made["commission"][2]) as url1, witness_site(made["association"][2]) as url2:
        world.api.rebuild(witnesses=WitnessPolicy({n: made[n][1] for n in names}, 2, [url1, url2], ttl=0.0))
        before = verify(world, body)  # nobody has checked anything yet
        assert before["verdict"] == "unknown" and before["failed_check"] == "witnesses", before
        assert "0 of the 2 required witnesses" in before["checks"][-1]["detail"]

        for n in names:
            monitor, _ = world.monitor(state=world.tmp / f"{n}.db", witness_key=made[n][0], witness_out=made[n][2])
            assert monitor.run_once().problems == []
        after = verify(world, body)
        assert after["verdict"] == "authentic", after
        assert after["checks"][-1] == {"name": "witnesses", "ok": True,
                                       "detail": "association, commission vouch for batch 1 (2 of 2 required)"}

        # k = 1 of 2 with one witness down: the other suffices.
        world.api.rebuild(witnesses=WitnessPolicy({n: made[n][1] for n in names}, 1,
                                                  [url1, "http://127.0.0.1:9/"], ttl=0.0))
        assert verify(world, body)["verdict"] == "authentic"

    # A batch sealed after the witnesses' last pass is not vouched for yet (their files are local now).
    world.api.rebuild(witnesses=WitnessPolicy({n: made[n][1] for n in names}, 2,
                                              [str(made[n][2]) for n in names]))
    head = world.seal(GZ)
    world.api.anchor_all()
    fresh = world.api.client.get(f"/v1/hospitals/{GZ}/results/R{world.next_result - 1}/receipt",
                                 headers=world.api.auth(f"hospital:{GZ}")).json()
    assert fresh["batch"]["seq"] == head.seq == 3
    late = verify(world, fresh)
    assert late["verdict"] == "unknown" and late["failed_check"] == "witnesses"
    assert verify(world, body)["verdict"] == "authentic"  # batch 1 is still covered


def test_a_witness_policy_that_cannot_work_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WitnessSetupError, match="2 witnesses required, 1 witness key"):
        WitnessPolicy({"a": b"\x01" * 32}, 2, ["http://127.0.0.1:9/"])
    with pytest.raises(WitnessSetupError, match="no checkpoint file or URL"):
        WitnessPolicy({"a": b"\x01" * 32}, 1, [])
