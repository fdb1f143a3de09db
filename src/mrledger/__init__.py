"""mrledger: a blockchain-anchored mutual-recognition ledger for hospital results.

One import name, layered (imports only point down; tests/test_layers.py holds every arrow):

* ``mrledger.ledger`` — the pure core: records, RFC 8785 bytes, commitments, RFC 9162 trees, receipts and
  their offline verification, the intake adapters. No I/O; consensus-critical (docs/receipt.md).
* ``mrledger.store`` — SQLAlchemy 2 + Alembic: submission, sealing, receipts, the anchoring outbox.
* ``mrledger.anchoring`` — web3: the registry contract, the anchoring worker, the managed anvil, chain reads.
* ``mrledger.service`` — what the node does, without HTTP, terminal or environment: intake, verification,
  recognition, decisions, KPIs, audits, sealing, PKI.
* ``mrledger.node`` — the one reader of the environment (``Settings``) and the one composition root: ``serve``
  and its background process.
* ``mrledger.http`` — the FastAPI app and the web pages; ``mrledger.cli`` — the ``mrledger`` command.

Importing ``mrledger`` itself imports nothing else.
"""

__version__ = "0.1.0"
