"""``mrledger monitor``: an independent monitor for auditors (docs/monitor.md).

It checks a node from outside with nothing but a JSON-RPC endpoint, the registry's address, the node's public
hash-only batch data and the region's trust anchors, keeps its own small SQLite state, and may sign what it
checked as a witness. Layering: it imports ``ledger`` (pure verification) and the registry's ABI calls
(``anchoring.contract``), web3 and httpx — never ``store``, ``service`` or ``node``, and it never opens the
node's database (a test enforces the imports).
"""

from mrledger.monitor.checks import Deployment, Finding, check_batch
from mrledger.monitor.core import KINDS, Monitor, PassResult, Problem
from mrledger.monitor.sources import Chain, Node
from mrledger.monitor.state import State

__all__ = ["KINDS", "Chain", "Deployment", "Finding", "Monitor", "Node", "PassResult", "Problem", "State",
           "check_batch"]
