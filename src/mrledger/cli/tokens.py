"""``mrledger token create | list | revoke``: API tokens, written straight to the node's database.

Why the database and not the API: the first admin token has to come from somewhere, and a host operator who has
lost every admin token (or must evict a leaked one) needs a way in that a stolen token cannot use. The admin API
(``/v1/tokens``) does the same for a running node, except create admin tokens (http/routes/tokens.py says why).
Revocation and expiry take effect on the next request on every node: tokens are looked up on every request.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mrledger.cli.common import EXIT_USAGE, _err, _settings

token_app = typer.Typer(help="API tokens: create, list, revoke.", no_args_is_help=True)

_DURATION = re.compile(r"^(\d{1,9})([smhdw]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` or plain seconds; at least one second."""
    m = _DURATION.match(text.strip().lower())
    if not m or int(m.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration such as 90d, 12h, 30m or 3600 (seconds)")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def parse_instant(text: str) -> datetime:
    """An RFC 3339 time with an offset (``2027-01-01T00:00:00Z``)."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time with an offset, e.g. 2027-01-01T00:00:00Z")
    return at.astimezone(UTC)


def _expiry(now: datetime, expires_in: str | None, expires_at: str | None) -> datetime | None:
    if expires_in is not None and expires_at is not None:
        raise ValueError("give --expires-in or --expires-at, not both")
    if expires_in is not None:
        return now + parse_duration(expires_in)
    return None if expires_at is None else parse_instant(expires_at)


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option("--role", help="admin, doctor, doctor:<id> (a doctor of that hospital: may "
                                      "record recognition decisions), auditor or hospital:<id>.",
                                      show_default=False)],
    label: Annotated[str, typer.Option("--label", help="What the token is for (shown in audits).")] = "",
    expires_in: Annotated[str | None, typer.Option("--expires-in", help="Refuse the token after this long: 90d, "
                                                   "12h, 30m, 2w or seconds.", show_default=False)] = None,
    expires_at: Annotated[str | None, typer.Option("--expires-at", help="Refuse the token from this RFC 3339 "
                                                   "time on (with an offset).", show_default=False)] = None,
) -> None:
    """Create a token in the node's database (MRL_DATA_DIR / MRL_DATABASE_URL) and print it once.

    Only its hash is stored: save it now, it cannot be shown again. Without --expires-in/--expires-at it works
    until revoked (`mrledger token revoke ID`).
    """
    from mrledger.node.wiring import ServeError, open_existing_store
    from mrledger.store.access import Access
    from mrledger.store.errors import NotFoundError, SubmissionError

    now = datetime.now(UTC)
    try:
        expiry = _expiry(now, expires_in, expires_at)
        store = open_existing_store(_settings())
        token = Access(store).create_token(role, label or f"cli {role}", now, expiry)
    except ValueError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    except ServeError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    except (SubmissionError, NotFoundError) as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    typer.echo(token)


@token_app.command("list")
def token_list(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per token.")] = False,
) -> None:
    """Every token: id, role, label, created, expires, state (active, expired, revoked). Never the tokens
    themselves: only their hashes are stored."""
    from mrledger.node.wiring import ServeError, open_existing_store
    from mrledger.store.access import Access

    try:
        tokens = Access(open_existing_store(_settings())).tokens(limit=1_000_000)
    except ServeError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    now = datetime.now(UTC)
    if as_json:
        for t in tokens:
            typer.echo(json.dumps({"id": t.id, "role": t.role, "label": t.label, "created_at": _iso(t.created_at),
                                   "expires_at": _iso(t.expires_at), "revoked_at": _iso(t.revoked_at),
                                   "state": t.state(now)}, ensure_ascii=False))
        return
    table = Table("id", "role", "label", "created", "expires", "state")
    for t in tokens:
        table.add_row(str(t.id), t.role, t.label, _iso(t.created_at), _iso(t.expires_at) or "never",
                      t.state(now) + (f" {_iso(t.revoked_at)}" if t.revoked_at else ""))
    Console(width=160).print(table)


@token_app.command("revoke")
def token_revoke(
    token_ids: Annotated[list[int], typer.Argument(metavar="ID...", help="Token ids (`mrledger token list`).",
                                                   show_default=False)],
) -> None:
    """Revoke tokens: every node refuses them from the next request on. Idempotent (a revoked token keeps its
    first revocation time)."""
    from mrledger.node.wiring import ServeError, open_existing_store
    from mrledger.store.access import Access
    from mrledger.store.errors import NotFoundError

    try:
        access = Access(open_existing_store(_settings()))
        for token_id in token_ids:
            t = access.revoke_token(token_id, datetime.now(UTC))
            typer.echo(f"token {t.id} ({t.role}, {t.label}) revoked at {_iso(t.revoked_at)}")
    except ServeError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    except NotFoundError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None


def _iso(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).isoformat().replace("+00:00", "Z")


__all__ = ["parse_duration", "parse_instant", "token_app"]
