"""The pure protocol module: parsing client frames and building server frames."""

import json
from datetime import UTC, datetime

import pytest

from realtime import protocol
from realtime.protocol import ProtocolError, parse


def test_parse_subscribe_with_since_and_id():
    frame = parse('{"type":"subscribe","topic":"news","since":4,"id":[1]}')
    assert (frame.type, frame.topic, frame.since, frame.id) == ("subscribe", "news", 4, [1])


def test_parse_keeps_missing_id_distinct_from_null_id():
    assert not parse('{"type":"ping"}').has_id
    frame = parse('{"type":"ping","id":null}')
    assert frame.has_id and frame.id is None


def test_parse_publish_accepts_any_json_data_including_null():
    assert parse('{"type":"publish","topic":"chat","data":null}').data is None
    assert parse('{"type":"publish","topic":"chat","data":[1,{"a":2}]}').data == [1, {"a": 2}]


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "bad_json"),
        ("{", "bad_json"),
        ("null", "bad_json"),
        ("[" * 100_000, "bad_json"),
        ('{"type":null}', "bad_request"),
        ('{"type":"PING"}', "unknown_type"),
        ('{"type":"subscribe","topic":""}', "bad_request"),
        ('{"type":"subscribe","topic":"' + "a" * 81 + '"}', "bad_request"),
        ('{"type":"subscribe","topic":"news\\n"}', "bad_request"),
        ('{"type":"subscribe","topic":"-news"}', "bad_request"),
        ('{"type":"subscribe","topic":"news","since":9223372036854775808}', "bad_request"),
        ('{"type":"publish","topic":"news"}', "bad_request"),
        ('{"type":"subscribe","topic":"orders:"}', "bad_request"),
        ('{"type":"subscribe","topic":":1"}', "bad_request"),
        ('{"type":"subscribe","topic":"orders:a/b"}', "bad_request"),
        ('{"type":"subscribe","topic":"orders:1:2"}', "bad_request"),
        ('{"type":"subscribe","topic":"Orders:1"}', "bad_request"),
        ('{"type":"subscribe","topic":"orders:' + "k" * 101 + '"}', "bad_request"),
        ('{"type":"subscribe","topic":"news","presence":1}', "bad_request"),
        ('{"type":"whisper","topic":"chat"}', "bad_request"),
        ('{"type":"whisper","topic":"chat","data":"' + "x" * 4095 + '"}', "bad_request"),
        ('{"type":"whisper","topic":"bad topic","data":1}', "bad_request"),
    ],
)
def test_parse_refuses_with_documented_code(text, code):
    with pytest.raises(ProtocolError) as info:
        parse(text)
    assert info.value.code == code
    assert json.loads(info.value.frame())["code"] == code


def test_error_frame_echoes_id_and_topic():
    with pytest.raises(ProtocolError) as info:
        parse('{"type":"subscribe","topic":"news","since":-2,"id":"x"}')
    assert json.loads(info.value.frame()) == {
        "type": "error",
        "code": "bad_request",
        "message": "'since' must be an integer >= 0.",
        "id": "x",
        "topic": "news",
    }


def test_message_frame_has_utc_timestamp_and_data():
    ts = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    assert json.loads(protocol.message("news", 3, ts, {"é": 1})) == {
        "type": "message",
        "topic": "news",
        "seq": 3,
        "ts": "2026-01-02T03:04:05.678Z",
        "data": {"é": 1},
    }


def test_frame_id_reads_id_of_raw_frame():
    assert protocol.frame_id('{"id": 5}') == 5
    assert protocol.frame_id("[5]") is protocol._MISSING
    assert protocol.frame_id("nope") is protocol._MISSING


@pytest.mark.parametrize(
    "name", ["news", "orders:42", "docs:Q3-plan_v2.1", "user:17", "a:" + "k" * 100]
)
def test_topic_names_are_slugs_or_family_keys(name):
    assert protocol.is_valid_topic(name)
    assert parse(json.dumps({"type": "subscribe", "topic": name})).topic == name


def test_parse_subscribe_with_presence_and_a_whisper():
    assert parse('{"type":"subscribe","topic":"chat","presence":true}').presence is True
    assert parse('{"type":"subscribe","topic":"chat"}').presence is False
    frame = parse('{"type":"whisper","topic":"orders:1","data":{"typing":true},"id":3}')
    assert (frame.type, frame.topic, frame.data, frame.id) == (
        "whisper",
        "orders:1",
        {"typing": True},
        3,
    )
    assert parse(json.dumps({"type": "whisper", "topic": "a", "data": "x" * 4000})).data


def test_presence_and_whisper_frames():
    member = {"user": 1, "name": "Ann", "info": {}}
    assert json.loads(protocol.presence("chat", [member], 3)) == {
        "type": "presence",
        "topic": "chat",
        "members": [member],
        "count": 3,
    }
    assert json.loads(protocol.presence_diff("chat", [], [member], 2))["leaves"] == [member]
    assert json.loads(protocol.whisper("chat", {"user": None, "name": ""}, 1)) == {
        "type": "whisper",
        "topic": "chat",
        "from": {"user": None, "name": ""},
        "data": 1,
    }
