"""manage.py topics, publish and seeddemo, through call_command."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from realtime.models import Message, Topic

pytestmark = pytest.mark.django_db


def run(*args, **kwargs) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue()


def test_topics_lists_slug_visibility_last_seq_and_count(topic_factory):
    topic_factory("news")
    topic_factory("secret", private=True, visitor_publish=True)
    call_command("publish", "news", '{"a": 1}', stdout=io.StringIO())
    lines = run("topics").splitlines()
    assert lines[0].split() == [
        "SLUG",
        "KIND",
        "VISIBILITY",
        "PUBLISH",
        "ENABLED",
        "LAST",
        "SEQ",
        "MESSAGES",
    ]
    assert lines[1].split() == ["news", "stream", "public", "staff", "yes", "1", "1"]
    assert lines[2].split() == ["secret", "stream", "private", "visitors", "yes", "0", "0"]
    assert run("topics", "list") == "\n".join(lines) + "\n"


def test_topics_list_empty_says_how_to_add():
    assert "topics add SLUG" in run("topics")


def test_topics_add_with_options():
    out = run(
        "topics",
        "add",
        "room-1",
        "--title",
        "Room",
        "--private",
        "--visitor-publish",
        "--backlog",
        "5",
        "--retain",
        "50",
    )
    assert "Added topic room-1" in out
    topic = Topic.objects.get(slug="room-1")
    assert (topic.title, topic.private, topic.visitor_publish, topic.backlog, topic.retention) == (
        "Room",
        True,
        True,
        5,
        50,
    )


def test_topics_add_defaults_from_settings(settings):
    settings.REALTIME = {"DEFAULT_BACKLOG": 3, "DEFAULT_RETENTION": 30}
    run("topics", "add", "plain")
    topic = Topic.objects.get()
    assert (topic.backlog, topic.retention, topic.private) == (3, 30, False)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["Bad Slug"], "slug"),
        (["x" * 81], "slug"),
        (["ok", "--backlog", "20", "--retain", "10"], "backlog"),
        (["ok", "--retain", "0"], "retention"),
        (["ok", "--backlog", "-1"], "backlog"),
    ],
)
def test_topics_add_refuses_bad_values(args, match):
    with pytest.raises(CommandError, match=match):
        run("topics", "add", *args)
    assert Topic.objects.count() == 0


def test_topics_add_refuses_duplicate(topic_factory):
    topic_factory("news")
    with pytest.raises(CommandError, match="already exists"):
        run("topics", "add", "news")


def test_publish_prints_seq_and_stores(topic_factory):
    topic_factory()
    assert run("publish", "news", '{"title": "a"}') == "1\n"
    assert run("publish", "news", "[1, 2]") == "2\n"
    message = Message.objects.get(seq=1)
    assert (message.data, message.source) == ({"title": "a"}, "command")


def test_publish_reads_stdin_with_dash(topic_factory):
    topic_factory()
    assert run("publish", "news", "-", stdin=io.StringIO('{"from": "stdin"}')) == "1\n"
    assert Message.objects.get().data == {"from": "stdin"}


@pytest.mark.parametrize("text", ["{bad", "", "NaN", '{"a": Infinity}'])
def test_publish_refuses_bad_json(topic_factory, text):
    topic_factory()
    with pytest.raises(CommandError, match="not valid JSON"):
        run("publish", "news", text)
    assert Message.objects.count() == 0


def test_publish_refuses_unknown_topic():
    with pytest.raises(CommandError, match="No topic 'nope'"):
        run("publish", "nope", "{}")


def test_seeddemo_creates_demo_topics_and_admin_idempotently(django_user_model):
    out = run("seeddemo", "--admin", "admin", "--password", "s3cret-pass")
    assert "password: s3cret-pass" in out
    run("seeddemo")
    assert set(Topic.objects.values_list("slug", flat=True)) == {
        "news",
        "clock",
        "site-stats",
        "chat",
        "staff-room",
    }
    assert Topic.objects.get(slug="chat").visitor_publish
    assert Topic.objects.get(slug="staff-room").groups.filter(name="members").exists()
    admin = django_user_model.objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("s3cret-pass")
    assert Message.objects.filter(topic__slug="news").count() == 1
