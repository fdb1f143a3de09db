"""The monitor's own state: a small SQLite file, never the node's database.

What it holds, and why each piece survives a restart:

* ``meta``: the last block checked, and the chain id and registry it was checked on (a state file pointed at
  another deployment is refused rather than silently mixed).
* ``blocks``: the hashes of the last ``keep_blocks`` blocks the monitor read events up to, and of every block
  that carried an anchor among them. A stored hash the chain no longer has is a reorg: everything after the
  last block still on chain is forgotten and read again (``rollback``).
* ``anchors``: every ``BatchAnchored`` event seen, with the block's time and where its check stands
  (``pending`` until the node publishes the batch, then ``ok`` or ``problem``). ``chain`` is a running hash of
  the hospital's anchored (seq, root, size), the commitment a witness signs (``mrledger.monitor.witness``).
* ``problems``: what was reported, so a problem is written once, not on every poll.
* ``smap``: each hospital's status map as this monitor re-derived it (key → mrl-smap/1 value), with the last
  batch applied in ``meta`` (``smap_seq:<hospital key>``): the previous map every next batch is checked from.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrledger.ledger.statusmap import StatusValue
from mrledger.ledger.witness import chain_hash

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (number INTEGER PRIMARY KEY, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS anchors (
    hkey BLOB NOT NULL, seq INTEGER NOT NULL, root BLOB NOT NULL, size INTEGER NOT NULL,
    block INTEGER NOT NULL, block_time INTEGER NOT NULL, chain BLOB NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending', commitment BLOB, PRIMARY KEY (hkey, seq));
CREATE INDEX IF NOT EXISTS anchors_block ON anchors (block);
CREATE TABLE IF NOT EXISTS smap (hkey BLOB NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,
    PRIMARY KEY (hkey, key));
CREATE TABLE IF NOT EXISTS problems (
    kind TEXT NOT NULL, hkey BLOB NOT NULL, seq INTEGER NOT NULL, detail TEXT NOT NULL, block INTEGER,
    PRIMARY KEY (kind, hkey, seq));
"""

#: The running commitment of a hospital before its first batch (also where a monitor started mid-way begins).
GENESIS = bytes(32)


@dataclass(frozen=True, slots=True)
class AnchorRow:
    hkey: bytes
    seq: int
    root: bytes
    size: int
    block: int
    block_time: int
    chain: bytes
    status: str
    #: A v2 registry's word; ``root``/``size`` are then empty/0 (and ``chain`` empty) until ``resolve``.
    commitment: bytes | None = None

    @property
    def resolved(self) -> bool:
        return self.size > 0


