"""``mrledger monitor`` against a real node and a real anvil (issue 19): silent on a clean run, then each way of
breaking the node is named by its ``kind`` in one ``--once`` pass.

The node is broken the way an insider would: SQL on its database (a leaf edited, a batch's leaves deleted), the
registry's admin key (a root the node never published), a patched head (a stale head served), a revoked
certificate, and the chain itself (``anvil_reorg``). SQLite only: the monitor never sees the database, so the
database engine is not what is under test.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eth_account import Account
from prometheus_client import generate_latest
from sqlalchemy import text
from typer.testing import CliRunner

from mrledger.anchoring import contract as reg
from mrledger.anchoring.deploy import ensure_hospital_on_chain, upgrade_in_place
from mrledger.anchoring.worker import AnchorWorker
from mrledger.cli.main import app as cli
from mrledger.http.app import create_app
from mrledger.ledger import BatchHead, BatchSignature, hospital_key, sign_batch
from mrledger.ledger.witness import WitnessError, verify_witness_checkpoints
from mrledger.monitor import Monitor, Problem
from mrledger.monitor.run import Metrics, Options, build
from tests.harness import HOSPITALS, Api, serve_in_thread
from tests.pki import Leaf, Pki
from tests.store.test_repository import rec

pytestmark = [pytest.mark.anvil, pytest.mark.parametrize("engine", ["sqlite"], indirect=True)]

PKI = Pki("Monitor")
#: Certificates valid whenever the test runs (the batches are sealed now).
WINDOW = (datetime(2020, 1, 1, tzinfo=UTC), datetime(2040, 1, 1, tzinfo=UTC))
GZ, QD = sorted(HOSPITALS)


@dataclass
class World:
    api: Api
    url: str
    tmp: Path
    leaves: dict[str, Leaf]
    trust: list[Path] = field(default_factory=list)
    intermediate: list[Path] = field(default_factory=list)
    next_result: int = 0

    @property
    def contract(self) -> str:
        assert self.api.ledger.chain is not None
        return self.api.ledger.chain.contract

    @property
    def rpc(self) -> str:
        assert self.api.node is not None
        return self.api.node.rpc_url

    def seal(self, hospital: str, results: int = 2, leaf: Leaf | None = None, now: datetime | None = None
             ) -> BatchHead:
        """``results`` new results of ``hospital`` sealed into one batch signed with its certificate."""
        chain = self.api.ledger.chain
        assert chain is not None
        signer = leaf or self.leaves[hospital]

        def sign(head: BatchHead) -> BatchSignature:
            return sign_batch(head, chain.chain_id, chain.contract, signer.key, signer.chain)  # type: ignore[arg-type]

        first = self.next_result
        self.next_result += results
        self.api.ledger.intake.submit(hospital, [rec(i, hospital) for i in range(first, first + results)])
        head = self.api.ledger.store.seal(hospital, 10_000, sign=sign, now=now)
        assert head is not None
        return head

    def options(self, **kw: object) -> Options:
        base: dict[str, object] = dict(rpc_url=self.rpc, contract=self.contract, node_url=self.url,
                                       state=self.tmp / "monitor.db", hospitals=sorted(HOSPITALS), trust=self.trust,
                                       intermediates=self.intermediate, withhold_delay=0.0)
        base.update(kw)
        return Options(**base)  # type: ignore[arg-type]

    def monitor(self, **kw: object) -> tuple[Monitor, list[Problem]]:
        found: list[Problem] = []
        return build(self.options(**kw), on_problem=found.append), found

    def sql(self, statement: str, **params: object) -> None:
        with self.api.ledger.store.engine.begin() as conn:
            conn.execute(text(statement), params)


@pytest.fixture
def world(chain_api: Api, tmp_path: Path) -> Iterator[World]:
    """Two hospitals with two signed, anchored batches of two results each, and the node served over HTTP."""
    yield from make_world(chain_api, tmp_path)


def make_world(chain_api: Api, tmp_path: Path) -> Iterator[World]:
    """``world`` on any registry (tests/monitor/test_monitor_v2.py uses a v2 one)."""
    leaves = {h: PKI.hospital(h, window=WINDOW) for h in HOSPITALS}
    chain_api.rebuild(trust=PKI.trust())
    with serve_in_thread(create_app(chain_api.ledger)) as url:
        w = World(chain_api, url, tmp_path, leaves)
        (tmp_path / "root.pem").write_bytes(PKI.root.pem)
        (tmp_path / "intermediate.pem").write_bytes(PKI.intermediate.pem)
        w.trust, w.intermediate = [tmp_path / "root.pem"], [tmp_path / "intermediate.pem"]
        for _ in range(2):
            for h in HOSPITALS:
                w.seal(h)
        chain_api.anchor_all()
        yield w


def kinds(found: list[Problem]) -> set[tuple[str, str, int]]:
    return {(p.kind, p.hospital, p.seq) for p in found}


def test_a_clean_node_is_silent_and_the_cli_exits_0_then_1(world: World) -> None:
    runner = CliRunner()
    args = ["monitor", "--rpc", world.rpc, "--contract", world.contract, "--node", world.url,
            "--state", str(world.tmp / "cli.db"), "--hospital", GZ, "--hospital", QD, "--trust", str(world.trust[0]),
            "--intermediate", str(world.intermediate[0]), "--withhold-delay", "0", "--once"]
    clean = runner.invoke(cli, args)
    assert clean.exit_code == 0, clean.output
    assert clean.stdout.strip() == ""  # nothing but problems goes to stdout

    # The same pass again reads nothing new and stays silent; a leaf edited afterwards is found by a new monitor.
    assert runner.invoke(cli, args).exit_code == 0
    world.sql("UPDATE record_versions SET leaf_hash = :h WHERE id = (SELECT record_version_id FROM batch_leaves "
              "WHERE hospital_id = :g AND seq = 2 AND leaf_index = 1)", h=b"\x05" * 32, g=GZ)
    fresh = runner.invoke(cli, [*args[:7], "--state", str(world.tmp / "cli2.db"), *args[9:]])
    assert fresh.exit_code == 1, fresh.output
    lines = [json.loads(line) for line in fresh.stdout.splitlines()]
    assert [(p["kind"], p["hospital"], p["seq"]) for p in lines] == [("leaf-mismatch", GZ, 2)]
    assert set(lines[0]) == {"kind", "hospital", "seq", "detail", "block"} and lines[0]["block"] > 0


def test_a_leaf_edited_in_sql_is_a_leaf_mismatch(world: World) -> None:
    monitor, found = world.monitor()
    assert monitor.run_once().problems == [] and found == []
    world.seal(GZ)
    world.api.anchor_all()
    world.sql("UPDATE record_versions SET leaf_hash = :h WHERE id = (SELECT record_version_id FROM batch_leaves "
              "WHERE hospital_id = :g AND seq = 3 AND leaf_index = 0)", h=b"\x01" * 32, g=GZ)
    result = monitor.run_once()
    assert kinds(result.problems) == {("leaf-mismatch", GZ, 3)}
    assert result.batches_checked == 1 and monitor.run_once().problems == []  # reported once, not every poll


def test_a_batch_whose_data_is_gone_is_withheld_after_the_delay(world: World) -> None:
    world.sql("DELETE FROM batch_leaves WHERE hospital_id = :g AND seq = 2", g=QD)
    patient, _ = world.monitor(withhold_delay=3600.0)
    assert patient.run_once().problems == []  # anchored seconds ago: the node may still publish it
    monitor, _ = world.monitor(state=world.tmp / "strict.db", withhold_delay=0.0)
    assert kinds(monitor.run_once().problems) == {("withheld", QD, 2)}


def test_a_root_anchored_with_the_admin_key_is_a_root_mismatch(world: World) -> None:
    api = world.api
    chain = api.ledger.chain
    assert chain is not None and api.node is not None and chain.admin is not None
    monitor, _ = world.monitor()
    assert monitor.run_once().problems == []
    sealed = world.seal(GZ)  # batch 3, published by the node, not anchored yet
    rogue = Account.from_key(api.node.private_keys[5])
    reg.add_submitter(chain.w3, chain.contract, chain.admin, hospital_key(GZ), rogue.address)
    reg.anchor(chain.w3, chain.contract, rogue, hospital_key(GZ), 3, b"\xee" * 32, sealed.size)
    assert kinds(monitor.run_once().problems) == {("root-mismatch", GZ, 3)}


def test_a_stale_head_is_a_split_view(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    store = world.api.ledger.store
    real = store.published_batch

    def stale(hospital_id: str, seq: int | None = None) -> object:
        return real(hospital_id, 1 if seq is None and hospital_id == QD else seq)

    monkeypatch.setattr(store, "published_batch", stale)
    monitor, _ = world.monitor()
    assert kinds(monitor.run_once().problems) == {("split-view", QD, 2)}


def test_a_batch_signed_with_a_revoked_certificate_is_a_signature_problem(world: World) -> None:
    revoked = PKI.hospital(GZ, key_label="monitor:revoked", window=WINDOW)
    world.seal(GZ, leaf=revoked)
    world.api.anchor_all()
    crl = world.tmp / "crl.pem"
    crl.write_bytes(PKI.intermediate.crl([revoked.serial]))
    monitor, _ = world.monitor(crls=[crl])
    problems = monitor.run_once().problems
    assert kinds(problems) == {("signature", GZ, 3)}
    assert problems[0].detail.startswith("certificate-revoked")
    unchecked, _ = world.monitor(state=world.tmp / "no-crl.db")  # without the CRL it verifies
    assert unchecked.run_once().problems == []


def test_a_batch_sealed_after_its_anchoring_block_is_a_signing_time_problem(world: World) -> None:
    world.seal(QD, now=datetime.now(UTC) + timedelta(hours=1))  # the signer claims a time an hour ahead
    world.api.anchor_all()
    monitor, _ = world.monitor()
    problems = monitor.run_once().problems
    assert kinds(problems) == {("signing-time", QD, 3)} and "after the anchoring block" in problems[0].detail


def test_metrics_count_problems_by_kind_and_the_lag(world: World) -> None:
    world.sql("DELETE FROM batch_leaves WHERE hospital_id = :g AND seq = 1", g=GZ)
    monitor, _ = world.monitor()
    metrics = Metrics()
    result = monitor.run_once()
    metrics.observe(result)
    text = generate_latest(metrics.registry).decode()
    assert f"mrledger_monitor_last_checked_block {float(result.last_block)}" in text
    assert "mrledger_monitor_lag_blocks 0.0" in text
    assert 'mrledger_monitor_problems_total{kind="withheld"} 1.0' in text
    assert 'mrledger_monitor_problems_total{kind="split-view"} 0.0' in text


def test_a_reorg_is_rolled_back_and_read_again(world: World) -> None:
    api = world.api
    chain = api.ledger.chain
    assert chain is not None and api.node is not None and chain.submitter is not None
    monitor, _ = world.monitor()
    world.seal(GZ)
    api.anchor_all()
    first = monitor.run_once()
    assert first.problems == [] and monitor.state.checkpoint(hospital_key(GZ)).seq == 3  # type: ignore[union-attr]

    # The block anchoring batch 3 is replaced by one where the same submitter anchored another root.
    anchored = reg.batch_of(chain.w3, chain.contract, hospital_key(GZ), 3)
    assert anchored is not None
    depth = chain.w3.eth.block_number - anchored.anchored_block + 1
    block = chain.w3.eth.get_block(anchored.anchored_block, full_transactions=True)
    nonce = block["transactions"][0]["nonce"]
    fn = reg.registry(chain.w3, chain.contract).functions.anchor(hospital_key(GZ), 3, b"\xdd" * 32, anchored.size)
    tx = fn.build_transaction({"from": chain.submitter.address, "nonce": nonce, "gas": 200_000,
                               "chainId": chain.chain_id, "maxFeePerGas": 10**10, "maxPriorityFeePerGas": 10**9})
    raw = chain.submitter.sign_transaction(tx).raw_transaction
    api.node.rpc("anvil_reorg", depth, [["0x" + bytes(raw).hex(), 0]])

    again = monitor.run_once()
    assert again.reorged >= 1
    assert kinds(again.problems) == {("root-mismatch", GZ, 3)}
    assert monitor.state.checkpoint(hospital_key(GZ)).seq == 2  # type: ignore[union-attr]


def test_witness_checkpoints_are_signed_and_verified_k_of_n(world: World) -> None:
    keys = {}
    for name in ("commission", "hospital-association"):
        key = Ed25519PrivateKey.generate()
        path = world.tmp / f"{name}.key.pem"
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        path.chmod(0o600)
        keys[name] = key.public_key().public_bytes_raw()
        monitor, _ = world.monitor(state=world.tmp / f"{name}.db", witness_key=path,
                                   witness_out=world.tmp / f"{name}-out")
        assert monitor.run_once().problems == []
    documents = [json.loads((world.tmp / f"{n}-out" / f"{GZ}.json").read_text()) for n in keys]
    assert {d["checkpoint"]["seq"] for d in documents} == {2}
    root = world.api.ledger.store.batch(GZ, 1).root
    assert world.api.ledger.chain is not None
    deployment = {"chain_id": world.api.ledger.chain.chain_id, "contract": world.contract}
    assert verify_witness_checkpoints(documents, hospital_id=GZ, seq=1, root=root, witnesses=keys, k=2,
                                      **deployment) == sorted(keys)  # type: ignore[arg-type]
    with pytest.raises(WitnessError, match="witness-quorum"):  # no checkpoint of batch 3 yet
        verify_witness_checkpoints(documents, hospital_id=GZ, seq=3, root=root, witnesses=keys, k=1,
                                   **deployment)  # type: ignore[arg-type]
    with pytest.raises(WitnessError, match="witness-quorum"):  # one witness's document only
        verify_witness_checkpoints(documents[:1], hospital_id=GZ, seq=1, root=root, witnesses=keys, k=2,
                                   **deployment)  # type: ignore[arg-type]


def test_after_an_in_place_upgrade_the_v2_history_continues_without_a_gap(world: World) -> None:
    """A monitor of the v2 registry that succeeded the world's v1 one (docs/anchoring.md, "Registry v2"): each
    hospital's first batch there follows its last in v1 (read from v1, the paused predecessor), so a clean
    history reads no sequence gap. Signatures are left out: the world's batches are signed for the v1 registry."""
    api = world.api
    chain = api.ledger.chain
    assert chain is not None and chain.admin is not None and chain.submitter is not None
    v2 = upgrade_in_place(api.ledger.store, chain.w3, chain.admin).contract
    for h in HOSPITALS:
        ensure_hospital_on_chain(chain.w3, v2, chain.admin, h, HOSPITALS[h], [chain.submitter.address])
        world.seal(h)
    worker = AnchorWorker(api.ledger.store, chain.w3, v2, chain.submitter)
    for _ in range(6):
        worker.step()
    assert api.ledger.outbox.unconfirmed() == 0
    monitor, found = world.monitor(contract=v2, trust=[], intermediates=[], require_signatures=False,
                                   state=world.tmp / "v2.db")
    result = monitor.run_once()
    assert result.problems == [] and found == [] and result.batches_checked == len(HOSPITALS)
