"""``mrledger eligibility …``: which hospitals may have their results recognised, per catalogue category
(registered on the app in ``cli/main.py``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mrledger.cli.common import EXIT_REFUSED, EXIT_USAGE, _err, _settings

# -------------------------------------------------------------------------------- mutual recognition


eligibility_app = typer.Typer(help="Institution eligibility for mutual recognition (per catalogue category).",
                              no_args_is_help=True)

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

    from mrledger.node.wiring import ServeError, open_existing_store
    from mrledger.service.recognition import load_catalogue
    from mrledger.store.eligibility import Eligibility
    from mrledger.store.errors import StoreError

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

    from mrledger.node.wiring import ServeError, open_existing_store
    from mrledger.store.eligibility import Eligibility
    from mrledger.store.errors import StoreError

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

    from mrledger.node.wiring import ServeError, open_existing_store
    from mrledger.store.eligibility import Eligibility
    from mrledger.store.errors import StoreError

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
