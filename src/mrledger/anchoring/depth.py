"""The confirmation depth a chain gets when ``MRL_CONFIRMATIONS`` is not set: how deep an anchor must be
before receipts carry it.

Why by chain: the depth is a promise about receipts (a receipt handed out should not lose its anchor), and
how far a chain can reorganise depends on the chain. It is no longer a promise the worker relies on: the
reconciliation (``mrledger.anchoring.reconcile``) finds and re-anchors whatever the chain loses at any depth, and the
verifier answers ``pending`` for a receipt whose anchor a reorg removed. So the depth trades how soon a
receipt is issued against how often a doctor may meet a ``pending`` receipt that was once ``authentic``.

* Local development chains (anvil, Hardhat, Ganache: chain ids 31337 and 1337) reorganise only when told to
  (``anvil_reorg``, ``evm_revert``): 1.
* Ethereum and its test networks: 12 blocks (~2.4 minutes), the customary safe depth; since the merge no
  reorg deeper than two blocks has happened outside finality incidents. Set 64 (two epochs, ~13 minutes) to
  issue receipts only for finalised anchors.
* Rollups (OP Stack, Arbitrum): their blocks come from a sequencer and reorganise only if it fails or its L1
  batch is reorganised; 12 of their blocks is seconds (2 s and 0.25 s blocks). That depth is kept — it costs
  nothing — and an operator who wants receipts to survive a sequencer failure sets the depth that covers the
  L1 batch posting delay instead.
* Any other chain: 12, the depth from which the verifier caches chain facts (``mrledger.anchoring.chain.FINAL_DEPTH``).
"""

from __future__ import annotations

from mrledger.anchoring.chain import FINAL_DEPTH

#: Chains that reorganise only on request (anvil's and Hardhat's default ids).
LOCAL_DEV_CHAINS = frozenset({31337, 1337})


def default_confirmations(chain_id: int) -> int:
    """``MRL_CONFIRMATIONS`` when unset, for the chain ``chain_id`` (see the module docstring)."""
    return 1 if chain_id in LOCAL_DEV_CHAINS else FINAL_DEPTH


__all__ = ["LOCAL_DEV_CHAINS", "default_confirmations"]
