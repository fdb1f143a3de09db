"""``mrledger kpis``: the regional recognition KPIs from a running node (``GET /v1/kpis``), as a table, JSON or
CSV. Through the HTTP API like ``submit`` and ``receipt``: an analyst holds an auditor token, not the database."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from mrledger.cli.client import ApiOpt, TokenOpt, _default_api
from mrledger.cli.common import EXIT_REFUSED, EXIT_USAGE, _err


def kpis(
    start: Annotated[datetime | None, typer.Option("--from", formats=["%Y-%m-%d"], show_default=False,
                                                   help="First day, YYYY-MM-DD (default: 30 days before --to).")]
    = None,
    to: Annotated[datetime | None, typer.Option("--to", formats=["%Y-%m-%d"], show_default=False,
                                                help="Last day, inclusive (default: today in --tz).")] = None,
    hospital: Annotated[str | None, typer.Option("--hospital", help="Only this hospital.", show_default=False)]
    = None,
    category: Annotated[str | None, typer.Option("--category", help="Only this catalogue category.",
                                                 show_default=False)] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of the days and months.")] = "UTC",
    anchored_only: Annotated[bool, typer.Option("--anchored-only", help="Count only records in batches whose "
                                                "anchor is confirmed.")] = False,
    as_csv: Annotated[bool, typer.Option("--csv", help="Print the CSV export (GET /v1/kpis.csv).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write the JSON or CSV here instead of stdout.",
                                             show_default=False)] = None,
    api: ApiOpt = None,
    token: TokenOpt = None,
) -> None:
    """Recognition KPIs: retrieval rate, post-retrieval recognition rate, reorders by reason, tests avoided and
    money saved, per hospital, with growth against the previous period of equal length (docs/kpis.md).

    Needs an auditor or admin token (MRL_TOKEN). Exit 0 with the report, 1 if the server refused (bad period,
    unknown hospital, wrong token), 2 if no server answers.
    """
    from mrledger.cli.http_client import ApiClient, ApiError, ClientError

    if as_csv and as_json:
        _err("--csv and --json exclude each other")
        raise typer.Exit(EXIT_USAGE)
    params = {"tz": tz}
    for key, value in (("from", start), ("to", to)):
        if value is not None:
            params[key] = value.date().isoformat()
    for key, text in (("hospital", hospital), ("category", category)):
        if text is not None:
            params[key] = text
    if anchored_only:
        params["anchored_only"] = "true"
    try:
        with ApiClient(api or _default_api(), token) as client:
            answer = client.kpis(params, csv=as_csv)
    except ApiError as exc:
        _err(f"{exc.title}" + (f": {exc.detail}" if exc.detail else ""))
        raise typer.Exit(EXIT_REFUSED) from None
    except ClientError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    if as_csv or as_json:
        text = answer if as_csv else json.dumps(answer, indent=2, ensure_ascii=False) + "\n"
        if out is None:
            typer.echo(text, nl=False)
        else:
            out.write_text(text, encoding="utf-8")
            Console(stderr=True).print(f"written to {out}", soft_wrap=True, highlight=False)
        return
    console = Console()
    if not console.is_terminal:  # piped or captured: rich would squeeze nine columns into 80
        console = Console(width=160)
    console.print(_table(answer))


def _pct(rate: dict[str, Any]) -> str:
    return "—" if rate["value"] is None else f"{rate['value'] * 100:.1f} %"


def _change(change: dict[str, Any], points: bool) -> str:
    value = change["value"]
    if value is None:
        return "—"
    return f"{value * 100:+.1f} pt" if points else f"{value * 100:+.1f} %"


def _table(rep: dict[str, Any]) -> Table:
    p, prev, cy = rep["period"], rep["previous_period"], rep["currency"]
    table = Table(title=f"Recognition KPIs {p['from']} .. {p['to']} ({p['tz']}), growth vs {prev['from']} .. "
                        f"{prev['to']}", show_header=True)
    for name in ("rank", "hospital", "retrieval", "recognition", "Δ recognition", "tests avoided",
                 f"money saved ({cy})", "Δ money", "reorders"):
        table.add_column(name, justify="left" if name == "hospital" else "right")
    rows = [(str(h["rank"]), h["hospital_id"], h["current"], h["growth"]) for h in rep["by_hospital"]]
    rows.append(("", "all", rep["totals"]["current"], rep["totals"]["growth"]))
    for rank, name, f, g in rows:
        table.add_row(rank, name, _pct(f["retrieval_rate"]), _pct(f["recognition_rate"]),
                      _change(g["recognition_rate"], True), str(f["tests_avoided"]), f"{f['money_saved']:,.2f}",
                      _change(g["money_saved"], False), str(f["reordered"]))
    src = rep["sources"]
    table.caption = (f"{src['records']} decisions and encounters counted, {src['confirmed']} in confirmed batches; "
                     f"{src['batch_count']} batches (--json lists them)")
    return table
