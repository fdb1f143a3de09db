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

from api.settings import Settings
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
    rpc: Annotated[str | None, typer.Option("--rpc", help="A JSON-RPC endpoint of the receipt's chain: also "
                                            "check the root on chain and count confirmations.")] = None,
) -> None:
    """Verify a receipt offline: format, leaf hash, batch identity, inclusion proof, anchor presence;
    with --rpc also on chain: chain id, the registry's stored root and size, its RFC 9162 verifier, and
    that the anchoring block is still canonical.

    Exit codes:

    • 0  valid: every offline check passed and the receipt names an anchor

    • 3  unanchored: the proof holds but the batch is not anchored on chain yet

    • 1  invalid: a check failed (tampered record, broken proof, not a receipt)

    • 2  usage error: the file is missing or unreadable, or the --rpc endpoint cannot be reached
    """
    try:
        data = receipt_file.read_bytes()
    except OSError as exc:
        Console(stderr=True).print(f"[red]error:[/] cannot read receipt file {str(receipt_file)!r}: "
                                   f"{exc.strerror or exc}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None
    if rpc is None:
        verdict = verify_receipt(data)
    else:
        from web3 import Web3

        from anchoring.verify import verify_on_chain

        try:
            verdict = verify_on_chain(data, Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 10})))
        except Exception as exc:  # unreachable endpoint, not an EVM node: a usage problem, not a verdict
            Console(stderr=True).print(f"[red]error:[/] cannot check the chain at {rpc}: {type(exc).__name__}: {exc}",
                                       soft_wrap=True)
            raise typer.Exit(EXIT_USAGE) from None
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


chain_app = typer.Typer(help="Manage the registry contract on a chain.", no_args_is_help=True)
app.add_typer(chain_app, name="chain")
DEFAULT_DB = "sqlite:///.mrledger/mrledger.db"


@chain_app.command("deploy")
def chain_deploy(
    rpc: Annotated[str, typer.Option("--rpc", help="JSON-RPC endpoint of the chain.")],
    db: Annotated[str, typer.Option("--db", envvar="MRL_DATABASE_URL", help="Database to record it in.")]
    = DEFAULT_DB,
    key_file: Annotated[Path | None, typer.Option("--key-file", help="File holding the admin's private key "
                                                  "(default: the MRL_ADMIN_KEY environment variable).")] = None,
) -> None:
    """Deploy MrLedgerRegistry and record its chain id and address in the database.

    The admin key is read from a file or the environment, never from the command line (other users can
    read command lines in the process list); it gets the registry's admin role.
    """
    import os

    from eth_account import Account
    from web3 import Web3

    from anchoring.deploy import deploy_and_record
    from store import Store

    key = key_file.read_text().strip() if key_file else os.environ.get("MRL_ADMIN_KEY", "")
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
    info = deploy_and_record(Store.open(db), w3, admin)
    typer.echo(json.dumps({"chain_id": info.chain_id, "contract": info.contract,
                           "deployed_block": info.deployed_block, "admin": info.admin}))


# -------------------------------------------------------------------------------- the node


#: Exit codes of the commands that talk to a server: 1 the server refused, 2 usage / unreachable, 3 pending.
EXIT_REFUSED, EXIT_PENDING = 1, 3


def _settings_help() -> str:
    """The MRL_* variables and their descriptions, straight from ``Settings`` so the help cannot drift."""
    lines = []
    for name, info in Settings.model_fields.items():
        default = "" if info.default is None else f" [dim]\\[default: {info.default}][/]"
        lines.append(f"MRL_{name.upper()}: {info.description}{default}")
    return "\n\n".join(lines)


def _err(message: str) -> None:
    Console(stderr=True).print(f"[red]error:[/] {message}", soft_wrap=True, highlight=False, markup=True)


