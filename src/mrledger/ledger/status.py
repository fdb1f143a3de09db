"""Where a batch, and a result version in it, stands on its way to the chain: the one vocabulary of the outbox,
the services, the API, the CLI and the web pages.

Why in the pure core: every layer names these states (the store persists them, the services decide with them,
the API documents them as enums in its OpenAPI), and a vocabulary written once at the bottom cannot drift the
way the five copies it replaced did (issue 17).
"""

from __future__ import annotations

from typing import Final, Literal

#: A batch: ``sealed`` (no ``anchors`` row) → ``submitted`` → ``included`` → ``confirmed``.
BatchStatus = Literal["sealed", "submitted", "included", "confirmed"]
#: Where a result version stands: ``pending`` (not sealed into a batch yet), then its batch's ``BatchStatus``.
AnchorStatus = Literal["pending", "sealed", "submitted", "included", "confirmed"]
PENDING: Final = "pending"
SEALED: Final = "sealed"
SUBMITTED: Final = "submitted"
INCLUDED: Final = "included"
CONFIRMED: Final = "confirmed"
#: The states in which the chain holds the batch.
ON_CHAIN: tuple[BatchStatus, ...] = (INCLUDED, CONFIRMED)
