"""The managed chain's state file: written atomically, checked before it is loaded, the previous one kept.

Why: anvil writes its whole chain to the ``--dump-state`` file when it stops (and every ``--state-interval``
seconds), in place. A stop with the disk full left a 0-byte ``anvil-state.json`` and the node could not
start again; a kill during a periodic dump leaves half a file. So anvil never writes the state file itself:
it loads ``anvil-state.json`` and dumps to ``anvil-state.json.dump``; after it exits (or at the next start,
when it died on its own) a dump that parses as a whole chain is promoted — the old state becomes
``anvil-state.json.prev``, the dump ``anvil-state.json``, each step a rename, so a valid state file exists
at every moment. A dump that does not parse is kept aside as ``.dump.bad`` and logged; the node starts from
the last good state and the anchors the chain lost are re-anchored from the database (anchoring/reconcile.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("mrledger.anvil")


class StateFileError(ValueError):
    """A chain state file that is not a whole anvil state (empty, truncated, not JSON)."""


def dump_path(state: Path) -> Path:
    return state.with_name(state.name + ".dump")


def previous_path(state: Path) -> Path:
    return state.with_name(state.name + ".prev")


def check_state(path: Path) -> int:
    """The block number a state file ends at; StateFileError saying what is wrong with it otherwise."""
    try:
        size = path.stat().st_size
        if size == 0:
            raise StateFileError(f"{path} is empty (0 bytes)")
        with open(path, "rb") as handle:
            state = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateFileError(f"{path} is not a readable anvil state ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or not isinstance(state.get("best_block_number"), int) \
            or not isinstance(state.get("accounts"), dict) or "block" not in state:
        raise StateFileError(f"{path} is JSON but not an anvil state (no accounts / block / best_block_number)")
    return int(state["best_block_number"])


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def promote_dump(state: Path) -> bool:
    """Make a complete dump the state file (the old one kept as ``.prev``); True if it did. A damaged dump is
    moved to ``.dump.bad`` with a warning, and the state file is left as it was."""
    dump = dump_path(state)
    if not dump.exists():
        return False
    try:
        block = check_state(dump)
    except StateFileError as exc:
        bad = dump.with_name(dump.name + ".bad")
        os.replace(dump, bad)
        log.warning("anvil could not save the chain (%s; a full disk?): kept %s as it was, the damaged dump is "
                    "%s; anchors the chain lost are re-anchored from the database", exc, state, bad)
        return False
    _fsync(dump)
    if state.exists():
        keep = previous_path(state)
        partial = keep.with_name(keep.name + ".tmp")
        partial.unlink(missing_ok=True)
        try:
            os.link(state, partial)  # a second name for the old state: no data written, works on a full disk
            os.replace(partial, keep)
        except OSError as exc:
            log.warning("could not keep the previous chain state as %s (%s)", keep, exc)
    os.replace(dump, state)
    _fsync(state.parent)
    log.info("saved the chain to %s (block %d)", state, block)
    return True


def loadable_state(state: Path) -> Path | None:
    """The state file to load (None: start an empty chain), after promoting a dump a previous anvil left.
    A damaged state file is refused with what to do, never loaded (anvil would start an empty chain or fail)."""
    promote_dump(state)
    if not state.exists():
        return None
    try:
        check_state(state)
    except StateFileError as exc:
        prev = previous_path(state)
        hint = f"the previous state is {prev}: move it to {state.name}" if prev.exists() else \
            "no previous state was kept"
        raise StateFileError(f"the managed chain's state cannot be loaded: {exc}. {hint.capitalize()}, or move "
                             f"{state.name} away to start an empty chain; either way the node re-anchors every batch "
                             "the chain lacks from its database (docs/anchoring.md, 'Operations')") from exc
    return state


__all__ = ["StateFileError", "check_state", "dump_path", "loadable_state", "previous_path", "promote_dump"]
