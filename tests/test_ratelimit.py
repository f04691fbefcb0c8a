"""realtime.ratelimit: the token bucket."""

from __future__ import annotations

import pytest

from realtime.ratelimit import TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_refuses():
    bucket = TokenBucket(1, 3, clock=Clock())
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_rate_up_to_burst():
    clock = Clock()
    bucket = TokenBucket(2, 3, clock=clock)
    for _ in range(3):
        bucket.take()
    clock.now = 1.0  # two tokens back
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now = 100.0  # never more than the burst
    assert sum(bucket.take() for _ in range(10)) == 3


@pytest.mark.parametrize("rate, burst", [(0, 1), (-1, 5), (1, 0.5)])
def test_bucket_refuses_bad_parameters_naming_them(rate, burst):
    with pytest.raises(ValueError, match=repr(rate)):
        TokenBucket(rate, burst)


class Conf:
    MAX_FRAME_BYTES = 100
    MAX_SEND_BUFFER = 1000
    MAX_SUBSCRIPTIONS = 2
    PUBLISH_RATE_PER_S = 1
    PUBLISH_BURST = 1
    FRAME_RATE_PER_S = 1
    FRAME_BURST = 2
    ABUSE_BUDGET = 0
    WHISPER_RATE_PER_S = 2
    WHISPER_BURST = 1


def test_connection_limits_refuse_with_the_documented_codes():
    from realtime.protocol import ClientFrame, ProtocolError
    from realtime.ratelimit import ConnectionLimits

    limits = ConnectionLimits(Conf())
    assert limits.advertised() == {
        "max_frame_bytes": 100,
        "max_subscriptions": 2,
        "publish_rate_per_s": 1,
        "whisper_rate_per_s": 2,
    }
    assert not limits.too_big("x" * 25) and limits.too_big("é" * 51) and limits.too_big("x" * 101)
    limits.check_frame("{}")
    limits.check_frame("{}")
    with pytest.raises(ProtocolError) as refused:
        limits.check_frame('{"type": "ping", "id": 7}')
    assert (refused.value.code, refused.value.id) == ("rate_limited", 7)
    frame = ClientFrame("publish", id=1, topic="chat")
    limits.check_publish(frame)
    with pytest.raises(ProtocolError, match="1 messages a second"):
        limits.check_publish(frame)
    limits.check_subscriptions(1, frame)
    with pytest.raises(ProtocolError) as refused:
        limits.check_subscriptions(2, frame)
    assert refused.value.code == "too_many_subscriptions" and refused.value.topic == "chat"
    assert limits.abuse.take() and not limits.abuse.take()  # a budget of 0 still allows one
    whisper = ClientFrame("whisper", id=2, topic="chat")
    limits.check_whisper(whisper)  # its own budget: publishing spent none of it
    with pytest.raises(ProtocolError, match="Whispers are limited to 2 a second") as refused:
        limits.check_whisper(whisper)
    assert (refused.value.code, refused.value.id) == ("rate_limited", 2)


def test_limits_are_read_at_connect_and_a_bucket_is_made_at_its_first_use():
    from realtime.protocol import ClientFrame, ProtocolError
    from realtime.ratelimit import ConnectionLimits

    conf = Conf()
    limits = ConnectionLimits(conf)
    assert limits._publishes is None and limits._whispers is None  # none made until needed
    conf.PUBLISH_BURST = conf.WHISPER_BURST = 50  # changed after connect: not this one's
    frame = ClientFrame("publish", id=1, topic="chat")
    limits.check_publish(frame)
    with pytest.raises(ProtocolError):
        limits.check_publish(frame)
    assert limits.publishes is limits.publishes  # one bucket, kept
    with pytest.raises(AttributeError):
        limits.anything_else = 1  # slots: nothing else is held per connection
