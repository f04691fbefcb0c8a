"""publish(): seq allocation, after-commit fan-out, the outbox sweep and pruning."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from realtime import fanout, outbox
from realtime.exceptions import InvalidMessage, TopicNotFound
from realtime.models import Message, Topic
from realtime.outbox import publish

pytestmark = pytest.mark.django_db(transaction=True)


def test_publish_allocates_consecutive_seq_per_topic(topic_factory):
    topic_factory("a")
    topic_factory("b")
    assert [publish("a", i).seq for i in range(3)] == [1, 2, 3]
    assert publish("b", "x").seq == 1
    assert Topic.objects.get(slug="a").last_seq == 3
    assert list(Message.objects.filter(topic__slug="a").values_list("seq", flat=True)) == [1, 2, 3]


def test_publish_accepts_topic_instance_and_records_source_and_author(
    topic_factory, django_user_model
):
    topic = topic_factory()
    user = django_user_model.objects.create_user("ed")
    message = publish(topic, {"a": 1}, source="admin", user=user)
    message.refresh_from_db()
    assert (message.seq, message.source, message.author, message.data) == (
        1,
        "admin",
        user,
        {"a": 1},
    )


def test_publish_refuses_unknown_or_disabled_topic(topic_factory):
    topic_factory("off", enabled=False)
    with pytest.raises(TopicNotFound, match="'nope'"):
        publish("nope", 1)
    with pytest.raises(TopicNotFound, match="disabled"):
        publish("off", 1)
    assert Message.objects.count() == 0


@pytest.mark.parametrize("data", [{1, 2}, float("nan"), object()])
def test_publish_refuses_data_that_is_not_json(topic_factory, data):
    topic_factory()
    with pytest.raises(InvalidMessage):
        publish("news", data)
    assert Topic.objects.get().last_seq == 0


def test_publish_refuses_unknown_source(topic_factory):
    topic_factory()
    with pytest.raises(InvalidMessage, match="source"):
        publish("news", 1, source="telepathy")


async def test_publish_fans_out_after_commit_with_serialised_frame(listener):
    await database_sync_to_async(Topic.objects.create)(slug="news")
    message = await database_sync_to_async(publish)("news", {"x": "é"})
    slug, seq, frame = await listener.next()
    assert (slug, seq) == ("news", 1)
    assert frame == {
        "type": "message",
        "topic": "news",
        "seq": 1,
        "data": {"x": "é"},
        "ts": frame["ts"],
        "html": message.html,  # rendered once when stored (realtime/rendering.py)
    }
    await database_sync_to_async(message.refresh_from_db)()
    assert message.fanned_out_at is not None


async def test_publish_in_rolled_back_transaction_sends_nothing(listener):
    await database_sync_to_async(Topic.objects.create)(slug="news")

    def rolled_back():
        with transaction.atomic():
            publish("news", {"n": "rolled back"})
            transaction.set_rollback(True)

    await database_sync_to_async(rolled_back)()
    await database_sync_to_async(publish)("news", {"n": "kept"})
    _, _, frame = await listener.next()
    assert frame["data"] == {"n": "kept"}
    assert await database_sync_to_async(Message.objects.count)() == 1


async def test_a_failed_fan_out_goes_to_the_lane_which_sends_it_in_order(
    listener, monkeypatch, settings
):
    """The after-commit send times out (a busy machine, not a dead Redis): the process's lane
    sends the message at once, and the next one queues behind it, with no sweep."""
    await database_sync_to_async(Topic.objects.create)(slug="news")

    def too_slow(messages, timeout, committed):
        raise TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(fanout, "send_now", too_slow)
    first = await database_sync_to_async(publish)("news", {"n": 1})
    monkeypatch.undo()
    second = await database_sync_to_async(publish)("news", {"n": 2})
    assert [(await listener.next())[1] for _ in range(2)] == [1, 2]
    for message in (first, second):
        for _ in range(100):
            await database_sync_to_async(message.refresh_from_db)()
            if message.fanned_out_at is not None:
                break
            await asyncio.sleep(0.05)
        assert message.fanned_out_at is not None
    assert await outbox.sweep() == 0


async def test_failed_fan_out_is_left_for_the_sweep_which_sends_it(listener, monkeypatch, settings):
    settings.REALTIME = {"OUTBOX_GRACE": 0}
    await database_sync_to_async(Topic.objects.create)(slug="news")

    def redis_down(messages, timeout, committed):
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(fanout, "send_now", redis_down)
    # The lane cannot send either (as if the process ended before Redis came back).
    monkeypatch.setattr(fanout.Lane, "put", lambda self, messages, committed: None)
    message = await database_sync_to_async(publish)("news", {"n": 1})
    monkeypatch.undo()
    await database_sync_to_async(message.refresh_from_db)()
    assert message.fanned_out_at is None
    assert await outbox.sweep() == 1
    assert (await listener.next())[1] == 1
    await database_sync_to_async(message.refresh_from_db)()
    assert message.fanned_out_at is not None
    assert await outbox.sweep() == 0


async def test_sweep_waits_for_grace_period(settings, monkeypatch):
    settings.REALTIME = {"OUTBOX_GRACE": 3600}
    await database_sync_to_async(Topic.objects.create)(slug="news")
    monkeypatch.setattr(fanout, "fan_out_after_commit", lambda m: None)
    await database_sync_to_async(publish)("news", {"n": 1})
    assert await outbox.sweep() == 0  # its after-commit fan-out may still be under way


async def test_sweep_raises_while_layer_is_down_and_keeps_message(settings, monkeypatch):
    settings.REALTIME = {"OUTBOX_GRACE": 0}
    await database_sync_to_async(Topic.objects.create)(slug="news")
    monkeypatch.setattr(fanout, "fan_out_after_commit", lambda m: None)
    await database_sync_to_async(publish)("news", {"n": 1})

    async def redis_down(messages):
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(fanout, "send", redis_down)
    with pytest.raises(ConnectionError):
        await outbox.sweep()
    assert await database_sync_to_async(outbox.pending)() != []


def test_prune_keeps_retention_and_unsent_messages(topic_factory, monkeypatch):
    topic = topic_factory(retention=3)
    for i in range(5):
        publish(topic, i)
    Message.objects.filter(seq=1).update(fanned_out_at=None)
    topic.refresh_from_db()
    assert outbox.prune(topic) == 1  # seq 2 goes; seq 1 waits for the sweep
    assert list(Message.objects.values_list("seq", flat=True)) == [1, 3, 4, 5]


def test_pending_lists_oldest_first(topic_factory, settings, monkeypatch):
    settings.REALTIME = {"OUTBOX_GRACE": 0}
    topic_factory()
    monkeypatch.setattr(fanout, "fan_out_after_commit", lambda m: None)
    for i in range(3):
        publish("news", i)
    Message.objects.filter(seq=3).update(created_at=timezone.now() - timezone.timedelta(hours=1))
    assert [m.seq for m in outbox.pending()] == [3, 1, 2]


async def test_publish_many_allocates_per_topic_and_fans_out_all(listener):
    from realtime.outbox import publish_many

    await database_sync_to_async(Topic.objects.create)(slug="a")
    await database_sync_to_async(Topic.objects.create)(slug="b")
    await database_sync_to_async(publish)("a", "first")
    messages = await database_sync_to_async(publish_many)(
        [("a", 1), ("b", 2), ("a", 3)], source="feed"
    )
    assert [(m.topic.slug, m.seq) for m in messages] == [("a", 2), ("b", 1), ("a", 3)]
    seen = {(await listener.next())[:2] for _ in range(4)}
    assert seen == {("a", 1), ("a", 2), ("b", 1), ("a", 3)}
    assert await database_sync_to_async(
        lambda: dict(Topic.objects.values_list("slug", "last_seq"))
    )() == {"a": 3, "b": 1}


def test_publish_many_refuses_everything_when_one_item_is_bad(topic_factory):
    from realtime.outbox import publish_many

    topic_factory("a")
    with pytest.raises(InvalidMessage):
        publish_many([("a", 1), ("a", {1, 2})])
    with pytest.raises(TopicNotFound):
        publish_many([("a", 1), ("nope", 2)])
    assert Message.objects.count() == 0 and Topic.objects.get().last_seq == 0
    assert publish_many([]) == []


async def test_json_null_is_stored_as_json_and_delivered(listener):
    """None is JSON null, not SQL NULL (which the column refuses): found by hypothesis."""
    from realtime.outbox import publish_many

    await database_sync_to_async(Topic.objects.create)(slug="a")
    assert (await database_sync_to_async(publish)("a", None)).data is None
    await database_sync_to_async(publish_many)([("a", None), ("a", 1)])
    frames = [(await listener.next())[2] for _ in range(3)]
    assert [(f["seq"], f["data"]) for f in frames] == [(1, None), (2, None), (3, 1)]


@pytest.fixture(params=[True, False], ids=["returning", "orm"])
def returning(request, monkeypatch):
    """Both write paths: ``RETURNING`` statements (SQLite 3.35+, PostgreSQL), and the ORM's
    (a database without them, as if its vendor were not in ``RETURNING_VENDORS``)."""
    if not request.param:
        monkeypatch.setattr(outbox, "RETURNING_VENDORS", ())
    return request.param


def statements_of(queries) -> list[str]:
    return [q["sql"].upper() for q in queries.captured_queries]


def test_seqs_are_allocated_alike_with_and_without_update_returning(topic_factory, returning):
    """SQLite 3.35+ and PostgreSQL claim each topic (raise ``last_seq`` and read its row) in
    one statement; a database without ``RETURNING`` reads, UPDATEs and SELECTs: the same
    seqs either way, and a topic gone meanwhile refuses the whole publish."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from realtime.outbox import _raise_last_seq, publish_many

    a = topic_factory("a")
    topic_factory("b"), topic_factory("c")
    publish("a", "first")
    with CaptureQueriesContext(connection) as queries:
        messages = publish_many([("a", 1), ("b", 2), ("a", 3), ("c", 4), ("c", 5)])
    assert [(m.topic.slug, m.seq) for m in messages] == [
        ("a", 2),
        ("b", 1),
        ("a", 3),
        ("c", 1),
        ("c", 2),
    ]
    assert dict(Topic.objects.values_list("slug", "last_seq")) == {"a": 3, "b": 1, "c": 2}
    statements = statements_of(queries)
    updates = [s for s in statements if s.startswith("UPDATE") and "LAST_SEQ" in s]
    assert len(updates) == 2  # one for the topics with two new messages, one for b
    assert all(("RETURNING" in s) is returning for s in updates)
    reads = [s for s in statements if s.startswith("SELECT") and "REALTIME_TOPIC" in s]
    assert len(reads) == (0 if returning else 4)  # each topic's row, then last_seq read back
    with pytest.raises(TopicNotFound), transaction.atomic():
        _raise_last_seq(Counter({a.pk: 1, 999_999: 1}))
    assert Topic.objects.get(slug="a").last_seq == 3  # rolled back with the refusal


