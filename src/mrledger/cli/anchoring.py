"""``mrledger anchor``: the anchoring worker alone, beside an API-only node (``MRL_WORKER=false``) or for tests.

``mrledger serve`` runs the same worker in its child process (node/background.py). ``python -m mrledger.anchoring``
is an alias of this command. The submitter key comes from ``--key-file`` or ``MRL_SUBMITTER_KEY`` (through
``Settings``), never from a command-line argument, which other users could read in the process list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrledger.cli.common import EXIT_USAGE, _err, _settings


def anchor(
    rpc: Annotated[str | None, typer.Option("--rpc", help="JSON-RPC endpoint of the chain (default: MRL_RPC_URL).",
                                            show_default=False)] = None,
    contract: Annotated[str | None, typer.Option("--contract", help="Registry address (default: "
                                                 "MRL_CONTRACT_ADDRESS).", show_default=False)] = None,
    db: Annotated[str | None, typer.Option("--db", help="Database (default: MRL_DATABASE_URL, else the data "
                                           "dir's).", show_default=False)] = None,
    key_file: Annotated[Path | None, typer.Option("--key-file", help="File holding the anchoring account's "
                                                  "private key (default: MRL_SUBMITTER_KEY).")] = None,
    confirmations: Annotated[int, typer.Option("--confirmations", min=1)] = 1,
    interval: Annotated[float, typer.Option("--interval", min=0.0, help="Seconds between steps.")] = 0.2,
    replace_after: Annotated[float, typer.Option("--replace-after", min=0.0, help="Seconds before a stuck "
                                                 "transaction is re-sent with a higher fee.")] = 30.0,
) -> None:
    """Run the anchoring worker until SIGINT or SIGTERM: send sealed batch roots to the registry, exactly once."""
    import logging
    import signal
    import threading
    from datetime import timedelta

    from eth_account import Account
    from web3 import Web3

    from mrledger.anchoring.worker import AnchorWorker, WorkerConfig
    from mrledger.store import Store
    from mrledger.store.keyfiles import KeyFileError, read_private
    from mrledger.store.locks import exclusive

    settings = _settings()
    rpc, contract = rpc or settings.rpc_url, contract or settings.contract_address
    if not rpc or not contract:
        _err("say which chain and registry: --rpc and --contract (or MRL_RPC_URL and MRL_CONTRACT_ADDRESS)")
        raise typer.Exit(EXIT_USAGE)
    try:  # a key file group or others may read is refused (store/keyfiles.py)
        key = (read_private(key_file, "key file").decode().strip() if key_file
               else settings.submitter_key.get_secret_value() if settings.submitter_key else "")
    except (KeyFileError, OSError) as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_USAGE) from None
    if not key:
        _err("no submitter key: set MRL_SUBMITTER_KEY or pass --key-file")
        raise typer.Exit(EXIT_USAGE)
    try:
        account = Account.from_key(key)
    except Exception:  # never echo the key
        _err("the submitter key is not a valid private key")
        raise typer.Exit(EXIT_USAGE) from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = Store.open(db or settings.db_url)
    w3 = Web3(Web3.HTTPProvider(rpc, request_kwargs={"timeout": 10}))
    config = WorkerConfig(confirmations=confirmations, replace_after=timedelta(seconds=replace_after))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with exclusive(store.engine, f"anchoring-worker:{account.address}"):
        AnchorWorker(store, w3, contract, account, config, fault=settings.fault_inject).run(stop, interval=interval)
