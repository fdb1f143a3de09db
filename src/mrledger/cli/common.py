"""Helpers shared by the ``mrledger`` command modules: error output, settings, exit codes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:  # imported when called: commands that never read settings (``monitor``) load no node code
    from mrledger.node.settings import Settings

#: 2 is a usage error (shared with typer's own usage errors).
EXIT_USAGE = 2
#: Exit codes of the commands that talk to a server: 1 the server refused, 2 usage / unreachable, 3 pending.
EXIT_REFUSED, EXIT_PENDING = 1, 3


def _err(message: str) -> None:
    Console(stderr=True).print(f"[red]error:[/] {message}", soft_wrap=True, highlight=False, markup=True)


def _settings(**overrides: object) -> Settings:
    """Settings from MRL_* / .env, with command-line options (when given) taking precedence."""
    from pydantic import ValidationError

    from mrledger.node.settings import Settings

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        _err(f"invalid setting: {exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}")
        raise typer.Exit(EXIT_USAGE) from None
