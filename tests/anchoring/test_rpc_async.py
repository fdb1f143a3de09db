"""mrledger.anchoring.rpc_async: the event loop's JSON-RPC client reads what web3 reads, from a real anvil and
Hardhat Network."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mrledger.anchoring import contract as reg
from mrledger.anchoring import readers as averify
from mrledger.anchoring.chain import CachedReader, Need
from mrledger.anchoring.rpc_async import AsyncRpc, RpcError, _read_chunked
from mrledger.anchoring.verify import verify_on_chain
from mrledger.ledger import hospital_key
from tests.anchoring.test_verify_cache import DEPTH, Chain, chain, chain2  # noqa: F401  (the fixtures)

pytestmark = pytest.mark.anvil


def test_batch_and_block_match_web3(chain: Chain) -> None:  # noqa: F811
    [receipt, *_] = chain.anchor()
    rpc = AsyncRpc.for_url(chain.node.rpc_url)
    assert rpc is not None
    hk, seq, number = hospital_key("gz-001"), receipt["batch"]["seq"], receipt["anchor"]["block_number"]

    async def run() -> tuple[Any, Any, list[Any]]:
        try:
            return (await rpc.batch_and_block(chain.contract, hk, seq, number),
                    await rpc.batch_and_block(chain.contract, hk, seq + 1, number + 1000),  # kept alive: again
                    await rpc.batch([("eth_chainId", [])]))
        finally:
            rpc.close()

    (stored, block), (absent, no_block), [chain_id] = asyncio.run(run())
    assert stored == reg.batch_of(chain.w3, chain.contract, hk, seq)
    expected = averify._fetch_block(chain.w3, number)
    assert expected is not None and block == (expected.hash, expected.timestamp)
    assert block[0] == receipt["anchor"]["block_hash"]
    assert absent is None and no_block is None
    assert int(chain_id, 16) == chain.w3.eth.chain_id


def test_errors_are_rpc_errors_and_other_endpoints_are_declined(chain: Chain) -> None:  # noqa: F811
    rpc = AsyncRpc.for_url(chain.node.rpc_url)
    assert rpc is not None
    with pytest.raises(RpcError, match="node error"):
        asyncio.run(rpc.batch([("no_such_method", [])]))
    for url in ("https://rpc.example.org", "ws://127.0.0.1:8545", "http://user:pw@host:1/"):
        assert AsyncRpc.for_url(url) is None


def test_chunked_bodies_are_read_whole() -> None:
    async def run() -> bytes:
        reader = asyncio.StreamReader()
        reader.feed_data(b"4\r\n[{\"a\r\n3;ext=1\r\n\":1\r\n2\r\n}]\r\n0\r\n\r\n")
        reader.feed_eof()
        return await _read_chunked(reader)

    assert asyncio.run(run()) == b'[{"a":1}]'


def test_fetch_caches_only_final_facts(chain: Chain) -> None:  # noqa: F811
    [receipt, *_] = chain.anchor()
    reader = CachedReader(chain.w3, final_depth=DEPTH, chain_id=chain.w3.eth.chain_id)
    assert reader.missing({"not": "a receipt"}) is None
    need = reader.missing(receipt)
    assert need == Need(receipt["anchor"]["contract"], hospital_key("gz-001"), receipt["batch"]["seq"],
                        receipt["anchor"]["block_number"])
    reader.head()
    facts = asyncio.run(reader.fetch(need))
    assert len(facts) == 2 and len(reader._batches) == len(reader._blocks) == 0  # shallow: this request only
    with averify.cache_only(), averify.fresh(facts):
        assert verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False).status == "valid"
    chain.mine(DEPTH)
    reader.head(max_age=0)
    asyncio.run(reader.fetch(need))
    assert len(reader._batches) == len(reader._blocks) == 1 and reader.missing(receipt) is None  # final: cached
    with averify.cache_only():
        assert verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False).status == "valid"


def test_fetch_of_a_v2_receipt_caches_only_final_facts(chain2: Chain) -> None:  # noqa: F811
    """An mrl-receipt/2 is read on the event loop too, in one round trip (``isAnchored`` at the claimed place,
    the block, the block's logs of the hospital): shallow facts serve one request, final ones are kept."""
    receipts = chain2.anchor()
    receipt = receipts[0]
    reader = CachedReader(chain2.w3, final_depth=DEPTH, chain_id=chain2.w3.eth.chain_id)
    need = reader.missing(receipt)
    assert need is not None and need.commitment is not None and need.hub is None  # one batch: stored alone
    reader.head()
    facts = asyncio.run(reader.fetch(need))
    key = (receipt["anchor"]["contract"].lower(), hospital_key("gz-001"), receipt["batch"]["seq"])
    assert facts["commit", key].tx_hash == receipt["anchor"]["tx_hash"] and len(reader._commits) == 0
    with averify.cache_only(), averify.fresh(facts):
        assert verify_on_chain(receipt, chain2.w3, reader=reader, onchain_proof=False).status == "valid"
    # Another map root: the registry does not hold that word; no fact, the worker thread decides (anchor-root).
    other = {**receipt, "anchor": {**receipt["anchor"], "map_root": "ab" * 32}}
    wrong = asyncio.run(reader.fetch(reader.missing(other)))  # type: ignore[arg-type]
    assert all(k[0] != "commit" for k in wrong)
    with averify.cache_only(), averify.fresh(wrong), pytest.raises(averify.CacheMiss):
        verify_on_chain(other, chain2.w3, reader=reader, onchain_proof=False)
    with averify.fresh(wrong):
        assert verify_on_chain(other, chain2.w3, reader=reader, onchain_proof=False).failed == "anchor-root"
    chain2.mine(DEPTH)
    reader.head(max_age=0)
    asyncio.run(reader.fetch(need))
    assert len(reader._commits) == 1 and reader.missing(receipt) is None  # final: cached
    with averify.cache_only():
        assert verify_on_chain(receipt, chain2.w3, reader=reader, onchain_proof=False).status == "valid"


def test_a_burst_for_one_shallow_anchor_shares_one_read_and_the_next_request_reads_again(chain: Chain) -> None:  # noqa: F811
    """Requests arriving while the same shallow facts are being read share that read: one round trip to the
    node for a burst, not one each. A request after it landed reads again, so a reorg is still seen by the
    next verification, and a failed read fails every request that shared it and is not kept."""
    [receipt, *_] = chain.anchor()
    reader = CachedReader(chain.w3, final_depth=DEPTH, chain_id=chain.w3.eth.chain_id)
    need = reader.missing(receipt)
    assert need is not None
    reader.head()

    async def burst(n: int) -> list[dict[tuple[Any, ...], Any]]:
        return list(await asyncio.gather(*(reader.fetch(need) for _ in range(n))))

    facts = asyncio.run(burst(20))
    assert reader.loop_flights.sent == 1 and len(reader.loop_flights) == 0
    assert all(f == facts[0] for f in facts) and len({id(f) for f in facts}) == 20  # each request its own
    assert len(reader._batches) == len(reader._blocks) == 0  # shallow: kept by no cache
    with averify.cache_only(), averify.fresh(facts[7]):
        assert verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False).status == "valid"
    chain.reorg(1)  # the anchoring block replaced by an empty one
    [after, again] = asyncio.run(burst(2))
    assert reader.loop_flights.sent == 2 and after == again
    with averify.cache_only(), averify.fresh(after):
        assert verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False).failed == "anchor-root"

    async def failing() -> tuple[list[Any], list[int]]:
        handle, seen = _one_shot_server([b"not json"])
        server = await asyncio.start_server(handle, "127.0.0.1", 0)  # type: ignore[arg-type]
        reader.rpc = AsyncRpc.for_url(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/")
        try:
            return list(await asyncio.gather(*(reader.fetch(need) for _ in range(5)), return_exceptions=True)), seen
        finally:
            server.close()

    errors, seen = asyncio.run(failing())
    assert reader.loop_flights.sent == 3 and len(reader.loop_flights) == 0 and len(seen) == 1
    assert len(errors) == 5 and all(isinstance(e, RpcError) for e in errors)


def _one_shot_server(answers: list[bytes]) -> tuple[asyncio.AbstractServer, list[int]]:
    """Not a node: answers each connection's first request with the next of ``answers``, then hangs up
    (as a node does when a kept-alive connection idles out); counts the connections."""
    seen: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(1)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(next(v for k, _, v in (line.partition(b":") for line in head.split(b"\r\n"))
                          if k.lower() == b"content-length"))
        await reader.readexactly(length)
        body = answers.pop(0)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()  # no "Connection: close": the client believes it may reuse the connection

    return handle, seen  # type: ignore[return-value]


def test_a_connection_the_node_closed_is_retried_once_and_garbage_is_an_rpc_error() -> None:
    async def run() -> tuple[list[Any], list[Any], list[int], str]:
        handle, seen = _one_shot_server([b'[{"jsonrpc":"2.0","id":0,"result":"0x1"}]',
                                         b'[{"jsonrpc":"2.0","id":0,"result":"0x2"}]', b"not json"])
        server = await asyncio.start_server(handle, "127.0.0.1", 0)  # type: ignore[arg-type]
        port = server.sockets[0].getsockname()[1]
        rpc = AsyncRpc.for_url(f"http://127.0.0.1:{port}/")
        assert rpc is not None
        try:
            first = await rpc.batch([("eth_blockNumber", [])])
            await asyncio.sleep(0.05)  # the server has hung up on the kept-alive connection by now
            second = await rpc.batch([("eth_blockNumber", [])])
            try:
                await rpc.batch([("eth_blockNumber", [])])
                error = ""
            except RpcError as exc:
                error = str(exc)
            return first, second, seen, error
        finally:
            rpc.close()
            server.close()

    first, second, seen, error = asyncio.run(run())
    assert first == ["0x1"] and second == ["0x2"]  # the second and third calls each found their pooled
    assert len(seen) == 3  # connection hung up on and opened a fresh one
    assert "not a JSON-RPC batch answer" in error


def test_receipts_that_name_no_possible_entry_are_not_fetched(chain: Chain) -> None:  # noqa: F811
    [receipt, *_] = chain.anchor()
    reader = CachedReader(chain.w3, final_depth=DEPTH, chain_id=chain.w3.eth.chain_id)
    for seq, block in ((-1, 1), (2**64, 1), (1, -5), ("x", 1)):
        odd = {**receipt, "batch": {**receipt["batch"], "seq": seq},
               "anchor": {**receipt["anchor"], "block_number": block}}
        assert reader.missing(odd) is None
