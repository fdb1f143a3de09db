"""The ``mrledger`` CLI: exit codes are its contract with scripts, so each status is pinned to its code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mrledger.cli.main import app

VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "receipt"
runner = CliRunner()


def receipt_file(tmp_path: Path, vector: str) -> Path:
    """Vector files wrap the receipt under ``receipt``; the CLI takes a bare receipt, as patients hold it."""
    case = json.loads((VECTORS / f"{vector}.json").read_text(encoding="utf-8"))
    path = tmp_path / f"{vector}.json"
    path.write_text(json.dumps(case["receipt"]), encoding="utf-8")
    return path


@pytest.mark.parametrize(("vector", "code", "status"), [
    ("ok_anchored", 0, "valid"),
    ("ok_unanchored", 3, "unanchored"),
    ("value_altered", 1, "invalid"),
])
def test_verify_exit_code_follows_status(tmp_path: Path, vector: str, code: int, status: str) -> None:
    result = runner.invoke(app, ["verify", str(receipt_file(tmp_path, vector))])
    assert result.exit_code == code, result.output
    assert status in result.output
    assert "qd-municipal-01" in result.output and "batch seq 7" in result.output


def test_verify_names_the_failed_check(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", str(receipt_file(tmp_path, "value_altered"))])
    assert result.exit_code == 1
    assert "✗ leaf-hash" in result.output
    assert "failed check: leaf-hash" in result.output


def test_verify_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-receipt.json"
    result = runner.invoke(app, ["verify", str(missing)])
    assert result.exit_code == 2
    assert "cannot read receipt file" in result.output and "no-such-receipt.json" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


def test_verify_directory_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", str(tmp_path)])
    assert result.exit_code == 2
    assert "cannot read receipt file" in result.output


def test_verify_garbage_is_invalid_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "garbage.json"
    path.write_bytes(b"not json at all")
    result = runner.invoke(app, ["verify", "--json", str(path)])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["failed_check"] == "format"


@pytest.mark.parametrize(("vector", "code", "status"), [("ok_anchored", 0, "valid"), ("value_altered", 1, "invalid")])
def test_verify_json(tmp_path: Path, vector: str, code: int, status: str) -> None:
    result = runner.invoke(app, ["verify", "--json", str(receipt_file(tmp_path, vector))])
    assert result.exit_code == code
    obj = json.loads(result.stdout)
    assert obj["status"] == status
    assert obj["hospital_id"] == "qd-municipal-01" and obj["batch_seq"] == 7
    assert [c["name"] for c in obj["checks"]][:3] == ["format", "critical-extensions", "leaf-hash"]


def test_help_documents_exit_codes() -> None:
    result = runner.invoke(app, ["verify", "--help"])
    assert result.exit_code == 0
    for line in ("0  valid", "3  unanchored", "1  invalid", "2  usage error"):
        assert line in result.output


def test_console_script_entry_point(tmp_path: Path) -> None:
    """The installed ``mrledger`` script (pyproject's [project.scripts]) really reaches ``mrledger.cli.main:app``."""
    script = Path(sys.executable).parent / "mrledger"
    assert script.exists(), f"{script} missing: run `.venv/bin/pip install -c constraints.txt -e '.[dev]'`"
    path = receipt_file(tmp_path, "ok_unanchored")
    proc = subprocess.run([str(script), "verify", "--json", str(path)], capture_output=True, text=True,
                          timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 3, proc.stderr
    assert json.loads(proc.stdout)["status"] == "unanchored"
