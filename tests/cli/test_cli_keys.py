"""`mrledger keys …` and the node's master key (docs/encryption.md): the embedded default makes one, a lost one
is not silently replaced, rotation re-wraps under a new one while a node keeps running, keys are never printed."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrledger.cli.main import app
from mrledger.ledger import ResultRecord
from mrledger.node.settings import Settings
from mrledger.node.wiring import ServeError, master_key_for, open_node_store
from mrledger.store import Store
from mrledger.store.crypto import MasterKey

runner = CliRunner()
HID = "gz-001"


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's key comes from its data dir here, as with `mrledger serve` and no configuration."""
    monkeypatch.chdir(tmp_path)
    for name in ("MRL_MASTER_KEY", "MRL_MASTER_KEY_FILE", "MRL_DATA_DIR", "MRL_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def _record(i: int) -> ResultRecord:
    return ResultRecord.from_obj({
        "hospital_id": HID, "result_id": f"MRN-998877-{i}", "version": 1, "kind": "lab",
        "code": {"system": "http://loinc.org", "code": "2345-7"}, "subject": {"value": f"P{i}"},
        "effective": "2024-05-01T07:00:00Z", "issued": "2024-05-01T07:30:00Z", "status": "final",
        "content": {"type": "observations", "observations": [
            {"code": {"system": "http://loinc.org", "code": "2345-7"}, "value": 5.0, "unit": "mmol/L"}]}})


def _node(data: Path) -> Store:
    """What `mrledger serve` opens on a fresh data dir."""
    store = open_node_store(Settings(data_dir=data, _env_file=None))  # type: ignore[call-arg]
    store.register_hospital(HID, "Guangzhou First People's Hospital")
    return store


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_embedded_default_makes_a_private_master_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, _env_file=None)  # type: ignore[call-arg]
    assert master_key_for(settings, create=False) is None  # the CLI never makes one
    store = _node(data)
    key_file = data / "master.key"
    assert _mode(key_file) == 0o600 and master_key_for(settings, create=True) == key_file.resolve()
    store.submit(HID, [_record(1)])
    assert store.record(HID, _record(1).result_id) == _record(1)
    store.engine.dispose()
    both = Settings(data_dir=data, master_key_file=key_file, master_key="00" * 32, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ServeError, match="not both"):
        master_key_for(both, create=True)


def test_a_lost_master_key_is_not_replaced_by_a_new_one(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _node(data).engine.dispose()
    (data / "master.key").unlink()
    with pytest.raises(ServeError, match="restore"):
        _node(data)
    assert not (data / "master.key").exists()  # the key generated meanwhile fits nothing: removed again


def test_rotate_in_place_while_a_node_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    running = _node(data)
    running.submit(HID, [_record(1)])
    running.seal(HID, 10)
    receipt = running.receipt(HID, _record(1).result_id)
    assert receipt is not None
    old = MasterKey.from_file(data / "master.key")

    env = {"MRL_DATA_DIR": str(data)}
    out = runner.invoke(app, ["keys", "rotate", "--new-data-key"], env=env)
    assert out.exit_code == 0, out.output
    new = MasterKey.from_file(data / "master.key")
    retired = data / f"master.key.retired-{old.key_id}"
    assert new != old and MasterKey.from_file(retired) == old and _mode(retired) == _mode(data / "master.key") == 0o600
    assert not (data / "master.key.new").exists()
    assert new.key_id in out.output and new.to_text() not in out.output and old.to_text() not in out.output
    assert "data key 3" in out.output

    # the running node carries on; a node started now writes with data key 3, which the running one reads
    assert running.receipt(HID, _record(1).result_id).to_json() == receipt.to_json()  # type: ignore[union-attr]
    restarted = Store.open(f"sqlite:///{data / 'mrledger.db'}", master_key=data / "master.key")
    restarted.submit(HID, [_record(2)])
    assert running.record(HID, _record(2).result_id) == _record(2)

    status = runner.invoke(app, ["keys", "status", "--json"], env=env)
    assert status.exit_code == 0, status.output
    body = json.loads(status.output)
    assert body["configured_master_key_id"] == new.key_id and body["rows_in_clear"] == 0
    assert [(k["id"], k["purpose"], k["current"]) for k in body["keys"]] == [(1, "index", False), (2, "data", False),
                                                                            (3, "data", True)]
    assert {k["master_key_id"] for k in body["keys"]} == {new.key_id}

    # the retired key opens nothing any more
    refused = runner.invoke(app, ["keys", "status"], env={**env, "MRL_MASTER_KEY_FILE": str(retired)})
    assert refused.exit_code == 1 and old.key_id in refused.output


def test_rotate_with_a_key_from_the_environment_needs_a_target_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _node(data).engine.dispose()
    old = MasterKey.from_file(data / "master.key")
    env = {"MRL_DATA_DIR": str(data), "MRL_MASTER_KEY": old.to_text()}
    usage = runner.invoke(app, ["keys", "rotate"], env=env)
    assert usage.exit_code == 2 and "--new-master-key-file" in usage.output
    prepared = tmp_path / "vault" / "next.key"
    assert runner.invoke(app, ["keys", "generate", "--out", str(prepared)]).exit_code == 0
    assert runner.invoke(app, ["keys", "generate", "--out", str(prepared)]).exit_code == 2  # never overwritten
    out = runner.invoke(app, ["keys", "rotate", "--new-master-key-file", str(prepared)], env=env)
    assert out.exit_code == 0, out.output
    assert MasterKey.from_file(data / "master.key") == old  # not the file in use: the operator moves the config
    Store.open(f"sqlite:///{data / 'mrledger.db'}", master_key=prepared).engine.dispose()


def test_rotate_refuses_a_wrong_key_and_a_left_over_rotation(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _node(data).engine.dispose()
    stranger = tmp_path / "stranger.key"
    assert runner.invoke(app, ["keys", "generate", "--out", str(stranger)]).exit_code == 0
    wrong = runner.invoke(app, ["keys", "rotate"],
                          env={"MRL_DATA_DIR": str(data), "MRL_MASTER_KEY_FILE": str(stranger)})
    assert wrong.exit_code == 1 and "not by the configured master key" in wrong.output
    assert not (tmp_path / "stranger.key.new").exists()
    (data / "master.key.new").write_text("left over")
    left = runner.invoke(app, ["keys", "rotate"], env={"MRL_DATA_DIR": str(data)})
    assert left.exit_code == 2 and "interrupted" in left.output