class State:
    """One SQLite connection, used by one thread (the monitor's loop)."""

    def __init__(self, path: Path | str, *, keep_blocks: int = 128) -> None:
        self.db = sqlite3.connect(str(path), isolation_level=None)
        # WAL with synchronous=NORMAL: a commit is not an fsync (the state can be re-derived from the chain and
        # the node; losing the last pass to a power cut only means checking it again). Per-write fsyncs made
        # a pass over 10,000 results spend most of its time waiting for the disk.
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        columns = {r[1] for r in self.db.execute("PRAGMA table_info(anchors)")}
        if "commitment" not in columns:  # a state file written before v2 registries
            self.db.execute("ALTER TABLE anchors ADD COLUMN commitment BLOB")
        self.keep_blocks = keep_blocks

    def close(self) -> None:
        self.db.close()

    # -- meta ----------------------------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                        (key, value))

    def bind(self, chain_id: int, contract: str) -> None:
        """Refuse a state file made for another deployment: its checkpoints would mean nothing here."""
        want = f"{chain_id}:{contract.lower()}"
        have = self.get("deployment")
        if have is None:
            self.put("deployment", want)
        elif have != want:
            raise ValueError(f"this state file belongs to deployment {have}, not {want}")

    def last_block(self) -> int | None:
        value = self.get("last_block")
        return None if value is None else int(value)

    # -- blocks and reorgs ---------------------------------------------------------------------------

    def block_hashes(self) -> list[tuple[int, str]]:
        """Newest first."""
        return [(int(n), str(h)) for n, h in self.db.execute("SELECT number, hash FROM blocks ORDER BY number DESC")]

    def record_blocks(self, hashes: dict[int, str], last_block: int) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO blocks VALUES (?, ?)", sorted(hashes.items()))
            self.db.execute("DELETE FROM blocks WHERE number <= ? AND number NOT IN (SELECT block FROM anchors)",
                            (last_block - self.keep_blocks,))
            self.put("last_block", str(last_block))

    def rollback(self, to_block: int) -> list[tuple[bytes, int]]:
        """Forget everything read after ``to_block`` (a reorg replaced it); returns the (hospital key, seq) of
        the anchors forgotten. Reported problems stay: they were true of the chain the monitor saw."""
        with self.db:
            self.db.execute("BEGIN")
            gone = [(bytes(k), int(s)) for k, s in
                    self.db.execute("SELECT hkey, seq FROM anchors WHERE block > ? ORDER BY block", (to_block,))]
            self.db.execute("DELETE FROM anchors WHERE block > ?", (to_block,))
            self.db.execute("DELETE FROM blocks WHERE number > ?", (to_block,))
            self.put("last_block", str(to_block))
        return gone

    # -- anchors -------------------------------------------------------------------------------------

    def last_anchor(self, hkey: bytes) -> AnchorRow | None:
        row = self.db.execute("SELECT * FROM anchors WHERE hkey = ? ORDER BY seq DESC LIMIT 1", (hkey,)).fetchone()
        return None if row is None else _row(row)

    def add_anchor(self, hkey: bytes, seq: int, root: bytes, size: int, block: int, block_time: int,
                   commitment: bytes | None = None) -> AnchorRow:
        """A v2 anchor (``commitment``) has no root and size yet: its witness chain is computed when the node's
        published head is found to hash to the commitment (``resolve``)."""
        previous = self.last_anchor(hkey)
        chain = b""
        if size > 0 and (previous is None or previous.chain):
            chain = chain_hash(GENESIS if previous is None else previous.chain, seq, root, size)
        self.db.execute("INSERT OR REPLACE INTO anchors VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                        (hkey, seq, root, size, block, block_time, chain, commitment))
        return AnchorRow(hkey, seq, root, size, block, block_time, chain, "pending", commitment)

    def resolve(self, hkey: bytes, seq: int, root: bytes, size: int) -> None:
        """Set a v2 anchor's (root, size) — checked against its commitment by the caller — and compute the
        witness chain from there on, for as long as the rows are resolved and consecutive (a row still waiting
        for its node data stops it; its own ``resolve`` continues it)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("UPDATE anchors SET root = ?, size = ? WHERE hkey = ? AND seq = ?", (root, size, hkey, seq))
            first = self.first_anchor(hkey)
            before = None if first is None or first.seq == seq else self.anchor(hkey, seq - 1)
            if first is None or (first.seq != seq and (before is None or not before.chain)):
                return
            chain = GENESIS if before is None else before.chain
            for r in self.db.execute("SELECT * FROM anchors WHERE hkey = ? AND seq >= ? ORDER BY seq",
                                     (hkey, seq)).fetchall():
                row = _row(r)
                if row.seq != seq or not row.resolved:
                    break
                chain = chain_hash(chain, row.seq, row.root, row.size)
                self.db.execute("UPDATE anchors SET chain = ? WHERE hkey = ? AND seq = ?", (chain, hkey, row.seq))
                seq += 1

    def anchor(self, hkey: bytes, seq: int) -> AnchorRow | None:
        row = self.db.execute("SELECT * FROM anchors WHERE hkey = ? AND seq = ?", (hkey, seq)).fetchone()
        return None if row is None else _row(row)

    def pending(self) -> list[AnchorRow]:
        return [_row(r) for r in self.db.execute("SELECT * FROM anchors WHERE status = 'pending' ORDER BY block, seq")]

    def set_status(self, hkey: bytes, seq: int, status: str) -> None:
        self.db.execute("UPDATE anchors SET status = ? WHERE hkey = ? AND seq = ?", (status, hkey, seq))

    def first_anchor(self, hkey: bytes) -> AnchorRow | None:
        row = self.db.execute("SELECT * FROM anchors WHERE hkey = ? ORDER BY seq LIMIT 1", (hkey,)).fetchone()
        return None if row is None else _row(row)

    def checkpoint(self, hkey: bytes) -> AnchorRow | None:
        """The highest anchor of the hospital below which every anchor the monitor saw checked ``ok``: what a
        witness may sign (a batch still pending or in problem stops it)."""
        stop = self.db.execute("SELECT MIN(seq) FROM anchors WHERE hkey = ? AND status != 'ok'", (hkey,)).fetchone()[0]
        row = self.db.execute("SELECT * FROM anchors WHERE hkey = ? AND status = 'ok' AND seq < ? "
                              "ORDER BY seq DESC LIMIT 1", (hkey, 2**63 - 1 if stop is None else stop)).fetchone()
        return None if row is None else _row(row)

    def hospitals(self) -> list[bytes]:
        return [bytes(k) for (k,) in self.db.execute("SELECT DISTINCT hkey FROM anchors ORDER BY hkey")]

    # -- status maps ---------------------------------------------------------------------------------

    def map_seq(self, hkey: bytes) -> int:
        value = self.get(f"smap_seq:{hkey.hex()}")
        return 0 if value is None else int(value)

    def map_entries(self, hkey: bytes) -> dict[bytes, StatusValue]:
        return {bytes(k): StatusValue.from_bytes(bytes(v))
                for k, v in self.db.execute("SELECT key, value FROM smap WHERE hkey = ?", (hkey,))}

    def save_map(self, hkey: bytes, seq: int, changes: dict[bytes, StatusValue]) -> None:
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO smap VALUES (?, ?, ?)",
                                [(hkey, k, v.to_bytes()) for k, v in changes.items()])
            self.put(f"smap_seq:{hkey.hex()}", str(seq))

    # -- problems ------------------------------------------------------------------------------------

    def note_problem(self, kind: str, hkey: bytes, seq: int, detail: str, block: int | None) -> bool:
        """True the first time this kind of problem is seen for this batch (then it is reported), False after:
        a withheld batch is reported once, not on every poll, whatever its detail says by then."""
        cur = self.db.execute("INSERT OR IGNORE INTO problems VALUES (?, ?, ?, ?, ?)", (kind, hkey, seq, detail, block))
        return cur.rowcount == 1


def _row(row: tuple[Any, ...]) -> AnchorRow:
    hkey, seq, root, size, block, block_time, chain, status, commitment = row
    return AnchorRow(bytes(hkey), int(seq), bytes(root), int(size), int(block), int(block_time), bytes(chain),
                     str(status), None if commitment is None else bytes(commitment))
