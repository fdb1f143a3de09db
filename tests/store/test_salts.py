"""The default salt source: slices of os.urandom blocks, never handed out twice, fresh after a fork."""

from __future__ import annotations

import os
import threading

from mrledger.store.salts import SaltPool


def test_salts_are_fresh_and_never_repeat_across_blocks_and_threads() -> None:
    pool = SaltPool(block=64)  # small blocks: many refills
    seen: list[bytes] = []
    lock = threading.Lock()

    def draw() -> None:
        mine = [pool(16) for _ in range(500)]
        with lock:
            seen.extend(mine)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 2000 and all(len(s) == 16 for s in seen)
    assert len(set(seen)) == 2000
    assert len(pool(100)) == 100  # larger than a block: drawn directly


def test_a_forked_child_does_not_reuse_the_parents_buffer() -> None:
    pool = SaltPool()
    pool(16)  # fill the buffer in the parent
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next salt and leave without running pytest's teardown
        os.write(write, pool(16))
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 16)
    os.close(read)
    os.close(write)
    assert child != pool(16)