def _settings(**overrides: object) -> Settings:
    """Settings from MRL_* / .env, with command-line options (when given) taking precedence."""
    from pydantic import ValidationError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        _err(f"invalid setting: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
        raise typer.Exit(EXIT_USAGE) from None


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

    from api.serve import serve as run_node

    settings = _settings(host=host, port=port, data_dir=data_dir)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    raise typer.Exit(run_node(settings, echo=typer.echo))


token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option("--role", help="admin, doctor, auditor or hospital:<id>.", show_default=False)],
    label: Annotated[str, typer.Option("--label", help="What the token is for (shown in audits).")] = "",
) -> None:
    """Create a token in the node's database (MRL_DATA_DIR / MRL_DATABASE_URL) and print it once.

    Only its hash is stored: save it now, it cannot be shown again.
    """
    from datetime import UTC, datetime

    from api.serve import ServeError, open_existing_store
    from store.access import Access
    from store.errors import NotFoundError, SubmissionError

    try:
        store = open_existing_store(_settings())
        token = Access(store).create_token(role, label or f"cli {role}", datetime.now(UTC))
    except ServeError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    except (SubmissionError, NotFoundError) as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    typer.echo(token)


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
    from api.serve import ServeError, open_existing_store
    from store.errors import StoreError

    try:
        open_existing_store(_settings()).register_hospital(hospital_id, name)
    except ServeError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    except StoreError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_REFUSED) from None
    typer.echo(f"registered {hospital_id}; `mrledger serve` puts it on chain")


def _default_api() -> str:
    settings = Settings()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "") else settings.host
    return f"http://{host}:{settings.port}/v1"


ApiOpt = Annotated[str | None, typer.Option("--api", envvar="MRL_API_URL", show_default=False,
                                            help="Base URL of the API [default: http://MRL_HOST:MRL_PORT/v1].")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="MRL_TOKEN", show_default=False,
                                              help="Bearer token; prefer MRL_TOKEN (command lines are visible "
                                                   "to other users).")]


