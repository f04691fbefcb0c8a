"""``state`` topics: a subscribe or resume sends only the latest message, and a connection
that falls behind during a burst gets the newest message, not every one in between; seqs stay
increasing. Against real daphne, and the state machine on its own."""

from __future__ import annotations

import json

import pytest

from realtime.delivery import SEND, Stream
from tests.helpers.processes import manage
from tests.helpers.rawws import FrameReader, client_frame, handshake

PUBLISH_MANY = (
    "from realtime.outbox import publish_many\n"
    "publish_many([('{slug}', {{'n': i, 'pad': 'x' * {pad}}}) for i in range({count})])\n"
    "from realtime.models import Topic\n"
    "print(Topic.objects.get(slug='{slug}').last_seq)\n"
)


def publish_burst(site, slug: str, count: int, pad: int = 10) -> int:
    code = PUBLISH_MANY.format(slug=slug, count=count, pad=pad)
    return int(site.shell(code).split()[-1])


def subscribe(port: int, slug: str, since: int | None = None, **socket_options):
    sock = handshake(port, **socket_options)
    reader = FrameReader(sock)
    assert reader.next()["type"] == "welcome"
    frame = {"type": "subscribe", "topic": slug}
    if since is not None:
        frame["since"] = since
    sock.sendall(client_frame(json.dumps(frame)))
    return sock, reader


def messages_until_pong(sock, reader) -> list[dict]:
    """Every frame up to the answer to a ping sent now (so nothing more is on its way)."""
    sock.sendall(client_frame('{"type": "ping", "id": "end"}'))
    frames = []
    while (frame := reader.next()).get("type") != "pong":
        frames.append(frame)
    return frames


@pytest.fixture
def site(live_site):
    site = live_site(scheduler=False)
    manage(site.env, "topics", "add", "score", "--kind", "state")
    return site


def test_subscribe_and_resume_send_only_the_latest_message(site):
    last = publish_burst(site, "score", 50)
    sock, reader = subscribe(site.port, "score")
    frames = messages_until_pong(sock, reader)
    assert frames[0]["type"] == "subscribed" and frames[0]["recovered"] is False
    assert [(f["type"], f["seq"]) for f in frames[1:]] == [("message", last)]
    sock.close()

    # Resumed after missing 50 more: exactly one message, the latest, and recovered.
    last = publish_burst(site, "score", 50)
    sock, reader = subscribe(site.port, "score", since=last - 50)
    frames = messages_until_pong(sock, reader)
    assert frames[0]["type"] == "subscribed" and frames[0]["recovered"] is True
    assert [f["seq"] for f in frames[1:]] == [last]
    sock.close()

    # Already current: nothing.
    sock, reader = subscribe(site.port, "score", since=last)
    assert [f["type"] for f in messages_until_pong(sock, reader)] == ["subscribed"]
    sock.close()


def test_a_stream_topic_still_replays_everything(site):
    manage(site.env, "topics", "add", "log", "--backlog", "0")
    publish_burst(site, "log", 5)
    sock, reader = subscribe(site.port, "log", since=0)
    frames = messages_until_pong(sock, reader)
    assert [f.get("seq") for f in frames[1:]] == [1, 2, 3, 4, 5]
    sock.close()


def test_a_reader_behind_in_a_burst_gets_the_newest_not_every_one(site):
    publish_burst(site, "score", 1)
    # A small receive window, and nothing read during the burst: the server's buffer fills.
    sock, reader = subscribe(site.port, "score", rcvbuf=4096)
    assert reader.next()["type"] == "subscribed"
    assert reader.next()["seq"] == 1
    last = publish_burst(site, "score", 400, pad=20_000)  # ≈ 16 MB: beyond any socket buffer
    seqs = []
    while True:
        frame = reader.next(timeout=15)
        assert frame["type"] == "message"
        seqs.append(frame["seq"])
        if frame["seq"] == last:
            break
    assert seqs == sorted(set(seqs))  # increasing, never repeated
    assert len(seqs) < 400  # intermediate states were skipped, the newest arrived
    assert messages_until_pong(sock, reader) == []
    sock.close()


def test_topics_command_takes_a_kind_and_refuses_others(site):
    listed = manage(site.env, "topics", "list").stdout
    assert any(line.split()[:2] == ["score", "state"] for line in listed.splitlines())
    refused = manage(site.env, "topics", "add", "x", "--kind", "queue", check=False)
    assert refused.returncode != 0 and "kind" in refused.stderr


def test_state_stream_machine():
    stream = Stream(state=True)
    assert stream.start(None, 40, backlog=10) is False and stream.last == 39
    stream = Stream(state=True)
    assert stream.start(3, 40, backlog=10) is True and stream.last == 39
    stream = Stream(state=True)
    assert stream.start(40, 40, backlog=10) is True and stream.last == 40
    stream = Stream(state=True)
    assert stream.start(99, 40, backlog=10) is False and stream.last == 39
    stream.busy = False
    stream.last = 40
    assert stream.offer(45) == SEND and stream.last == 45  # over a gap: the newest
    stream.target = 60
    assert stream.fetch_after == 59
    plain = Stream(last=40, target=60)
    assert plain.fetch_after == 40
