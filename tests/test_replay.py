"""Replay pages shared by a process's connections (realtime.replay): each page read from the
database once while a crowd resumes, extended when a reader needs more, pruned rows skipped,
kept within its time and byte budget; and against a real daphne, a crowd resuming from
different seqs across three pages gets every seq once and in order from three reads."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async
from websockets.asyncio.client import connect

from realtime import fanout, replay
from realtime.models import Message, Topic
from realtime.outbox import publish
from realtime.wire import text_frame
from tests.test_ops import get, sample

pytestmark = pytest.mark.django_db(transaction=True)


async def topic_with(count: int, slug: str = "news") -> Topic:
    topic = await database_sync_to_async(Topic.objects.create)(slug=slug, title=slug)
    await store(topic, count)
    return topic


@database_sync_to_async
def store(topic: Topic, count: int) -> None:
    for i in range(count):
        publish(topic.slug, {"i": i})


@database_sync_to_async
def expected_frames(topic: Topic) -> dict[int, bytes]:
    rows = Message.objects.filter(topic=topic).select_related("topic").order_by("seq")
    return {m.seq: fanout.frame(m).encode() for m in rows}


async def test_a_crowd_reading_one_page_makes_one_database_read():
    topic = await topic_with(5)
    pages = replay.Pages()
    slices = await asyncio.gather(*(pages.read(topic.pk, k % 3, 5) for k in range(30)))
    assert pages.reads == 1
    frames = await expected_frames(topic)
    for k, got in enumerate(slices):
        after = k % 3
        assert got.seqs == list(range(after + 1, 6)) and got.upto == 5
        assert [f.payload for f in got.page.frames[got.lo : got.hi]] == [
            frames[s] for s in got.seqs
        ]
    page = slices[0].page
    assert page.wire == b"".join(text_frame(frames[s]) for s in range(1, 6))
    assert all(s.page is page for s in slices)  # one copy of the bytes for everyone


async def test_a_reader_beyond_what_was_read_extends_the_page_with_the_new_rows_only():
    topic = await topic_with(3)
    pages = replay.Pages()
    assert (await pages.read(topic.pk, 0, 3)).seqs == [1, 2, 3]
    await store(topic, 2)
    got = await pages.read(topic.pk, 3, 5)
    assert got.seqs == [4, 5] and pages.reads == 2
    again = await pages.read(topic.pk, 0, 5)  # served from memory, bytes joined in order
    assert again.seqs == [1, 2, 3, 4, 5] and pages.reads == 2
    frames = await expected_frames(topic)
    assert again.page.wire == b"".join(text_frame(frames[s]) for s in range(1, 6))
    offsets = again.page.offsets
    assert [again.page.wire[offsets[k] : offsets[k + 1]] for k in range(5)] == [
        text_frame(frames[s]) for s in range(1, 6)
    ]


async def test_pages_end_on_their_boundary_and_pruned_rows_are_skipped(monkeypatch):
    monkeypatch.setattr(replay, "PAGE", 4)
    topic = await topic_with(10)
    await database_sync_to_async(Message.objects.filter(topic=topic, seq__lte=6).delete)()
    pages = replay.Pages()
    first = await pages.read(topic.pk, 0, 10)
    assert first.seqs == [] and first.upto == 4 and first.first is None  # all pruned
    second = await pages.read(topic.pk, 4, 10)
    assert second.seqs == [7, 8] and second.upto == 8 and second.first == 7
    third = await pages.read(topic.pk, 8, 10)
    assert third.seqs == [9, 10] and third.upto == 10


async def test_pages_expire_and_stay_within_their_byte_budget():
    topic = await topic_with(3)
    other = await topic_with(3, "sport")
    pages = replay.Pages(keep=0.0)
    await pages.read(topic.pk, 0, 3)
    time.sleep(0.01)
    await pages.read(topic.pk, 0, 3)
    assert pages.reads == 2  # expired: read again
    small = replay.Pages(max_bytes=1)
    await small.read(topic.pk, 0, 3)
    await small.read(other.pk, 0, 3)
    assert list(small.pages) == [(other.pk, 0)]  # the least recently used went
    assert small.bytes == small.pages[(other.pk, 0)].size


async def test_a_failed_read_lets_the_next_reader_try_again(monkeypatch):
    topic = await topic_with(2)
    pages = replay.Pages()
    real = replay._rows

    async def broken(*args):
        raise RuntimeError("database away")

    monkeypatch.setattr(replay, "_rows", broken)
    with pytest.raises(RuntimeError):
        await pages.read(topic.pk, 0, 2)
    assert not pages.reading and not pages.pages
    monkeypatch.setattr(replay, "_rows", real)
    assert (await pages.read(topic.pk, 0, 2)).seqs == [1, 2]


PUBLISH = (
    "from realtime.models import Message, Topic\n"
    "from realtime.outbox import publish_many\n"
    "Topic.objects.filter(slug='chat').update(retention=2000)\n"
    "Topic.objects.create(slug='pruned', title='Pruned', retention=2000)\n"
    "publish_many([('chat', {'i': i}) for i in range(1200)])\n"
    "publish_many([('pruned', {'i': i}) for i in range(1100)])\n"
    "Message.objects.filter(topic__slug='pruned', seq__lte=550).delete()\n"
)
SINCES = [0, 1, 250, 499, 500, 501, 777, 999, 1000, 1001, 1100, 1199, 1200]


async def resume(url: str, topic: str, since: int, last: int) -> tuple[dict, list[int]]:
    """Subscribe with ``since``; the subscribed frame and the seqs received up to ``last``."""
    async with connect(url, subprotocols=["realtime.v1"], max_queue=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "subscribe", "topic": topic, "since": since}))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        seqs: list[int] = []
        while (seqs[-1] if seqs else since) < last:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if frame["type"] == "message":
                seqs.append(frame["seq"])
        return answer, seqs


@pytest.mark.e2e
async def test_a_crowd_resuming_over_three_pages_gets_every_seq_from_three_reads(
    live_site, tmp_path
):
    site = live_site(scheduler=False, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"))
    await asyncio.to_thread(site.shell, PUBLISH)
    crowd = [since for since in SINCES for _ in range(4)]  # 52 clients at once
    results = await asyncio.gather(*(resume(site.ws_url, "chat", s, 1200) for s in crowd))
    for since, (answer, seqs) in zip(crowd, results, strict=True):
        assert answer["type"] == "subscribed" and answer["seq"] == 1200, answer
        assert answer["recovered"] is True, (since, answer)
        assert seqs == list(range(since + 1, 1201)), since
    _, body = await asyncio.to_thread(get, site.url + "/metrics")
    assert sample(body, "realtime_replay_page_reads_total") == 3  # 1-500, 501-1000, 1001-1200
    # 1-550 pruned: the first page is empty, the client from 0 gets the rest, not recovered.
    answer, seqs = await resume(site.ws_url, "pruned", 0, 1100)
    assert answer["seq"] == 1100 and answer["recovered"] is False, answer
    assert seqs == list(range(551, 1101))