@app.command()
def submit(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="json: record(s), a JSON array, "
                                                "{\"records\": [...]}, or JSON Lines; fhir / hl7v2: one resource "
                                                "or Bundle / ER7 messages per file; dicom: files or directories.",
                                                show_default=False)],
    hospital: Annotated[str, typer.Option("--hospital", help="Hospital id.", show_default=False)],
    fmt: Annotated[str, typer.Option("--format", help="json, fhir, hl7v2 or dicom.")] = "json",
    tz: Annotated[str | None, typer.Option("--tz", show_default=False, help="IANA zone of times without a UTC "
                                           "offset (required for dicom; hl7v2: when its times lack one).")] = None,
    api: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit results to a running server, 1,000 records per request.

    --format fhir / hl7v2 post each file as it is to the FHIR / HL7 v2 endpoint, which assigns versions
    from the results' status (docs/formats.md). --format dicom fingerprints the images here and posts only
    the imaging records: studies are large, and the ledger commits their fingerprints, not their pixels.

    Submission is idempotent: after an error, running the same command again is safe (what was already
    accepted comes back as duplicates). Exit 0 when all were accepted, 1 if the server refused a chunk,
    2 on unreadable files or an unreachable server.
    """
    from rich.progress import Progress

    from api.client import FORMATS, ApiClient, ApiError, ClientError, chunks, load_dicom_records, load_records

    if fmt not in FORMATS or (fmt == "dicom" and not tz):
        _err(f"--format must be one of {', '.join(FORMATS)}" if fmt not in FORMATS else "--format dicom needs --tz")
        raise typer.Exit(EXIT_USAGE)
    if fmt in ("fhir", "hl7v2"):
        _submit_raw(files, hospital, fmt, tz, api, token)
        return
    try:
        records = load_dicom_records(files, hospital, tz or "") if fmt == "dicom" else load_records(files)
    except ClientError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    accepted = duplicates = 0
    with ApiClient(api or _default_api(), token) as client, Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task(f"submitting to {hospital}", total=len(records))
        for chunk in chunks(records):
            try:
                answer = client.submit(hospital, chunk)
            except ApiError as exc:
                progress.stop()
                _err(f"{exc.title}" + (f": {exc.detail}" if exc.detail else "")
                     + f" (after {accepted + duplicates} of {len(records)} records were taken)")
                raise typer.Exit(EXIT_REFUSED) from None
            except ClientError as exc:
                progress.stop()
                _err(str(exc))
                raise typer.Exit(EXIT_USAGE) from None
            accepted += int(answer.get("accepted", 0))
            duplicates += int(answer.get("duplicates", 0))
            progress.advance(task, len(chunk))
    typer.echo(f"{accepted} accepted, {duplicates} duplicates ({len(records)} records)")


def _submit_raw(files: list[Path], hospital: str, fmt: str, tz: str | None, api: str | None,
                token: str | None) -> None:
    """One request per file (a file is one export: a Bundle or a batch of messages, all or nothing)."""
    from api.client import ApiClient, ApiError, ClientError

    accepted = duplicates = 0
    with ApiClient(api or _default_api(), token) as client:
        for done, path in enumerate(files):
            try:
                answer = client.submit_raw(hospital, fmt, path.read_bytes(), tz)
            except OSError as exc:
                _err(f"cannot read {path}: {exc.strerror or exc}")
                raise typer.Exit(EXIT_USAGE) from None
            except ApiError as exc:
                _err(f"{path}: {exc.title}" + (f": {exc.detail}" if exc.detail else "")
                     + f" (after {done} of {len(files)} files were taken)")
                raise typer.Exit(EXIT_REFUSED) from None
            except ClientError as exc:
                _err(str(exc))
                raise typer.Exit(EXIT_USAGE) from None
            accepted += int(answer.get("accepted", 0))
            duplicates += int(answer.get("duplicates", 0))
    typer.echo(f"{accepted} accepted, {duplicates} duplicates ({len(files)} files)")


@app.command()
def receipt(
    hospital_id: Annotated[str, typer.Argument(metavar="HID", show_default=False, help="Hospital id.")],
    result_id: Annotated[str, typer.Argument(metavar="RESULT_ID", show_default=False, help="Result id.")],
    version: Annotated[int | None, typer.Option("--version", help="Version (default: the latest).",
                                                show_default=False)] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write the receipt here instead of stdout.",
                                             show_default=False)] = None,
    qr_file: Annotated[Path | None, typer.Option(
        "--qr", metavar="FILE", show_default=False,
        help="Also write it as a QR code for the printed report (SVG if FILE ends in .svg, else PNG); "
             "a reference QR when the full receipt would not fit (docs/receipt.md §14).")] = None,
    api: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Fetch a result's receipt (mrl-receipt/1 JSON) from a running server.

    Exit 0 with the receipt, 3 while its batch is not anchored yet (try again shortly), 1 if the server
    refused (unknown result, not allowed), 2 if no server answers.
    """
    from api.client import ApiClient, ApiError, ClientError

    try:
        with ApiClient(api or _default_api(), token) as client:
            data = client.receipt(hospital_id, result_id, version)
    except ApiError as exc:
        _err(f"{exc.title}" + (f": {exc.detail}" if exc.detail else ""))
        raise typer.Exit(EXIT_PENDING if exc.status == 409 else EXIT_REFUSED) from None
    except ClientError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    if qr_file is not None:
        from api import qr

        text, form = qr.qr_text(json.loads(data))
        qr_file.write_bytes(qr.render(text, "svg" if qr_file.suffix.lower() == ".svg" else "png"))
        Console(stderr=True).print(f"QR ({form}, version {qr.make(text).version}) written to {qr_file}",
                                   soft_wrap=True, highlight=False)
    if out is None:
        typer.echo(data.decode("utf-8"))
    else:
        out.write_bytes(data)
        Console(stderr=True).print(f"receipt written to {out}", soft_wrap=True, highlight=False)


# -------------------------------------------------------------------------------- mutual recognition


eligibility_app = typer.Typer(help="Institution eligibility for mutual recognition (per catalogue category).",
                              no_args_is_help=True)
app.add_typer(eligibility_app, name="eligibility")

HidArg = Annotated[str, typer.Argument(metavar="HID", help="Hospital id.", show_default=False)]
CategoryArg = Annotated[str, typer.Argument(metavar="CATEGORY", show_default=False,
                                            help="Catalogue category, e.g. clinical-biochemistry or ct.")]


