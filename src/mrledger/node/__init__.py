"""``mrledger.node`` (the layers: the ``mrledger`` package docstring)."""

import mrledger.anchoring  # noqa: F401  (first: it keeps web3's dependencies from raising the recursion limit)
