"""Anchoring batch roots on an EVM chain: the registry's ABI (``mrledger.anchoring.contract``), a local anvil node
(``mrledger.anchoring.node``) and the typed errors both raise (``mrledger.anchoring.errors``).

Kept free of imports so that ``import mrledger.anchoring.node`` does not pull in web3 — with one exception, below.
"""

import sys as _sys

# py_ecc, imported by web3 and eth-account (everything in this package that talks to a chain), raises the
# interpreter's recursion limit to 100,000 when it is first imported. The limit is what stops deep
# recursion with a RecursionError before the C stack overflows, so at 100,000 a deep enough JSON document
# crashed the node with a segfault in the C decoder (issue 14). Importing it here first, once, and putting
# the limit back keeps it at its value for the whole process: py_ecc sets it only on its first import.
# Every ``anchoring.*`` module and the ``api`` package (which imports this one) run this before they
# import web3. Costs ~25 ms of start-up; tests/anchoring/test_recursion_limit.py holds it.
_limit = _sys.getrecursionlimit()
import py_ecc  # noqa: E402,F401  (for its side effect, undone on the next line)

_sys.setrecursionlimit(_limit)
del _limit
