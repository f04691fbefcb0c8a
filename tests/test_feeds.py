"""The feed registry and run_feed: publish only when the data changed."""

from __future__ import annotations

import pytest

from realtime import builtin_feeds, feeds
from realtime.feeds import Feed, feed, registry, run_feed
from realtime.models import Message, Topic

pytestmark = pytest.mark.django_db


def test_builtin_feeds_are_registered():
    assert registry()["clock"].every == 5
    assert registry()["site-stats"].func is builtin_feeds.site_stats


@pytest.mark.parametrize(
    ("topic", "every"), [("Bad Slug", 1), ("ok", 0), ("ok", -1), ("ok", "5"), ("ok", True)]
)
def test_feed_decorator_refuses_bad_arguments(topic, every):
    with pytest.raises(ValueError, match=repr(topic) if topic == "Bad Slug" else "every"):
        feed(topic, every=every)


def test_feed_decorator_refuses_a_second_feed_for_a_topic():
    with pytest.raises(ValueError, match="already has the feed"):
        feed("clock", every=1)(lambda: 1)


def test_feed_decorator_registers_and_unregisters():
    @feed("tmp-feed", every=2)
    def tmp():
        return 1

    try:
        assert registry()["tmp-feed"] == Feed("tmp-feed", tmp, 2.0)
    finally:
        feeds.unregister("tmp-feed")
    assert "tmp-feed" not in registry()


def test_run_feed_publishes_only_when_data_changes():
    values = iter([{"v": 1}, {"v": 1}, {"v": 2}])
    item = Feed("counter", lambda: next(values), 1.0)
    first = run_feed(item)  # creates the missing topic
    assert first.seq == 1 and first.source == "feed"
    assert run_feed(item) is None
    assert run_feed(item).seq == 2
    assert list(Message.objects.values_list("data", flat=True)) == [{"v": 1}, {"v": 2}]


def test_run_feed_compares_canonical_json():
    item = Feed("keys", lambda: {"b": 1, "a": [1, 2]}, 1.0)
    run_feed(item)
    assert run_feed(Feed("keys", lambda: {"a": [1, 2], "b": 1}, 1.0)) is None


def test_run_feed_skips_disabled_topic():
    Topic.objects.create(slug="off", enabled=False)
    assert run_feed(Feed("off", lambda: 1, 1.0)) is None
    assert Message.objects.count() == 0


def test_clock_feed_changes_and_site_stats_follow_database(django_user_model):
    assert set(builtin_feeds.clock()) == {"time", "epoch"}
    stats = Feed("site-stats", builtin_feeds.site_stats, 10.0)
    assert run_feed(stats).data == {"topics": 1, "messages": 0, "users": 0}
    assert run_feed(stats) is None  # nothing changed
    django_user_model.objects.create_user("new")
    assert run_feed(stats).data["users"] == 1


def test_run_feeds_publishes_changed_ones_and_isolates_failures():
    from realtime.feeds import run_feeds

    def broken():
        raise RuntimeError("nope")

    items = [Feed("f-1", lambda: 1, 1.0), Feed("f-2", broken, 1.0), Feed("f-3", lambda: 3, 1.0)]
    messages, failed = run_feeds(items)
    assert sorted(m.topic.slug for m in messages) == ["f-1", "f-3"]
    assert [(topic, str(exc)) for topic, exc in failed] == [("f-2", "nope")]
    messages, failed = run_feeds(items)
    assert messages == [] and len(failed) == 1  # unchanged data is not republished
