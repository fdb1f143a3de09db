"""``mrledger monitor``: the independent monitor (src/mrledger/monitor/, docs/monitor.md). It needs no token and
never opens the node's database: a JSON-RPC URL, the registry's address, the node's public URL and the region's
trust anchors are all it reads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from mrledger.cli.common import EXIT_USAGE, _err

Paths = Annotated[list[Path] | None, typer.Option(exists=True, dir_okay=False, show_default=False)]


def monitor(
    rpc: Annotated[str, typer.Option("--rpc", help="JSON-RPC URL of a chain node (not the hospital's).")],
    contract: Annotated[str, typer.Option("--contract", help="The registry's address.")],
    node: Annotated[str, typer.Option("--node", help="The mrledger node's public base URL.")],
    state: Annotated[Path, typer.Option("--state", help="The monitor's own SQLite file (created if absent).")]
    = Path("monitor.db"),
    hospital: Annotated[list[str] | None, typer.Option(
        "--hospital", help="A hospital id to watch (repeat). Default: every hospital GET /v1/hospitals lists, "
                           "with --token.", show_default=False)] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="MRL_MONITOR_TOKEN", show_default=False,
                                              help="An auditor token: lists the node's hospitals (without "
                                                   "--hospital) and lets the monitor re-derive every batch's "
                                                   "status map (without it, maps are not checked).")] = None,
    from_block: Annotated[int, typer.Option("--from-block", min=0, help="First block to read events from "
                                            "(the registry's deployment block).")] = 0,
    trust: Annotated[list[Path] | None, typer.Option("--trust", exists=True, dir_okay=False, show_default=False,
                                                     help="PEM trust anchors hospital signatures must chain to "
                                                          "(repeat). Without it signatures are not checked.")] = None,
    intermediate: Annotated[list[Path] | None, typer.Option("--intermediate", exists=True, dir_okay=False,
                                                            show_default=False,
                                                            help="Intermediate CA whose CRL is given.")] = None,
    crl: Annotated[list[Path] | None, typer.Option("--crl", exists=True, dir_okay=False, show_default=False,
                                                   help="CRL (PEM or DER) to check revocation against (repeat).")]
    = None,
    allow_unsigned: Annotated[bool, typer.Option("--allow-unsigned", help="With --trust: an unsigned batch is "
                                                 "not a problem (a region that has not switched signing on).")]
    = False,
    withhold_delay: Annotated[float, typer.Option("--withhold-delay", min=0, help="Seconds after its block "
                                                  "within which the node must publish an anchored batch.")] = 3600,
    once: Annotated[bool, typer.Option("--once", help="One pass; exit 1 if it found a problem, 0 if clean.")]
    = False,
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between passes.")] = 30,
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics on this "
                                                     "port (not with --once).", show_default=False)] = None,
    witness_key: Annotated[Path | None, typer.Option("--witness-key", exists=True, dir_okay=False,
                                                     show_default=False,
                                                     help="Ed25519 PKCS#8 PEM key (mode 0600): sign checkpoints.")]
    = None,
    witness_out: Annotated[Path | None, typer.Option("--witness-out", file_okay=False, show_default=False,
                                                     help="Directory of <hospital>.json checkpoints "
                                                          "(default: beside --state).")] = None,
) -> None:
    """Watch the registry and the node from outside: gap-free sequences, anchored roots against the published
    heads, roots re-derived from the published leaves, signatures against the trust anchors (revocation
    included), signing times against block times, withheld batches and split views. Each problem is a JSON
    line on stdout."""
    from mrledger.monitor.run import Options, build, run
    from mrledger.monitor.sources import Node, NodeError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if (crl or intermediate) and not trust:
        _err("--crl and --intermediate need --trust")
        raise typer.Exit(EXIT_USAGE)
    hospitals = list(hospital or ())
    if not hospitals:
        if not token:
            _err("name the hospitals to watch with --hospital, or set MRL_MONITOR_TOKEN to list them from the node")
            raise typer.Exit(EXIT_USAGE)
        try:
            hospitals = Node(node).hospitals(token)
        except NodeError as exc:
            _err(str(exc))
            raise typer.Exit(EXIT_USAGE) from None
    options = Options(rpc, contract, node, state, hospitals, from_block, trust or (), intermediate or (), crl or (),
                      not allow_unsigned, withhold_delay, witness_key=witness_key, witness_out=witness_out,
                      token=token)
    try:
        built = build(options)
    except (ValueError, OSError) as exc:  # a state file of another deployment, a bad key or trust file
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    raise typer.Exit(run(built, once=once, interval=interval, metrics_port=metrics_port))
