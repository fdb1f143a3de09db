"""Prices and reorder reasons in the catalogue (service/recognition.py): what money saved and decisions rest on, so
a bad value stops the node at start-up with the file and the field named, like the rest of the catalogue."""

from __future__ import annotations

import pytest

from mrledger.service.recognition import DEFAULT_REORDER_REASONS, CatalogueError, default_catalogue, parse_catalogue
from tests.harness import Api

HEAD = 'format = "mrl-catalogue/1"\n[categories.lab]\nname = "Lab"\nwindow_days = 7\n'


def test_every_shipped_item_has_a_price_and_the_reasons_are_the_programmes() -> None:
    cat = default_catalogue()
    assert cat.currency == "CNY" and all(i.price_minor is not None and i.price_minor > 0 for i in cat.items)
    prices = {i.code: i.price_minor for i in cat.items}
    assert (prices["2345-7"], prices["ct-head"], prices["mr-abdomen"]) == (500, 20000, 65000)
    assert list(cat.reorder_reasons) == ["condition-changed", "result-too-old", "quality-doubt", "emergency",
                                         "patient-request", "not-in-catalogue", "other"]
    assert cat.reorder_reasons["other"].detail == "required"


def test_an_item_price_overrides_its_categorys_and_none_is_allowed() -> None:
    cat = parse_catalogue(HEAD + 'price = 12.5\n[[lab]]\nloinc = "2345-7"\nname = "Glucose"\ncategory = "lab"\n'
                                 '[[lab]]\nloinc = "2160-0"\nname = "Creatinine"\ncategory = "lab"\nprice = 8\n')
    assert [i.price_minor for i in cat.items] == [1250, 800]
    bare = parse_catalogue(HEAD + '[[lab]]\nloinc = "2345-7"\nname = "Glucose"\ncategory = "lab"\n')
    assert bare.items[0].price_minor is None
    assert list(bare.reorder_reasons) == list(DEFAULT_REORDER_REASONS) and bare.currency == "CNY"


@pytest.mark.parametrize(("extra", "message"), [
    ("price = -1\n", "categories.lab.price: Input should be greater than or equal to 0"),
    ("price = 12.345\n", "categories.lab.price: a price has at most two decimals"),
    ('price = "5"\n', "categories.lab.price"),
    ("price = 2000000\n", "less than or equal to 1000000"),
    ('currency = "yuan"\n', "currency"),
    ('[reorder_reasons.Bad]\nname = "x"\n', "reorder_reasons"),
    ('[reorder_reasons.other]\nname = "Other"\ndetail = "maybe"\n', "reorder_reasons.other.detail"),
    ("[reorder_reasons]\n", "reorder_reasons: Dictionary should have at least 1 item"),
], ids=["negative", "three-decimals", "string", "too-high", "currency", "reason-code", "detail-mode", "no-reasons"])
def test_bad_prices_and_reasons_are_refused_with_the_field(extra: str, message: str) -> None:
    # A top-level key goes before the first table; the rest extends [categories.lab] or adds a table.
    text = extra + HEAD if extra.startswith("currency") else HEAD + extra
    with pytest.raises(CatalogueError, match=r"catalogue x\.toml: ") as exc:
        parse_catalogue(text, "x.toml")
    assert message in str(exc.value)


def test_get_catalogue_serves_prices_currency_and_reasons(api: Api) -> None:
    body = api.client.get("/v1/catalogue").json()
    assert body["currency"] == "CNY"
    assert next(i for i in body["items"] if i["code"] == "ct-head")["price"] == 200.0
    assert {"code": "other", "name": "Other (explain)", "detail": "required"} in body["reorder_reasons"]
