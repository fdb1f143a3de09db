"""The api layer: HTTP routes, the ``mrledger`` CLI and the wiring that connects store, anchoring and ledger.

It sits on top of everything: it may import ``anchoring``, ``store`` and ``ledger``, and nothing imports
``api``. Keeping the dependency one-way means the pure core and the persistence layer can be tested,
reused and audited without dragging in a web framework or a terminal UI.
"""

import anchoring  # noqa: F401  (first: it keeps web3's dependencies from raising the recursion limit)
