"""The fast canonicaliser must give exactly rfc8785's bytes; where it cannot, it must fall back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from mrledger.ledger.canonical import MAX_JSON_DEPTH, _Fallback, _fast, canonicalize, check_depth, parse_json
from mrledger.ledger.errors import EncodingError

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


# -- strict parsing: depth before decoding, numbers a double cannot hold, lone surrogates, BOM (issue 14) --


def _depth(value: Any) -> int:
    """Reference nesting depth of a decoded value: the outermost array or object is level 1."""
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


tricky_text = st.text(alphabet='[]{}"\\ab\u00e9\U0001f600', max_size=6)
nested = st.recursive(
    st.none() | st.integers() | tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=40,
)


@settings(max_examples=2000, deadline=None)
@given(nested, st.booleans())
def test_check_depth_is_exact_on_valid_json(value: Any, ascii_only: bool) -> None:
    """Brackets and escaped quotes inside strings (keys too) do not count; the bound is exact: a document
    is refused at ``limit = depth - 1`` and passes at ``limit = depth``."""
    data = json.dumps(value, ensure_ascii=ascii_only).encode()
    depth = _depth(value)
    check_depth(data, depth)
    if depth:
        with pytest.raises(EncodingError, match="nests deeper"):
            check_depth(data, depth - 1)


def _decoder_reach(data: bytes) -> int:
    """The deepest level a decoder can reach in ``data``, whatever else is wrong with it: brackets outside
    strings, scanned up to the first backslash outside a string (where every decoder stops: a syntax error)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in data.decode("latin-1"):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "\\":
            break
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet='[]{}"\\a,', max_size=60), st.integers(0, 12))
def test_check_depth_bounds_what_a_decoder_can_reach_in_any_bytes(text: str, limit: int) -> None:
    """Safety on malformed input (unbalanced, stray quotes and backslashes): whenever ``check_depth``
    lets a document through, no decoder can recurse deeper than the limit in it."""
    data = text.encode()
    try:
        check_depth(data, limit)
    except EncodingError:
        return
    assert _decoder_reach(data) <= limit


@pytest.mark.parametrize("levels", [MAX_JSON_DEPTH, MAX_JSON_DEPTH + 1])
@pytest.mark.parametrize("shape", ["arrays", "objects", "mixed"])
def test_parse_json_refuses_nesting_beyond_the_documented_maximum(levels: int, shape: str) -> None:
    pairs = {"arrays": [("[", "]")], "objects": [('{"a":', "}")], "mixed": [("[", "]"), ('{"a":', "}")]}[shape]
    chosen = [pairs[i % len(pairs)] for i in range(levels)]
    text = "".join(o for o, _ in chosen) + "1" + "".join(c for _, c in reversed(chosen))
    assert _depth(json.loads(text)) == levels
    if levels <= MAX_JSON_DEPTH:
        assert parse_json(text) == json.loads(text)
    else:
        with pytest.raises(EncodingError, match=f"deeper than {MAX_JSON_DEPTH} levels"):
            parse_json(text)


@pytest.mark.parametrize("data", [b"[" * 80_000, b'{"a":' * 80_000, b"[" * 80_000 + b"]" * 80_000,
                                  b'["' + b"[" * 80_000 + b'"]'],
                         ids=["open-arrays", "open-objects", "balanced", "inside-a-string"])
def test_deep_documents_are_refused_without_decoding(data: bytes) -> None:
    if data.startswith(b'["'):  # brackets inside a string are text: fine at any count
        assert parse_json(data) == ["[" * 80_000]
        return
    with pytest.raises(EncodingError, match="nests deeper"):
        parse_json(data)


def test_deep_json_does_not_crash_the_interpreter_under_a_raised_recursion_limit() -> None:
    """The crash of issue 14 #1: with the recursion limit py_ecc sets (100,000), the C decoder recursed into
    a segfault at ~75,000 levels. In a child process: a segfault must not take the test run with it."""
    code = ("import sys; sys.setrecursionlimit(100_000)\n"
            "from mrledger.ledger import parse_json\n"
            "from mrledger.ledger.errors import EncodingError\n"
            "try:\n    parse_json(b'[' * 80_000)\nexcept EncodingError as exc:\n    print('refused:', exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "refused: JSON nests deeper than 128 levels" in done.stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [("1e400", "beyond the range"), ("-1e400", "beyond the range"), ("[1.7976931348623159e308]", "beyond the range"),
     ("1e-400", "too small"), ("-2.5e-400", "too small"), ('{"v": 0.' + "0" * 400 + '1}', "too small"),
     ("1" + "0" * 5000, "invalid JSON")],
    ids=["1e400", "-1e400", "just-above-max", "1e-400", "-2.5e-400", "long-underflow", "5000-digit-int"],
)
def test_numbers_no_double_can_hold_are_refused_at_parse_time(text: str, message: str) -> None:
    """Issue 14 #12: 1e-400 was stored as 0 with a 202 and 1e400 became inf, refused only later."""
    with pytest.raises(EncodingError, match=message):
        parse_json(text)


@pytest.mark.parametrize("text", ["0e-400", "-0.0", "0.000", "5e-324", "1.7976931348623157e308",
                                  "2.2250738585072014e-308"])
def test_zero_and_the_extremes_of_the_double_range_still_parse(text: str) -> None:
    assert parse_json(text) == float(text)


@pytest.mark.parametrize("text", ['"\\ud800"', '{"\\udc00": 1}', '["a", {"b": ["\\ud83d"]}]', '"\\ude00\\ud83d"'],
                         ids=["value", "key", "nested", "reversed-pair"])
def test_lone_surrogate_escapes_are_refused(text: str) -> None:
    with pytest.raises(EncodingError, match="lone surrogate"):
        parse_json(text)
    with pytest.raises(EncodingError, match="lone surrogate"):
        parse_json(text.encode())


def test_paired_surrogate_escapes_and_escaped_backslashes_are_text() -> None:
    assert parse_json('"\\ud83d\\ude00"') == "\U0001f600"
    assert parse_json('"\\\\ud800"') == "\\ud800"  # an escaped backslash, then the letters ud800


def test_byte_order_mark_is_refused() -> None:
    with pytest.raises(EncodingError, match="BOM"):
        parse_json(b"\xef\xbb\xbf{}")


def test_canonicalize_refuses_a_key_with_a_lone_surrogate_with_an_encoding_error() -> None:
    """It raised a bare UnicodeEncodeError (rfc8785 sorts keys by their UTF-16 form)."""
    with pytest.raises(EncodingError, match="lone surrogate"):
        canonicalize({"\ud800": 1})
