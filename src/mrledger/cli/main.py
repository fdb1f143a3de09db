"""The ``mrledger`` command line: a thin shell that parses arguments, calls the core and prints the outcome.

Why thin: the rules live in ``ledger`` (what a valid receipt is) and ``store`` (how results are held);
a CLI that re-implemented any of them would be a second, untested opinion. Exit codes are part of the
interface, so scripts at a hospital's front desk can act on a verification without parsing text.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mrledger.cli.anchoring import anchor
from mrledger.cli.audit import audit_app
from mrledger.cli.client import receipt, submit
from mrledger.cli.common import EXIT_REFUSED, EXIT_USAGE, _err, _settings
from mrledger.cli.eligibility import eligibility_app
from mrledger.cli.keys import keys_app
from mrledger.cli.kpis import kpis
from mrledger.cli.monitor import monitor
from mrledger.cli.pki import pki_app
from mrledger.cli.tokens import token_app
from mrledger.ledger import Verdict, verify_receipt
from mrledger.node.settings import Settings

app = typer.Typer(
    name="mrledger",
    help="Blockchain-anchored mutual-recognition ledger for hospital results.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

#: Exit codes of ``verify``, by offline status. 2 (usage error) is shared with typer's own usage errors.
EXIT_CODES = {"valid": 0, "invalid": 1, "unanchored": 3}
_COLOURS = {"valid": "green", "unanchored": "yellow", "invalid": "red"}
#: The demo is a script of the source checkout, not part of the installed packages.
_DEMO_SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "demo_ledger.py"


@app.command()
def verify(
    receipt_file: Annotated[Path, typer.Argument(help="The receipt (mrl-receipt/1 JSON) to check.",
                                                 show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON.")] = False,
    rpc: Annotated[str | None, typer.Option("--rpc", help="A JSON-RPC endpoint of the receipt's chain: also "
                                            "check the root on chain and count confirmations.")] = None,
    trust: Annotated[list[Path] | None, typer.Option("--trust", help="PEM file of a CA the hospital's signature "
                                                     "must chain to (repeatable). Without it the signature is "
                                                     "not checked.", show_default=False)] = None,
    intermediate: Annotated[list[Path] | None, typer.Option("--intermediate", help="PEM file of an intermediate "
                                                            "CA whose --crl you give (repeatable).",
                                                            show_default=False)] = None,
    crl: Annotated[list[Path] | None, typer.Option("--crl", help="CRL file, PEM or DER (repeatable): a listed "
                                                   "certificate fails as revoked.", show_default=False)] = None,
    allow_unsigned: Annotated[bool, typer.Option("--allow-unsigned", help="With --trust, accept a receipt "
                                                 "that carries no signature.")] = False,
    witnesses: Annotated[int | None, typer.Option("--witnesses", min=1, help="Require this many of the --witness "
                                                  "keys to vouch for the receipt's batch with a --checkpoint "
                                                  "(docs/monitor.md).", show_default=False)] = None,
    witness: Annotated[list[Path] | None, typer.Option("--witness", help="Ed25519 public key (PEM) of a witness "
                                                       "you trust, named by its file (repeatable).",
                                                       show_default=False)] = None,
    checkpoint: Annotated[list[str] | None, typer.Option("--checkpoint", help="A witness checkpoint "
                                                         "(mrl-witness/1 JSON): a file, a directory of them, or "
                                                         "an http(s) URL; a URL ending in / is a witness's "
                                                         "directory, asked for <hospital>.json (repeatable).",
                                                         show_default=False)] = None,
    status: Annotated[str | None, typer.Option("--status", help="URL of an mrledger node: also ask whether this "
                                               "version is still current (superseded? withdrawn?) and check the "
                                               "answer against the receipt and, with --rpc, the chain.",
                                               show_default=False)] = None,
    status_grace: Annotated[int, typer.Option("--status-grace", min=0, help="Seconds a newer batch may sit on "
                                              "chain before an answer from an older one is stale.")] = 600,
) -> None:
    """Verify a receipt offline: format, leaf hash, batch identity, inclusion proof, anchor presence;
    with --rpc also on chain: chain id, the registry's stored root and size, its RFC 9162 verifier, and
    that the anchoring block is still canonical; with --trust the hospital's signature (certificate chain
    to your CA, valid when the batch was sealed, not on a --crl, naming the batch's hospital) — and an
    unsigned receipt fails unless --allow-unsigned.

    Exit codes:

    • 0  valid: every check passed (with --trust: signed by the hospital) and the receipt names an anchor

    • 3  unanchored: the proof holds but the batch is not anchored on chain yet

    • 4  not witnessed: valid, but fewer than --witnesses of the --witness keys vouch for its batch (or two of
      them signed different histories: a split view)

    • 5  not current (with --status): valid, but superseded by a later version or withdrawn

    • 6  status unverified (with --status): valid, but the node's status answer is missing, stale, or does not
      check against the receipt or the chain

    • 1  invalid: a check failed (tampered record, broken proof, not a receipt)

    • 2  usage error: the file is missing or unreadable, a --trust/--crl file is unusable, or the --rpc
      endpoint cannot be reached
    """
    try:
        data = receipt_file.read_bytes()
    except OSError as exc:
        Console(stderr=True).print(f"[red]error:[/] cannot read receipt file {str(receipt_file)!r}: "
                                   f"{exc.strerror or exc}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    store = None
    if trust:
        from mrledger.service.pki import PkiError, load_trust

        try:
            store = load_trust(trust, crl or [], intermediate or [])
        except PkiError as exc:
            _err(str(exc))
            raise typer.Exit(EXIT_USAGE) from None
    elif crl or intermediate:
        _err("--crl and --intermediate need --trust (the CA the signature must chain to)")
        raise typer.Exit(EXIT_USAGE)
    from mrledger.cli import witnesses as wit

    try:
        keys = wit.load_witness_keys(witness or [])
        documents = wit.load_checkpoints(checkpoint or [])
    except wit.WitnessSetupError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    if witnesses is not None and witnesses > len(keys):
        _err(f"--witnesses {witnesses} needs at least that many --witness keys ({len(keys)} given)")
        raise typer.Exit(EXIT_USAGE)
    verdict = verify_receipt(data, trust=store, require_signature=store is not None and not allow_unsigned)
    w3 = None
    if rpc is not None:
        from web3 import Web3

        from mrledger.anchoring.verify import verify_on_chain

        try:
            w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 10}))
            verdict = verify_on_chain(data, w3, offline=verdict, trust=store)  # also signature-time (signatures.md §4)
        except Exception as exc:  # unreachable endpoint, not an EVM node: a usage problem, not a verdict
            Console(stderr=True).print(f"[red]error:[/] cannot check the chain at {rpc}: {type(exc).__name__}: {exc}",
                                       soft_wrap=True)
            raise typer.Exit(EXIT_USAGE) from None
    vouched, said = True, ""
    if witnesses is not None and verdict.status == "valid":
        fetched, notes = ([], []) if verdict.receipt is None else \
            wit.fetch_checkpoints(checkpoint or [], verdict.receipt.batch.hospital_id)
        vouched, said = wit.check(verdict, keys, documents + fetched, witnesses)
        said = "\n".join([*notes, said])
    current = None
    if status is not None and verdict.status == "valid" and verdict.receipt is not None:
        from mrledger.cli import status as st

        current = st.check(verdict.receipt, status, w3, timedelta(seconds=status_grace))
    if as_json:
        typer.echo(json.dumps({**verdict.to_obj(), **({"witnessed": vouched, "witnesses": said} if said else {}),
                               **({"current": current.to_obj()} if current is not None else {})},
                              indent=2, ensure_ascii=False))
    else:
        _print_verdict(Console(), receipt_file, verdict)
        for line in (said, "" if current is None else current.line()):
            if line:
                Console().print(line, highlight=False, markup=False, soft_wrap=True)
    if not vouched:
        raise typer.Exit(wit.EXIT_NOT_WITNESSED)
    raise typer.Exit(EXIT_CODES[verdict.status] if current is None or current.exit_code is None
                     else current.exit_code)


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
    sig, who = verdict.signature, verdict.signature.signer
    if who is not None:
        console.print(f"  signed by hospital {who.hospital_id}: {who.subject}, certificate {who.serial} from "
                      f"{who.issuer}, valid {who.not_before:%Y-%m-%d} to {who.not_after:%Y-%m-%d}",
                      highlight=False, markup=False, soft_wrap=True)
    elif sig.status == "not-checked" and r is not None and r.signature is not None:
        console.print("  signature present, not checked (give --trust CA.pem)", highlight=False)
    elif sig.status == "absent":
        console.print("  no signature", highlight=False)
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


chain_app = typer.Typer(help="Manage the registry contract on a chain.", no_args_is_help=True)
app.add_typer(chain_app, name="chain")


RpcOption = Annotated[str, typer.Option("--rpc", help="JSON-RPC endpoint of the chain.")]
AdminKeyOption = Annotated[Path | None, typer.Option("--key-file", help="File holding the admin's private key "
                                                     "(default: the MRL_ADMIN_KEY environment variable).")]


@chain_app.command("deploy")
def chain_deploy(
    rpc: RpcOption,
    db: Annotated[str | None, typer.Option("--db", help="Database to record it in (default: MRL_DATABASE_URL, "
                                           "else the data dir's).", show_default=False)] = None,
    key_file: AdminKeyOption = None,
    registry_version: Annotated[int, typer.Option("--registry-version", min=1, max=2, help="1: root and size per "
                                                  "batch; 2: one commitment word per batch binding the status map "
                                                  "root, hub anchoring.")] = 2,
) -> None:
    """Deploy MrLedgerRegistry (or MrLedgerRegistryV2) and record its chain id and address in the database.

    The admin key is read from a file or the environment, never from the command line (other users can
    read command lines in the process list); it gets the registry's admin role.
    """
    from mrledger.anchoring.deploy import deploy_and_record
    from mrledger.store import Store

    db, admin, w3 = _admin_on_chain(rpc, db, key_file)
    _print_deployment(deploy_and_record(Store.open(db), w3, admin, version=registry_version))


@chain_app.command("upgrade")
def chain_upgrade(
    rpc: RpcOption,
    db: Annotated[str | None, typer.Option("--db", help="The ledger's database (default: MRL_DATABASE_URL, "
                                           "else the data dir's).", show_default=False)] = None,
    key_file: AdminKeyOption = None,
) -> None:
    """Move the ledger from its v1 registry to a new v2 one, in place (docs/anchoring.md, "Registry v2").

    Run with the node stopped, once every sealed batch is confirmed: the v1 registry is paused (it stays
    readable: old receipts keep verifying there), a v2 registry naming it as predecessor is deployed and
    recorded, and the node's next start registers the hospitals there, each continuing its sequence.
    """
    from mrledger.anchoring.deploy import upgrade_in_place
    from mrledger.anchoring.errors import AnchoringError
    from mrledger.store import Store

    db, admin, w3 = _admin_on_chain(rpc, db, key_file)
    try:
        info = upgrade_in_place(Store.open(db), w3, admin)
    except AnchoringError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    _print_deployment(info)


def _print_deployment(info: Any) -> None:
    """The recorded deployment (``anchoring.deploy.DeploymentInfo``) as the one JSON line both commands print."""
    typer.echo(json.dumps({"chain_id": info.chain_id, "contract": info.contract,
                           "registry_version": info.registry_version, "deployed_block": info.deployed_block,
                           "admin": info.admin}))


def _admin_on_chain(rpc: str, db: str | None, key_file: Path | None) -> tuple[str, Any, Any]:
    """(database URL, admin account, Web3) for the chain commands; a usage error (exit 2) if any is missing.
    The admin key comes from a file or the environment, never from the command line."""
    from eth_account import Account
    from web3 import Web3

    settings = _settings()
    key = (key_file.read_text().strip() if key_file
           else settings.admin_key.get_secret_value() if settings.admin_key else "")
    if not key:
        Console(stderr=True).print("[red]error:[/] no admin key: pass --key-file or set MRL_ADMIN_KEY")
        raise typer.Exit(EXIT_USAGE)
    try:
        admin = Account.from_key(key)
    except Exception:
        Console(stderr=True).print("[red]error:[/] the admin key is not a valid private key")
        raise typer.Exit(EXIT_USAGE) from None
    w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 30}))
    if not w3.is_connected():
        Console(stderr=True).print(f"[red]error:[/] no chain answers at {rpc}")
        raise typer.Exit(EXIT_USAGE)
    return db or settings.db_url, admin, w3


# -------------------------------------------------------------------------------- the node


def _settings_help() -> str:
    """The MRL_* variables and their descriptions, straight from ``Settings`` so the help cannot drift."""
    lines = []
    for name, info in Settings.model_fields.items():
        default = "" if info.default is None else f" [dim]\\[default: {info.default}][/]"
        env = info.validation_alias if isinstance(info.validation_alias, str) else f"MRL_{name.upper()}"
        lines.append(f"{env}: {info.description}{default}")
    return "\n\n".join(lines)


@app.command(help="Run the ledger node: the HTTP API, the sealer, the anchoring worker and (unless "
                  "MRL_RPC_URL is set) a managed local anvil chain, with state in the data dir. Ctrl-C stops "
                  "it cleanly; a restart on the same data dir resumes (nothing accepted is lost).\n\n"
                  "Settings (environment variables or a .env file; the options below override them):\n\n"
                  + _settings_help())
def serve(
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on (MRL_HOST).",
                                             show_default=False)] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port to listen on, 0 for any (MRL_PORT).",
                                             show_default=False)] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Data directory (MRL_DATA_DIR).",
                                                  show_default=False)] = None,
) -> None:
    import logging

    from mrledger.node.serve import serve as run_node

    settings = _settings(host=host, port=port, data_dir=data_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise typer.Exit(run_node(settings, echo=typer.echo))


hospital_app = typer.Typer(help="Hospitals.", no_args_is_help=True)
app.add_typer(hospital_app, name="hospital")


@hospital_app.command("register")
def hospital_register(
    hospital_id: Annotated[str, typer.Argument(metavar="ID", help="Stable id, e.g. gz-001.", show_default=False)],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The hospital's name.", show_default=False)],
) -> None:
    """Register a hospital in the node's database (MRL_DATA_DIR / MRL_DATABASE_URL).

    A running `mrledger serve` puts it on chain within seconds (otherwise its next start does): the
    node is the only process that spends the admin key, so two processes never race for its nonces.
    With a server running you can instead POST /v1/hospitals with an admin token.
    """
    from mrledger.node.wiring import ServeError, open_existing_store
    from mrledger.store.errors import StoreError
    from mrledger.store.events import STREAM_SUFFIX, is_event_stream

    if is_event_stream(hospital_id):
        _err(f"ids ending in {STREAM_SUFFIX} name event streams (docs/kpis.md), not hospitals")
        raise typer.Exit(EXIT_USAGE)
    try:
        open_existing_store(_settings()).register_hospital(hospital_id, name)
    except ServeError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    except StoreError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_REFUSED) from None
    typer.echo(f"registered {hospital_id}; `mrledger serve` puts it on chain")


# Commands that live in their own modules (kept apart so each file stays readable).
app.command()(submit)
app.command()(receipt)
app.command()(kpis)
app.command()(monitor)
app.add_typer(audit_app, name="audit")
app.command()(anchor)
app.add_typer(eligibility_app, name="eligibility")
app.add_typer(keys_app, name="keys")
app.add_typer(pki_app, name="pki")
app.add_typer(token_app, name="token")
