"""The ``mrledger`` command line: a thin shell that parses arguments, calls the core and prints the outcome.

Why thin: the rules live in ``ledger`` (what a valid receipt is) and ``store`` (how results are held);
a CLI that re-implemented any of them would be a second, untested opinion. Exit codes are part of the
interface, so scripts at a hospital's front desk can act on a verification without parsing text.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ledger import Verdict, verify_receipt

app = typer.Typer(
    name="mrledger",
    help="Blockchain-anchored mutual-recognition ledger for hospital results.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

#: Exit codes of ``verify``, by offline status. 2 (usage error) is shared with typer's own usage errors.
EXIT_CODES = {"valid": 0, "invalid": 1, "unanchored": 3}
EXIT_USAGE = 2
_COLOURS = {"valid": "green", "unanchored": "yellow", "invalid": "red"}
#: The demo is a script of the source checkout, not part of the installed packages.
_DEMO_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "demo_ledger.py"


@app.command()
def verify(
    receipt_file: Annotated[Path, typer.Argument(help="The receipt (mrl-receipt/1 JSON) to check.",
                                                 show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
) -> None:
    """Verify a receipt offline: format, leaf hash, batch identity, inclusion proof, anchor presence.

    Exit codes:

    • 0  valid: every offline check passed and the receipt names an anchor

    • 3  unanchored: the proof holds but the batch is not anchored on chain yet

    • 1  invalid: a check failed (tampered record, broken proof, not a receipt)

    • 2  usage error: the file is missing or unreadable
    """
    try:
        data = receipt_file.read_bytes()
    except OSError as exc:
        Console(stderr=True).print(f"[red]error:[/] cannot read receipt file {str(receipt_file)!r}: "
                                   f"{exc.strerror or exc}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    verdict = verify_receipt(data)
    if as_json:
        typer.echo(json.dumps(verdict.to_obj(), indent=2, ensure_ascii=False))
    else:
        _print_verdict(Console(), receipt_file, verdict)
    raise typer.Exit(EXIT_CODES[verdict.status])


def _print_verdict(console: Console, path: Path, verdict: Verdict) -> None:
    console.print(f"[bold]{path}", soft_wrap=True)
    r = verdict.receipt
    if r is not None:
        console.print(f"  hospital {r.record.hospital_id}  result {r.record.result_id}  "
                      f"version {r.record.version}  batch seq {r.batch.seq}")
    for check in verdict.checks:
        mark = "[green]✓[/]" if check.ok else "[red]✗[/]"
        detail = f"  [dim]{check.detail}[/]" if check.detail else ""
        console.print(f"  {mark} {check.name}{detail}", highlight=False)
    failed = f" (failed check: [bold]{verdict.failed}[/])" if verdict.failed else ""
    console.print(f"[bold {_COLOURS[verdict.status]}]{verdict.status}[/]{failed}")


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option("--data-dir", help="Where the demo database and receipts go.")]
    = Path(".mrledger/demo"),
) -> None:
    """Run the end-to-end demo (submit, seal, receipt, verify, tamper) on a fresh SQLite database."""
    if not _DEMO_SCRIPT.is_file():
        Console(stderr=True).print(f"[red]error:[/] the demo ships with the source checkout "
                                   f"({_DEMO_SCRIPT} is missing)", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE)
    spec = importlib.util.spec_from_file_location("mrledger_demo", _DEMO_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    summary = module.run_demo(data_dir, Console())
    raise typer.Exit(0 if summary["ok"] else 1)
