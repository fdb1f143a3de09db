"""``mrledger audit chain``: the node's database against the registry on chain, without the HTTP API.

Why a command next to ``GET /v1/audit/hospitals/{hid}/consistency``: the audit must run where no API token
exists or no server runs — an auditor's box holding a copy of the database, a cron job, a monitor. Both call
``mrledger.service.audit.chain_consistency``, so they cannot disagree.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from mrledger.cli.common import EXIT_USAGE, _err, _settings
from mrledger.node.settings import Settings

#: Exit codes: 0 consistent, 1 inconsistent (something to investigate), 2 usage or the chain unreachable.
EXIT_CONSISTENT, EXIT_INCONSISTENT = 0, 1

audit_app = typer.Typer(help="Audits that read the node's database directly (no server needed).",
                        no_args_is_help=True)


def _node_rpc(settings: Settings) -> str | None:
    """The chain of the node whose data dir this is: MRL_RPC_URL, else the running node's ``serve.json``
    (a managed anvil's port changes from run to run)."""
    from mrledger.node.serve import SERVE_INFO

    if settings.rpc_url:
        return settings.rpc_url
    try:
        info = json.loads((settings.data_dir / SERVE_INFO).read_text())
    except (OSError, ValueError):
        return None
    rpc = info.get("rpc_url") if isinstance(info, dict) else None
    return rpc if isinstance(rpc, str) and rpc else None


@audit_app.command("chain")
def audit_chain(
    hospital_id: Annotated[str, typer.Argument(metavar="HOSPITAL", help="The hospital whose batches to compare.",
                                               show_default=False)],
    rpc: Annotated[str | None, typer.Option("--rpc", help="JSON-RPC endpoint of the chain (default: MRL_RPC_URL, "
                                            "else the running node's).", show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (the API's shape).")] = False,
) -> None:
    """Compare every batch of HOSPITAL in the node's database (MRL_DATA_DIR / MRL_DATABASE_URL) with the
    registry's batchOf, and every BatchAnchored event of the hospital with the database: a rewritten or
    dropped batch on either side shows. The registry is the one the database recorded for the chain.

    Exit codes:

    • 0  consistent

    • 1  inconsistent: roots differ, or a batch is missing on one side

    • 2  usage error: no database or chain, unknown hospital, the chain unreachable
    """
    from web3 import Web3

    from mrledger.anchoring.chain import ChainContext
    from mrledger.anchoring.errors import AnchoringError
    from mrledger.node.wiring import ServeError, open_existing_store
    from mrledger.service.audit import chain_consistency
    from mrledger.store import UnknownHospitalError
    from mrledger.store.anchors import Outbox
    from mrledger.store.errors import StoreError

    settings = _settings()
    try:
        store = open_existing_store(settings)
    except ServeError as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    url = rpc or _node_rpc(settings)
    if url is None:
        _err("no chain to compare with: pass --rpc, set MRL_RPC_URL, or run `mrledger serve` in this data dir")
        raise typer.Exit(EXIT_USAGE)
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": settings.rpc_timeout}))
    try:
        chain_id = int(w3.eth.chain_id)
    except Exception as exc:  # unreachable endpoint, not an EVM node
        _err(f"cannot reach the chain at {url}: {type(exc).__name__}")
        raise typer.Exit(EXIT_USAGE) from None
    deployment = Outbox(store).deployment(chain_id)
    if deployment is None:
        _err(f"the database records no registry on chain {chain_id}")
        raise typer.Exit(EXIT_USAGE)
    try:
        found = chain_consistency(store, ChainContext(w3, deployment.contract, chain_id), hospital_id)
    except (UnknownHospitalError, AnchoringError, StoreError) as exc:
        _err(str(exc) if not isinstance(exc, AnchoringError) else f"cannot read the registry: {exc}")
        raise typer.Exit(EXIT_USAGE) from None
    if as_json:
        typer.echo(json.dumps(found.to_obj(), indent=2))
    else:
        console = Console()
        console.print(f"[bold]{hospital_id}[/] on chain {found.chain_id}, registry {found.contract}", soft_wrap=True)
        console.print(f"  database: {found.db_batches} batch(es), last seq {found.last_seq_db}; chain: "
                      f"{found.chain_batches} BatchAnchored event(s), lastSeq {found.last_seq_chain}", highlight=False)
        for m in found.missing_on_chain:
            mark = "[red]✗[/]" if m.alarm else "[yellow]…[/]"
            console.print(f"  {mark} batch {m.seq} not on chain ({m.anchor_status})", highlight=False)
        for d in found.missing_in_db:
            console.print(f"  [red]✗[/] batch {d.seq} on chain (block {d.block_number}) but not in the database",
                          highlight=False)
        for r in found.root_mismatches:
            chain_word = (f"root {r.chain_root.hex()} size {r.chain_size}" if r.chain_root is not None
                          else f"commitment {r.chain_commitment.hex() if r.chain_commitment else '?'}")
            console.print(f"  [red]✗[/] batch {r.seq}: the database holds root {r.db_root.hex()} size {r.db_size}, "
                          f"the chain ({r.source}) {chain_word}", highlight=False, soft_wrap=True)
        console.print("[bold green]consistent[/]" if found.consistent else "[bold red]inconsistent[/]")
    raise typer.Exit(EXIT_CONSISTENT if found.consistent else EXIT_INCONSISTENT)
