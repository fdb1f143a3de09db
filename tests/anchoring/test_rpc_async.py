"""anchoring.rpc_async: the event loop's JSON-RPC client reads what web3 reads, from a real anvil."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from anchoring import contract as reg
from anchoring import verify as averify
from anchoring.rpc_async import AsyncRpc, RpcError, _read_chunked
from anchoring.verify import CachedReader, Need
from ledger import hospital_key
from tests.anchoring.test_verify_cache import DEPTH, Chain, chain  # noqa: F401  (the fixture)

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
        assert averify.verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False).status == "valid"
    chain.mine(DEPTH)
    reader.head(max_age=0)
    asyncio.run(reader.fetch(need))
    assert len(reader._batches) == len(reader._blocks) == 1 and reader.missing(receipt) is None  # final: cached
    with averify.cache_only():
        assert averify.verify_on_chain(receipt, chain.w3, reader=reader, onchain_proof=False).status == "valid"
