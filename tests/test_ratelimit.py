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
