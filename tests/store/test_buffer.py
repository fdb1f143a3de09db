"""The buffered writer behind the access log and the verification index."""

from __future__ import annotations

import pytest

from mrledger.store.buffer import BufferedWriter


def test_unbuffered_writes_at_once_and_buffered_rows_survive_a_failed_write() -> None:
    written: list[list[dict[str, object]]] = []
    fail = {"on": False}

    def write(rows: list[dict[str, object]]) -> None:
        if fail["on"]:
            raise OSError("database is locked")
        written.append(list(rows))

    buf = BufferedWriter(write, "test")
    buf.put({"n": 0})
    assert written == [[{"n": 0}]]
    buf.start(interval=3600)  # the background thread never fires during the test
    buf.put({"n": 1})
    buf.put({"n": 2})
    fail["on"] = True
    with pytest.raises(OSError):
        buf.flush()
    buf.put({"n": 3})
    fail["on"] = False
    buf.close()  # a clean stop writes what is pending and queued, in order, once
    assert written == [[{"n": 0}], [{"n": 1}, {"n": 2}, {"n": 3}]]
    buf.put({"n": 4})  # closed: back to writing at once
    assert written[-1] == [{"n": 4}]
