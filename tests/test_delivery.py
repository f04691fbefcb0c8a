"""realtime.delivery: the per-subscription state machine, without I/O."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from realtime.delivery import DROP, FETCH, SEND, WAIT, Stream


def idle(last: int = 0) -> Stream:
    stream = Stream(topic_id=1, last=last, target=last, busy=False)
    return stream


def test_stream_sends_the_next_seq_and_drops_duplicates():
    stream = idle(3)
    assert stream.offer(4) == SEND and stream.last == 4
    assert stream.offer(4) == DROP
    assert stream.offer(2) == DROP


def test_stream_fetches_when_a_seq_is_skipped_and_waits_while_fetching():
    stream = idle(3)
    assert stream.offer(6) == FETCH and stream.busy and stream.target == 6
    assert stream.offer(7) == WAIT and stream.target == 7
    assert stream.owed


def test_stream_new_subscription_is_busy_until_its_first_read():
    stream = Stream()
    assert stream.offer(1) == WAIT and stream.target == 1


def test_stream_learn_starts_one_fetch_only():
    stream = idle(1)
    assert stream.learn(5) is True
    assert stream.learn(6) is False  # already fetching
    assert stream.target == 6


def test_stream_sent_refuses_what_was_already_sent():
    stream = idle(2)
    assert stream.sent(3) and not stream.sent(3) and not stream.sent(1)


def test_stream_start_without_since_sends_the_backlog():
    stream = Stream()
    assert stream.start(None, latest=20, backlog=5) is False
    assert (stream.last, stream.target) == (15, 20)


def test_stream_start_since_beyond_latest_is_a_reset():
    stream = Stream()
    assert stream.start(99, latest=20, backlog=5) is False and stream.last == 15


def test_stream_start_since_at_latest_is_recovered_and_earlier_asks_the_database():
    assert Stream().start(20, latest=20, backlog=5) is True
    stream = Stream()
    assert stream.start(10, latest=20, backlog=5) is None and stream.last == 10


def test_stream_skip_to_a_pruned_seq_never_goes_back():
    stream = idle(1)
    stream.learn(9)
    stream.skip_to(5)
    assert stream.owed and stream.last == 5
    stream.skip_to(3)
    assert stream.last == 5
    stream.skip_to(9)
    assert not stream.owed and stream.last == 9


@given(st.lists(st.integers(min_value=1, max_value=40), max_size=80))
def test_stream_never_sends_a_seq_twice_or_out_of_order(arrivals):
    """Whatever order live frames arrive in, what is sent at once plus what a fetch sends
    is 1..max, each once, in order."""
    stream = idle(0)
    sent: list[int] = []
    for seq in arrivals:
        verdict = stream.offer(seq)
        if verdict == SEND:
            sent.append(seq)
        elif verdict == FETCH or stream.busy:
            # The fetch reads last+1 .. target from the database, then goes idle.
            sent.extend(s for s in range(stream.last + 1, stream.target + 1) if stream.sent(s))
            stream.busy = False
    assert sent == list(range(1, len(sent) + 1))
    assert not arrivals or sent[-1] == max(arrivals)