def test_one_publish_is_two_statements_and_stores_what_the_orm_stores(
    topic_factory, django_user_model, returning
):
    """The hot path: a publish by slug claims its topic and inserts its message, two
    statements in one transaction, and the row read back through the ORM is the message."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    topic_factory("a")
    user = django_user_model.objects.create_user("ed")
    with CaptureQueriesContext(connection) as queries:
        message = publish("a", {"n": 1, "text": "é <b>"}, source="admin", user=user, origin="o")
    statements = [
        s for s in statements_of(queries) if s.split()[0] in ("SELECT", "UPDATE", "INSERT")
    ]
    if returning:
        assert [s.split()[0] for s in statements] == ["UPDATE", "INSERT", "UPDATE"]
        assert "RETURNING" in statements[0] and "RETURNING" in statements[1]
        assert "FANNED_OUT_AT" in statements[2]  # marked sent, after the commit
    stored = Message.objects.get(pk=message.pk)
    assert (stored.topic.slug, stored.seq, stored.data, stored.source, stored.origin) == (
        "a",
        1,
        {"n": 1, "text": "é <b>"},
        "admin",
        "o",
    )
    assert stored.author == user and stored.created_at == message.created_at
    assert stored.html == message.html and "&lt;b&gt;" in stored.html
    assert stored.fanned_out_at is not None and stored.fanned_out_at >= stored.created_at
    assert not message._state.adding and message.topic.last_seq == 1
    assert publish("a", None).seq == 2 and Message.objects.get(seq=2).data is None  # JSON null


def test_a_publish_refused_by_its_topic_changes_nothing(topic_factory, returning):
    """Claiming by slug checks the row in the same statement: a disabled topic, a missing
    one, or one of several missing refuses the whole publish and raises no seq."""
    from realtime.outbox import publish_many

    topic_factory("a"), topic_factory("off", enabled=False)
    with pytest.raises(TopicNotFound, match="disabled"):
        publish_many([("a", 1), ("off", 2)])
    with pytest.raises(TopicNotFound, match="'nope'"):
        publish_many([("a", 1), ("nope", 2)])
    assert dict(Topic.objects.values_list("slug", "last_seq")) == {"a": 0, "off": 0}
    assert Message.objects.count() == 0
    topic = Topic.objects.get(slug="a")
    messages = publish_many([(topic, 1), ("a", 2), (topic, 3)])  # an object and its slug
    assert [m.seq for m in messages] == [1, 2, 3]
    assert Topic.objects.get(slug="a").last_seq == 3 and topic.last_seq == 3


def test_mark_fanned_out_marks_only_what_was_not_marked(topic_factory):
    topic_factory("a")
    first, second = publish("a", 1), publish("a", 2)
    earlier = timezone.now() - timezone.timedelta(hours=1)
    Message.objects.filter(pk=first.pk).update(fanned_out_at=earlier)
    Message.objects.filter(pk=second.pk).update(fanned_out_at=None)
    fanout.mark_fanned_out([first.pk, second.pk])
    marked = dict(Message.objects.values_list("seq", "fanned_out_at"))
    assert marked[1] == earlier  # kept
    assert marked[2] is not None and abs(marked[2] - timezone.now()).total_seconds() < 60
    fanout.mark_fanned_out([])  # nothing to do


def test_written_out_statements_are_made_once_per_database_connection(topic_factory):
    """``_prepare`` keeps what a connection's statements need (quoted names, converters) on
    that connection object: made at its first publish, reused after, and another thread's
    connection gets its own."""
    import threading

    from django.db import connections

    topic_factory("a")
    publish("a", 1)
    connection = connections["default"]  # this thread's (django.db.connection is a proxy)
    built = []

    def build(conn):
        built.append(conn)
        return ("made for", conn.alias)

    assert outbox._prepare(connection, "probe", build) == ("made for", "default")
    assert outbox._prepare(connection, "probe", build) == ("made for", "default")
    assert built == [connection]
    assert outbox._prepared[connection]["claim"][0].startswith("UPDATE")  # the publish's
    other = []
    worker = threading.Thread(
        target=lambda: other.append(outbox._prepare(connections["default"], "probe", build))
    )
    worker.start()
    worker.join(10)
    assert other == [("made for", "default")] and len(built) == 2 and built[1] is not connection
