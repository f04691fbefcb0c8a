"""realtime.payload: what data may be a message, and how an unsendable stored row is sent."""

from __future__ import annotations

import json

import pytest

from realtime import payload


@pytest.mark.parametrize(
    "data",
    [None, True, 0, -(2**70), 1.5, "", "é ☃ 😀", [1, [2, {"a": None}]], {"k": "v", "n": {}}],
)
def test_ordinary_json_is_accepted(data):
    assert payload.problem(data) is None


@pytest.mark.parametrize(
    "data, words",
    [
        ("\ud800", "lone surrogate"),
        ({"k": ["ok", "\udfff"]}, "lone surrogate"),
        ({"\ud83d": 1}, "lone surrogate"),  # in a key
        ("a\x00b", "NUL"),
        ({"\x00": 1}, "NUL"),
        (float("nan"), "NaN"),
        (float("inf"), "NaN"),
        ({1, 2}, "JSON"),
        (object(), "JSON"),
    ],
)
def test_unstorable_or_unsendable_data_is_refused_with_the_reason(data, words):
    assert words in payload.problem(data)
    with pytest.raises(ValueError, match=words):
        payload.check(data)


def test_escaped_backslash_u0000_text_is_not_a_nul():
    assert payload.problem("\\u0000") is None  # the six characters, not the NUL character
    assert payload.problem("\\\x00") is not None


def test_deep_nesting_is_refused_not_crashing():
    data: list = []
    for _ in range(100_000):
        data = [data]
    assert "JSON" in payload.problem(data)


def test_sendable_repairs_only_what_cannot_be_sent():
    assert payload.sendable({"a": "ok"}) == ({"a": "ok"}, False)
    repaired, changed = payload.sendable({"a": "x\ud800", "\udc00": [float("nan")]})
    assert changed and repaired == {"a": "x\ufffd", "\ufffd": [None]}
    json.dumps(repaired, allow_nan=False).encode("utf-8")
