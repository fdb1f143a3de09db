"""``mrledger keys …``: the master key of the encryption at rest — make one, rotate it, see what wraps what
(registered on the app in ``cli/main.py``; the procedure is in docs/encryption.md).

Why rotation is safe with a node running: the node unwrapped its data keys at start and holds them, and a
rotation re-wraps those same keys under a new master key — one transaction, all or nothing — so nothing the
node holds changes. The new key file is written next to the old one *before* that transaction and moved
over it only after commit, so at every instant one of the two files fits the database (and the store reads
the ``.new`` file if a crash came in between). Keys are never printed or logged, only their ids.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mrledger.cli.common import EXIT_REFUSED, EXIT_USAGE, _err, _settings

if TYPE_CHECKING:
    from mrledger.store import Store

keys_app = typer.Typer(help="Encryption at rest: the master key that wraps the database's data keys.",
                       no_args_is_help=True)


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option("--out", help="File to create (0600); an existing file is never "
                                      "overwritten.", show_default=False)],
) -> None:
    """Write a new random master key (64 hex digits) to a file.

    E.g. to give a node its key before its first start (MRL_MASTER_KEY_FILE), or to prepare the target of
    `keys rotate --new-master-key-file`.
    """
    from mrledger.store.crypto import MasterKey, write_master_key_file

    if out.exists():
        _err(f"{out} exists; a master key file is never overwritten (it may be the only key to a database)")
        raise typer.Exit(EXIT_USAGE)
    key = MasterKey.generate()
    write_master_key_file(out, key)
    typer.echo(f"master key {key.key_id} written to {out} (0600)")


@keys_app.command("rotate")
def keys_rotate(
    new_data_key: Annotated[bool, typer.Option("--new-data-key", help="Also start a new data key: rows written "
                                               "from each node's next start use it; older rows keep theirs.")]
    = False,
    new_master_key_file: Annotated[Path | None, typer.Option(
        "--new-master-key-file", show_default=False,
        help="Where the new master key is (used as is) or is to be written (0600). Required when the current "
             "key comes from MRL_MASTER_KEY; otherwise the key file in use is replaced in place.")] = None,
) -> None:
    """Re-wrap the database's data keys under a new master key, without stopping the node.

    The current master key is the configured one (MRL_MASTER_KEY_FILE, MRL_MASTER_KEY or <data_dir>/master.key).
    With a key file and no --new-master-key-file, a new key replaces that file after the database commits, and the
    old one is kept beside it as <file>.retired-<id> (move it offline with the backups it opens, or shred it).
    Exit 0 rotated, 1 refused (the configured key is not this database's), 2 usage.
    """
    from datetime import UTC, datetime

    from mrledger.node.wiring import ServeError, master_key_for, open_existing_store
    from mrledger.store.crypto import MasterKey, write_master_key_file
    from mrledger.store.errors import MasterKeyError
    from mrledger.store.keystore import rotate

    settings = _settings()
    try:
        source = master_key_for(settings, create=False)
        if source is None:
            raise ServeError(f"no master key: set MRL_MASTER_KEY_FILE or MRL_MASTER_KEY, or run in the node's data "
                             f"dir ({settings.data_dir}/master.key)")
        if new_master_key_file is None and not isinstance(source, Path):
            raise ServeError("the master key comes from MRL_MASTER_KEY: pass --new-master-key-file PATH for the new "
                             "one, then put it where MRL_MASTER_KEY comes from")
        pending = None
        if new_master_key_file is None:
            assert isinstance(source, Path)  # checked above
            pending = source.with_name(source.name + ".new")
        if pending is not None and pending.exists():
            raise ServeError(f"{pending} exists: an earlier rotation was interrupted. If `mrledger keys status` shows "
                             f"the keys wrapped by that file's key, move it over {source}; otherwise delete it")
        old = MasterKey.from_file(source) if isinstance(source, Path) else source
        store = open_existing_store(settings)  # checks that ``old`` is this database's key
    except (ServeError, MasterKeyError) as exc:
        _err(str(exc))
        raise typer.Exit(EXIT_REFUSED if isinstance(exc.__cause__, MasterKeyError) else EXIT_USAGE) from None
    target = pending or new_master_key_file
    assert target is not None
    try:
        if pending is None and target.exists():
            new = MasterKey.from_file(target)
        else:
            new = MasterKey.generate()
            write_master_key_file(target, new)  # before the transaction: never a database under an unsaved key
        result = rotate(store.unit_of_work, old, new, datetime.now(UTC), new_data_key=new_data_key)
    except BaseException as exc:
        # Remove the new key only when the database is known to be still under the old one; if that cannot be
        # told (the database went away), keep it: the next rotation then stops and says what to check.
        if pending is not None and _wrapped_by(store) == {old.key_id}:
            pending.unlink(missing_ok=True)
        if not isinstance(exc, MasterKeyError):
            raise
        _err(str(exc))
        raise typer.Exit(EXIT_REFUSED) from None
    lines = [f"re-wrapped {result.rewrapped} keys under master key {result.new_master_key_id} "
             f"(was {result.old_master_key_id})"]
    if pending is not None:
        assert isinstance(source, Path)
        retired = source.with_name(f"{source.name}.retired-{result.old_master_key_id}")
        # A second name for the old key first, then the new one over the first name in one rename: the file
        # the node reads always exists (a node that found none would generate a key that fits nothing).
        try:
            os.link(source, retired)  # kept: backups made before now open only with it
        except OSError:
            shutil.copy2(source, retired)
        os.replace(pending, source)
        lines.append(f"{source} now holds the new key; the old one is in {retired}: keep it offline with the "
                     "backups made before now, or shred it")
    else:
        lines.append(f"the new key is in {new_master_key_file}: point MRL_MASTER_KEY_FILE / MRL_MASTER_KEY at it "
                     "on every node before their next start")
    if result.new_data_key is not None:
        lines.append(f"data key {result.new_data_key} encrypts new rows from each node's next start")
    typer.echo("\n".join(lines))


def _wrapped_by(store: Store) -> set[str]:
    """The master key ids wrapping the database's keys; empty if the database cannot be read."""
    from mrledger.store.keystore import key_infos

    try:
        return {k.master_key_id for k in key_infos(store.read)}
    except Exception:
        return set()


@keys_app.command("status")
def keys_status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Show the database's keys (ids, purposes, the master key wrapping them) and rows still in clear.

    Exit 1 if the configured master key does not open them.
    """
    from mrledger.node.wiring import ServeError, master_key_for, open_existing_store
    from mrledger.store.crypto import MasterKey
    from mrledger.store.errors import MasterKeyError
    from mrledger.store.keystore import backlog_size, key_infos

    settings = _settings()
    try:
        store = open_existing_store(settings)
        source = master_key_for(settings, create=False)
    except ServeError as exc:  # a master key that does not fit this database is refused at open
        _err(str(exc))
        raise typer.Exit(EXIT_REFUSED if isinstance(exc.__cause__, MasterKeyError) else EXIT_USAGE) from None
    configured = None if source is None else (MasterKey.from_file(source) if isinstance(source, Path)
                                              else source).key_id
    unit = store.read
    infos, clear = key_infos(unit), backlog_size(unit)
    if as_json:
        typer.echo(json.dumps({"configured_master_key_id": configured, "rows_in_clear": clear, "keys": [
            {"id": k.id, "purpose": k.purpose, "master_key_id": k.master_key_id,
             "created_at": k.created_at.isoformat(), "current": k.current} for k in infos]}, indent=2))
        return
    typer.echo(f"configured master key: {configured or 'none'}")
    for k in infos:
        typer.echo(f"key {k.id}  {k.purpose}{'  current' if k.current else ''}  wrapped by {k.master_key_id}  "
                   f"created {k.created_at.isoformat()}")
    if not infos:
        typer.echo("no keys yet (the first start with a master key creates them)")
    if clear:
        typer.echo(f"{clear} rows still in clear (converted at the next open with the master key)")
