"""``mrledger pki …``: the development CA and the hospitals' signing keys (registered on the app in
``cli/main.py``; docs/signatures.md §10).

Why on the command line: key files are a host's business, not the API's — no endpoint ever hands out or
accepts a private key. The commands write under the data dir (``MRL_DATA_DIR``) or ``MRL_SIGNING_KEYS_DIR``,
keys 0600, encrypted with ``MRL_SIGNING_KEY_PASSPHRASE`` when it is set; a running node picks new keys up at
its next seal.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from mrledger.cli.common import EXIT_REFUSED, EXIT_USAGE, _err, _settings
from mrledger.ledger.errors import MrLedgerError
from mrledger.node.pki import dev_dir, passphrase
from mrledger.node.settings import Settings
from mrledger.service.pki import HOSPITALS_DIR, PkiError, SigningKeys, check_hospital_id

pki_app = typer.Typer(help="Hospital signing keys and the development CA (docs/signatures.md).",
                      no_args_is_help=True)

HidArg = Annotated[str, typer.Argument(metavar="HOSPITAL", help="Hospital id.", show_default=False)]


def _keys_dir(settings: Settings) -> Path:
    return settings.signing_keys_dir or dev_dir(settings) / HOSPITALS_DIR


def _no_production(settings: Settings) -> None:
    """The dev CA must never sign for a node that trusts a real CA: its keys sit next to the database."""
    if settings.trust_anchors:
        _err("MRL_TRUST_ANCHORS is set: this node trusts your CA. Have it issue the hospitals' certificates and "
             f"put each key and chain in {_keys_dir(settings)}/<hospital_id>/ (docs/signatures.md §10); the dev CA "
             "is for development only")
        raise typer.Exit(EXIT_USAGE)


def _hospitals(settings: Settings) -> list[str] | None:
    """Registered hospitals, or None when there is no database yet."""
    from mrledger.node.wiring import ServeError, open_existing_store

    try:
        store = open_existing_store(settings)
    except ServeError:
        return None
    try:
        return [h for h, _ in store.hospitals()]
    finally:
        store.engine.dispose()


@pki_app.command("init")
def pki_init() -> None:
    """Create the development CA (a root and an issuing intermediate, in <data dir>/pki) and a signing key
    and certificate for every registered hospital that has no valid one.

    Idempotent: an existing CA is kept (replacing it would orphan every signature made so far), and so are
    valid keys. `mrledger serve` does the same on its first start and for hospitals registered while it
    runs; this command is for doing it ahead of time, or on a node with MRL_WORKER=false. Keys are 0600
    (encrypted with MRL_SIGNING_KEY_PASSPHRASE when set). Not for production: see MRL_TRUST_ANCHORS.
    """
    from mrledger.service.pki_dev import DevCA

    settings = _settings()
    _no_production(settings)
    directory, secret, now = dev_dir(settings), passphrase(settings), datetime.now(UTC)
    try:
        if DevCA.exists(directory):
            ca = DevCA.load(directory, secret)
            typer.echo(f"dev CA already in {directory}/ (kept)")
        else:
            ca = DevCA.create(directory, now, secret)
            typer.echo(f"created dev CA in {directory}/")
        hospitals = _hospitals(settings)
        keys = SigningKeys(_keys_dir(settings), secret)
        for hospital_id in hospitals or []:
            current = keys.current(hospital_id, now)
            if current is not None:
                typer.echo(f"{hospital_id}: signs with {current.name} (serial {current.serial}, until "
                           f"{current.not_after:%Y-%m-%d})")
                continue
            path = ca.issue(hospital_id, keys.directory, now)
            typer.echo(f"{hospital_id}: issued {path}")
    except MrLedgerError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    if hospitals is None:
        typer.echo("no database yet: hospitals get keys when registered (`mrledger pki issue ID` for more)")
    typer.echo(f"verify receipts with: mrledger verify RECEIPT --trust {ca.root_file} "
               f"--intermediate {ca.intermediate_file}")


@pki_app.command("issue")
def pki_issue(hospital_id: HidArg) -> None:
    """Issue a registered hospital a new signing key and certificate from the dev CA: key rotation.

    The new certificate is the newest valid one, so it signs from the hospital's next batch on, also in a
    running node; batches signed before keep verifying with the old certificate (validity is judged at
    each batch's sealing time). Exit 0 issued, 1 refused (unknown hospital), 2 usage (no dev CA, no
    database, a production trust configuration).
    """
    from mrledger.service.pki_dev import DevCA

    settings = _settings()
    _no_production(settings)
    try:
        check_hospital_id(hospital_id)
    except PkiError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    if not DevCA.exists(dev_dir(settings)):
        _err(f"no dev CA in {dev_dir(settings)}/: run `mrledger pki init` (or `mrledger serve`) first")
        raise typer.Exit(EXIT_USAGE)
    hospitals = _hospitals(settings)
    if hospitals is None:
        _err(f"no mrledger database in {settings.data_dir}/: register the hospital first")
        raise typer.Exit(EXIT_USAGE)
    if hospital_id not in hospitals:
        _err(f"unknown hospital {hospital_id!r}: register it first (mrledger hospital register)")
        raise typer.Exit(EXIT_REFUSED)
    now = datetime.now(UTC)
    try:
        path = DevCA.load(dev_dir(settings), passphrase(settings)).issue(hospital_id, _keys_dir(settings), now)
        current = SigningKeys(_keys_dir(settings), passphrase(settings)).current(hospital_id, now)
    except MrLedgerError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    typer.echo(f"issued {path}")
    if current is not None:
        typer.echo(f"{hospital_id} signs from its next batch on with serial {current.serial} (valid "
                   f"{current.not_before:%Y-%m-%d} to {current.not_after:%Y-%m-%d})")


@pki_app.command("list")
def pki_list(
    hospital_id: Annotated[str | None, typer.Argument(metavar="[HOSPITAL]", help="Only this hospital.",
                                                      show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The installed signing certificates per hospital: serial, validity, which one signs now, and why a
    pair is unusable (wrong passphrase, key of another certificate, another hospital's certificate)."""
    settings = _settings()
    keys = SigningKeys(_keys_dir(settings), passphrase(settings))
    folder = keys.directory
    try:
        ids = [hospital_id] if hospital_id else sorted(p.name for p in folder.iterdir() if p.is_dir()) \
            if folder.is_dir() else []
        now = datetime.now(UTC)
        rows: list[dict[str, Any]] = []
        for hid in ids:
            current = keys.current(hid, now)
            rows += [{"hospital_id": hid, "name": k.name, "serial": k.serial, "subject": k.subject,
                      "issuer": k.issuer, "not_before": k.not_before.isoformat(), "not_after": k.not_after.isoformat(),
                      "current": current is not None and k.name == current.name, "problem": k.problem}
                     for k in keys.keys(hid)]
    except PkiError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    if as_json:
        typer.echo(json.dumps({"keys_dir": str(folder), "keys": rows}, indent=2))
        return
    if not rows:
        typer.echo(f"no signing keys in {folder}/")
    for r in rows:
        state = "signs now" if r["current"] else (f"unusable: {r['problem']}" if r["problem"] else "")
        typer.echo(f"{r['hospital_id']}  {r['name']}  serial {r['serial']}  {r['not_before'][:10]} to "
                   f"{r['not_after'][:10]}  {state}".rstrip())
