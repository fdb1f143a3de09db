"""``python -m mrledger.anchoring --db URL --rpc URL --contract ADDRESS``: run the anchoring worker alone.

The submitter key comes from ``MRL_SUBMITTER_KEY`` or ``--key-file`` (never a command-line argument,
which other users could read in the process list). ``mrledger serve`` runs the same worker in-process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from datetime import timedelta
from pathlib import Path

from eth_account import Account
from web3 import Web3

from mrledger.anchoring.worker import AnchorWorker, WorkerConfig
from mrledger.store import Store
from mrledger.store.keyfiles import KeyFileError, read_private
from mrledger.store.locks import exclusive


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m mrledger.anchoring", description=__doc__)
    p.add_argument("--db", required=True)
    p.add_argument("--rpc", required=True)
    p.add_argument("--contract", required=True)
    p.add_argument("--key-file", type=Path)
    p.add_argument("--confirmations", type=int, default=1)
    p.add_argument("--interval", type=float, default=0.2)
    p.add_argument("--replace-after", type=float, default=30.0)
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:  # a key file group or others may read is refused (store/keyfiles.py)
        key = (read_private(a.key_file, "key file").decode().strip() if a.key_file
               else os.environ.get("MRL_SUBMITTER_KEY", ""))
    except (KeyFileError, OSError) as exc:
        raise SystemExit(str(exc)) from exc
    if not key:
        raise SystemExit("no submitter key: set MRL_SUBMITTER_KEY or pass --key-file")
    account = Account.from_key(key)
    store = Store.open(a.db)
    w3 = Web3(Web3.HTTPProvider(a.rpc, request_kwargs={"timeout": 10}))
    config = WorkerConfig(confirmations=a.confirmations, replace_after=timedelta(seconds=a.replace_after))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with exclusive(store.engine, f"anchoring-worker:{account.address}"):
        AnchorWorker(store, w3, a.contract, account, config).run(stop, interval=a.interval)


if __name__ == "__main__":
    main()
