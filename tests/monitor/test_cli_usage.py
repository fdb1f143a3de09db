"""``mrledger monitor`` refuses an incomplete command line with a message and exit 2, before any connection."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrledger.cli.main import app

BASE = ["monitor", "--rpc", "http://127.0.0.1:9", "--contract", "0x" + "11" * 20, "--node", "http://127.0.0.1:9",
        "--once"]


def test_without_hospitals_or_a_token_it_says_how_to_name_them(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MRL_MONITOR_TOKEN", raising=False)
    r = CliRunner().invoke(app, [*BASE, "--state", str(tmp_path / "m.db")])
    assert r.exit_code == 2 and "--hospital" in r.output and not (tmp_path / "m.db").exists()


def test_a_crl_needs_trust_anchors(tmp_path: Path) -> None:
    crl = tmp_path / "ca.crl"
    crl.write_bytes(b"x")
    r = CliRunner().invoke(app, [*BASE, "--hospital", "gz-001", "--crl", str(crl), "--state", str(tmp_path / "m.db")])
    assert r.exit_code == 2 and "--trust" in r.output and not (tmp_path / "m.db").exists()