@eligibility_app.command("grant")
def eligibility_grant(
    hospital_id: HidArg,
    category: CategoryArg,
    reference: Annotated[str, typer.Option("--reference", show_default=False,
                                           help="What the grant rests on, e.g. the EQA certificate id.")],
    valid_until: Annotated[str | None, typer.Option("--valid-until", show_default=False,
                                                    help="End of eligibility: a date (end of that day, UTC) or "
                                                         "an RFC 3339 time with offset. Default: until revoked.")]
    = None,
) -> None:
    """Make a hospital eligible for a catalogue category (e.g. it passed external quality assessment).

    Writes to the node's database (MRL_DATA_DIR / MRL_DATABASE_URL); a running node sees it at the next
    verification. A new grant replaces the open one of that category. Exit 0 granted, 1 refused (unknown
    hospital), 2 usage (unknown category, bad date, no database).
    """
    from datetime import UTC, date, datetime, time

    from api.recognition import load_catalogue
    from api.serve import ServeError, open_existing_store
    from store.eligibility import Eligibility
    from store.errors import StoreError

    until = None
    if valid_until is not None:
        try:  # a bare date means the end of that day in UTC (certificates name days)
            until = (datetime.combine(date.fromisoformat(valid_until), time.max, UTC) if len(valid_until) == 10
                     else datetime.fromisoformat(valid_until))
        except ValueError:
            _err(f"--valid-until {valid_until!r} is not a date (2025-12-31) or a time with offset "
                 "(2025-12-31T23:59:59+08:00)")
            raise typer.Exit(EXIT_USAGE) from None
        if until.tzinfo is None:
            _err("--valid-until needs a UTC offset (e.g. +08:00 or Z)")
            raise typer.Exit(EXIT_USAGE)
    settings = _settings()
    try:
        eligibility = Eligibility(open_existing_store(settings))
    except ServeError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    categories = load_catalogue(settings.catalogue_file).categories
    if category not in categories:
        _err(f"{category!r} is not a catalogue category; one of: {', '.join(sorted(categories))}")
        raise typer.Exit(EXIT_USAGE)
    try:
        grant = eligibility.grant(hospital_id, category, reference, datetime.now(UTC), until)
    except StoreError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_REFUSED) from None
    typer.echo(f"{hospital_id} eligible for {category} ({grant.reference})"
               + (f" until {grant.valid_until.isoformat()}" if grant.valid_until else ""))


@eligibility_app.command("revoke")
def eligibility_revoke(hospital_id: HidArg, category: CategoryArg) -> None:
    """End a hospital's eligibility for a category now (the history is kept). Exit 1 if it held none."""
    from datetime import UTC, datetime

    from api.serve import ServeError, open_existing_store
    from store.eligibility import Eligibility
    from store.errors import StoreError

    try:
        eligibility = Eligibility(open_existing_store(_settings()))
    except ServeError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    try:
        eligibility.revoke(hospital_id, category, datetime.now(UTC))
    except StoreError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_REFUSED) from None
    typer.echo(f"{hospital_id} no longer eligible for {category}")


@eligibility_app.command("list")
def eligibility_list(
    hospital_id: HidArg,
    history: Annotated[bool, typer.Option("--history", help="Include revoked and replaced grants.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A hospital's grants: category, reference, validity, and whether each is active now."""
    from datetime import UTC, datetime

    from api.serve import ServeError, open_existing_store
    from store.eligibility import Eligibility
    from store.errors import StoreError

    try:
        eligibility = Eligibility(open_existing_store(_settings()))
    except ServeError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    now = datetime.now(UTC)
    try:
        grants = eligibility.grants(hospital_id, history=history)
    except StoreError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_REFUSED) from None
    rows = [{"category": g.category, "reference": g.reference, "granted_at": g.granted_at.isoformat(),
             "valid_until": g.valid_until.isoformat() if g.valid_until else None,
             "revoked_at": g.revoked_at.isoformat() if g.revoked_at else None, "active": g.active(now)}
            for g in grants]
    if as_json:
        typer.echo(json.dumps({"hospital_id": hospital_id, "grants": rows}, indent=2))
        return
    if not rows:
        typer.echo(f"{hospital_id}: no eligibility")
    for r in rows:
        state = "active" if r["active"] else "inactive"
        until = f" until {r['valid_until']}" if r["valid_until"] else ""
        typer.echo(f"{hospital_id}  {r['category']}  {state}  {r['reference']}  since {r['granted_at']}{until}")
