"""The fast canonicaliser must give exactly rfc8785's bytes; where it cannot, it must fall back."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import _Fallback, _fast, canonicalize
from ledger.errors import EncodingError

json_scalars = (
    st.none() | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=3000, deadline=None)
@given(json_values)
def test_canonicalize_equals_rfc8785(value: Any) -> None:
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(EncodingError):
            canonicalize(value)
        return
    assert canonicalize(value) == expected


@pytest.mark.parametrize(
    "value",
    [1e-7, 1e21, 1.5e16, 2.0**60, 2**60, {"\U0001f600": 1, "\uffff": 2}, 5e-324],
    ids=["tiny", "huge", "above-1e16", "big-float", "big-int", "astral-keys", "subnormal"],
)
def test_values_outside_the_fast_path_fall_back(value: Any) -> None:
    with pytest.raises(_Fallback):
        _fast(value)
    try:
        expected = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError:
        with pytest.raises(EncodingError):
            canonicalize(value)
    else:
        assert canonicalize(value) == expected


@pytest.mark.parametrize(
    ("value", "jcs"),
    [  # RFC 8785 §3.2.2.3 / Appendix B number samples, and its string escaping rules.
        (4.10, b"4.1"), (5.0, b"5"), (-0.0, b"0"), (0.1, b"0.1"), (1e-4, b"0.0001"),
        (333333333.3333333, b"333333333.3333333"), (9007199254740991, b"9007199254740991"),
        ("\u20ac$\x0f\nA'B\"\\\\\"/", b'"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"'),
    ],
)
def test_known_answers(value: Any, jcs: bytes) -> None:
    assert canonicalize(value) == jcs
