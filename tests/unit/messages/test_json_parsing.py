"""Request bodies are parsed by orjson where it gives what the standard parser gives, and by
the standard parser wherever the two could differ (``jsonlimits.loads``)."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from integration.messages.jsonlimits import JsonLimits, _parse_int, loads


def reference(body: bytes | str) -> Any:
    """What the gateway parsed before orjson: the standard library, huge numbers kept huge."""
    return json.loads(body, parse_int=_parse_int, parse_constant=float)


def same(a: Any, b: Any) -> bool:
    """Equal values of equal types all the way down (``1 == 1.0`` is not enough; NaN equals
    NaN here)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


DOCUMENTS = [
    b'{"type": "metric", "data": {"value": 97.5, "labels": {"host": "a"}}}',
    b'{"a": 1, "a": 2}', b'{"a": 1, "b": 2, "a": 3}',  # the last duplicate wins, in place
    b'[1e-400, -1e-400, 1e-320]',  # underflow to zero, and a subnormal
    b'[-0, -0.0, 0.1, 1e5, 1E-5, 5e-324, 1.7976931348623157e308, 2.5e-308]',
    b'[999999999999999999, -999999999999999999]',  # 18 digits: orjson keeps ints
    b'[9223372036854775807, 9223372036854775808, -9223372036854775809]',  # past int64
    b'[18446744073709551616, 123456789012345678901234567890]',  # orjson: floats
    b'[NaN, Infinity, -Infinity, 1e400, -1e400]',
    b'"\\ud800"', b'"\\ud83d\\ude00"', b'"caf\\u00e9 \xc3\xa9"',
    b'\xef\xbb\xbf{"bom": true}',  # a UTF-8 byte order mark
    '{"t": "text, not bytes"}'.encode("utf-16"),
    b'{"id": "1234567890123456789012"}',  # a long digit run in a string: the slow path
    b'[' * 40 + b']' * 40,
    b' \t\r\n{"spaced" : [ 1 , 2 ] }\n',
]


@pytest.mark.parametrize("body", DOCUMENTS + [d.decode("utf-8", "surrogatepass")
                                               for d in DOCUMENTS[:10]])
def test_documents_parse_as_the_standard_parser_parses_them(body: bytes | str) -> None:
    assert same(loads(body), reference(body))


@pytest.mark.parametrize("body", [b"", b"{", b'{"a": }', b"[1,]", b'{"a" 1}', b"nul",
                                  b'"\x01"', b"\xff\xfe\xfa", b"[" * 100_000])
def test_malformed_documents_are_refused_with_the_standard_parsers_error(body: bytes) -> None:
    with pytest.raises((ValueError, RecursionError)) as expected:
        reference(body)
    with pytest.raises(type(expected.value)) as got:
        loads(body)
    assert str(got.value) == str(expected.value)


def test_numbers_parse_to_the_same_values() -> None:
    """orjson's float parsing is correctly rounded, like Python's: random decimal numbers of
    every length and exponent parse to the same double."""
    rng = random.Random(8)

    def digits(n: int) -> str:
        return "".join(rng.choice("0123456789") for _ in range(n))

    numbers = []
    for _ in range(20_000):
        whole = rng.choice("123456789") + digits(rng.randint(0, 8)) if rng.random() < 0.7 else "0"
        fraction = "." + digits(rng.randint(1, 17 - min(len(whole), 8)))
        exponent = f"e{rng.randint(-330, 298)}" if rng.random() < 0.5 else ""
        numbers.append(("-" if rng.random() < 0.3 else "") + whole + fraction + exponent)
    body = ("[" + ",".join(numbers) + "]").encode()
    assert len(orjson.loads(body)) == len(numbers)  # the fast path takes this document
    assert same(loads(body), reference(body))


def test_integers_past_64_bits_are_still_refused_by_the_limits() -> None:
    """The reason for the slow path: orjson would make these floats, which pass the limits."""
    for text in ("-9223372036854775809", "18446744073709551616", "1" * 30):
        value = loads(f'{{"n": {text}}}'.encode())["n"]
        assert JsonLimits().errors(value), text


def encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def breaks_a_limit(value: Any, max_depth: int, max_string: int, depth: int = 0) -> bool:
    """The limits as the API states them, written plainly (recursive) for comparison."""
    if isinstance(value, dict):
        return depth >= max_depth or any(
            len(k) > max_string or not encodable(k)
            or breaks_a_limit(v, max_depth, max_string, depth + 1)
            for k, v in value.items())
    if isinstance(value, list):
        return depth >= max_depth or any(
            breaks_a_limit(v, max_depth, max_string, depth + 1) for v in value)
    if isinstance(value, str):
        return len(value) > max_string or not encodable(value)
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) > 2**63 - 1
    return False


def test_the_limits_find_exactly_what_breaks_them() -> None:
    """Random JSON values near the limits (depth 3, strings of 5, some text not valid
    Unicode): ``errors`` reports a problem exactly when one exists, and the quick check that
    spares the full walk for valid values agrees with it."""
    from integration.messages.jsonlimits import _within

    rng = random.Random(3)
    scalars = [None, True, False, 0, -(2**63), 2**63 - 1, 2**63, -(2**63) + 1, 1.5,
               math.inf, -math.inf, math.nan, "", "abcde", "abcdef", "é\ud800", "\udfff",
               "\U0001f600"]

    def value(depth: int) -> Any:
        roll = rng.random()
        if roll < 0.25 and depth < 5:
            return [value(depth + 1) for _ in range(rng.randint(0, 3))]
        if roll < 0.5 and depth < 5:
            return {rng.choice(["k", "key", "abcdef", "\udc00"]) + str(i): value(depth + 1)
                    for i in range(rng.randint(0, 3))}
        return rng.choice(scalars)

    limits = JsonLimits(max_depth=3, max_string=5)
    outcomes = set()
    for _ in range(5000):
        sample = value(0)
        expected = breaks_a_limit(sample, 3, 5)
        assert bool(limits.errors(sample)) is expected, sample
        assert _within(sample, 5, 3) is not expected, sample
        outcomes.add(expected)
    assert outcomes == {True, False}


#: Text of any code point; some with lone surrogates, which ``st.text`` leaves out.
TEXT = st.one_of(st.text(max_size=6), st.lists(st.one_of(
    st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF,
                                   categories=["Cs"])), max_size=6).map("".join))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-(2**64), 2**64),
                    st.floats(), TEXT)
VALUES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                      | st.dictionaries(TEXT, children, max_size=4), max_leaves=24)


def nested(value: Any, depth: int) -> Any:
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


#: Shallow values, and values nested around the depth limit.
DOCUMENTS_OF_ANY_SHAPE = st.one_of(
    VALUES, st.builds(nested, VALUES, st.integers(min_value=28, max_value=40)))


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS_OF_ANY_SHAPE)
def test_what_the_limits_accept_the_store_writes_and_reads_back_unchanged(value: Any) -> None:
    """A value within the limits is encoded by orjson, the store's encoder, and decodes equal."""
    if not JsonLimits().errors(value):
        assert same(orjson.loads(orjson.dumps(value)), value)


@settings(max_examples=300, deadline=None)
@given(DOCUMENTS_OF_ANY_SHAPE)
def test_what_the_store_cannot_write_the_limits_refuse_at_a_writable_location(
        value: Any) -> None:
    """A value orjson refuses breaks a limit, and the errors that name it can be written."""
    errors = JsonLimits().errors(value)
    orjson.dumps(errors)
    try:
        orjson.dumps(value)
    except orjson.JSONEncodeError:
        assert errors
