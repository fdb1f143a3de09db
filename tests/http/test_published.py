"""The public, hash-only batch endpoints a monitor reads (docs/monitor.md, docs/access.md §2): the signed head
and the leaf hashes, without a token, read from the database as it is now."""

from __future__ import annotations

from mrledger.ledger import BatchHead, merkle_root
from tests.harness import Api
from tests.http.test_audit import seal_batches, sql

GZ = "gz-001"


def test_head_and_leaves_are_public_hashes_that_rederive_the_root(api: Api) -> None:
    assert api.client.get(f"/v1/hospitals/{GZ}/batches/head").status_code == 404  # nothing sealed yet
    seal_batches(api, 2)
    head = api.client.get(f"/v1/hospitals/{GZ}/batches/head")
    assert head.status_code == 200, head.text
    latest = BatchHead.from_obj(head.json()["batch"])
    assert (latest.seq, latest.size) == (2, 2) and head.json()["signature"] is None  # this ledger does not sign

    r = api.client.get(f"/v1/hospitals/{GZ}/batches/1/leaves")
    assert r.status_code == 200, r.text
    body = r.json()
    # No ids, no records, no status; the map root is one hash over all keyed entries (docs/access.md §5).
    assert set(body) == {"hospital_id", "batch", "signature", "leaf_hashes", "map_root"}
    assert body["map_root"] == api.ledger.store.map_root(GZ, 1).hex()  # type: ignore[union-attr]
    first = BatchHead.from_obj(body["batch"])
    assert merkle_root([bytes.fromhex(h) for h in body["leaf_hashes"]]) == first.root
    assert body["leaf_hashes"] == [h.hex() for h in api.ledger.store.batch_leaves(GZ, 1)]

    # A leaf edited in the database shows at once (not hidden by the proof cache); deleted leaves are a 404.
    sql(api, "UPDATE record_versions SET leaf_hash = :h WHERE id = (SELECT record_version_id FROM batch_leaves "
             "WHERE hospital_id = :g AND seq = 1 AND leaf_index = 0)", h=b"\x07" * 32, g=GZ)
    edited = api.client.get(f"/v1/hospitals/{GZ}/batches/1/leaves").json()["leaf_hashes"]
    assert edited[0] == "07" * 32
    sql(api, "DELETE FROM batch_leaves WHERE hospital_id = :g AND seq = 2", g=GZ)
    gone = api.client.get(f"/v1/hospitals/{GZ}/batches/2/leaves")
    assert gone.status_code == 404 and gone.headers["content-type"].startswith("application/problem+json")
    assert api.client.get(f"/v1/hospitals/{GZ}/batches/3/leaves").status_code == 404
    assert api.client.get(f"/v1/hospitals/{GZ}/batches/0/leaves").status_code == 422
