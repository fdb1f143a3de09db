"""Anchoring batch roots on an EVM chain: the registry's ABI (``anchoring.contract``), a local anvil node
(``anchoring.node``) and the typed errors both raise (``anchoring.errors``).

Kept free of imports so that ``import anchoring.node`` does not pull in web3.
"""
