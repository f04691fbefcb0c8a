"""``realtime.families`` (declaring families, their rules) and what the models, the outbox and
the tokens make of them; against the database, no server."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError

import realtime
from realtime import families
from realtime.exceptions import TopicNotFound
from realtime.models import ApiToken, Topic


@pytest.fixture
def declared():
    made: list[str] = []

    def declare(name: str, **options):
        made.append(name)
        return realtime.family(name, replace=True, **options)

    yield declare
    for name in made:
        families.unregister(name)


def test_a_class_declares_rules_and_options(declared):
    @declared("docs", presence=True)
    class Docs:
        kind = "state"
        backlog = 3

        def can_read(user, key):
            return key == "open"

        @staticmethod
        def can_publish(user, key):
            return user.is_authenticated

    found = families.get("docs")
    assert (found.kind, found.backlog, found.presence, found.whispers) == ("state", 3, True, False)
    assert found.may("read", None, "open") and not found.may("read", None, "shut")
    assert found.may("presence", None, "open") and not found.may("whisper", None, "open")
    assert not found.may("publish", AnonymousUser(), "open")
    assert families.of("docs:open") == (found, "open")
    assert families.of("docs") is None and families.of("nope:1") is None


def test_a_function_is_the_read_rule_and_whispers_follow_it(declared):
    declared("rooms", whispers=True)(lambda user, key: key.isdigit())
    found = families.get("rooms")
    assert found.may("whisper", None, "1") and not found.may("whisper", None, "x")
    assert not found.may("publish", None, "1")  # left out: visitors may not publish


@pytest.mark.parametrize(
    ("name", "options", "error"),
    [
        ("Bad", {}, "is not a family name"),
        ("ok", {"kind": "queue"}, "kind must be one of"),
        ("ok", {"backlog": -1}, "backlog must be an int"),
        ("ok", {"colour": "red"}, "unknown option"),
        ("ok", {"can_publish": True}, "can_publish must be callable"),
    ],
)
def test_wrong_declarations_say_what_is_wrong(declared, name, options, error):
    with pytest.raises(families.FamilyError, match=error):
        declared(name, **options)(lambda user, key: True)
    assert families.get(name) is None


def test_a_family_declared_twice_differently_is_refused(declared):
    declared("twice")(lambda user, key: True)
    with pytest.raises(families.FamilyError, match="declared twice"):
        realtime.family("twice")(lambda user, key: False)


def test_a_key_outside_the_charset_is_not_a_topic():
    with pytest.raises(ValueError, match="not a key of family 'user'"):
        families.get("user").topic("a b")


@pytest.mark.django_db
def test_the_user_family_is_read_by_its_user_only():
    ann = User.objects.create_user("ann")
    bob = User.objects.create_user("bob")
    topic = Topic.unsaved(families.user_topic(ann))
    assert topic.pk is None and topic.family == "user" and topic.last_seq == 0
    assert topic.can_read(ann) and not topic.can_read(bob) and not topic.can_read(AnonymousUser())
    assert not topic.can_publish(ann)
    assert families.user_topic(AnonymousUser()) is None
    assert Topic.unsaved("news") is None and Topic.unsaved("nofamily:1") is None


@pytest.mark.django_db
def test_the_first_publish_makes_the_row_with_the_family_defaults(declared):
    declared("jobs", kind="state", backlog=1, retention=5, presence=True)(lambda u, k: True)
    message = realtime.publish("jobs:7", {"done": 10})
    topic = Topic.objects.get(slug="jobs:7")
    assert message.seq == 1 and topic.family == "jobs" and topic.key == "7"
    assert (topic.kind, topic.backlog, topic.retention, topic.presence) == ("state", 1, 5, True)
    assert realtime.publish("jobs:7", {"done": 20}).seq == 2
    assert Topic.objects.filter(slug__startswith="jobs:").count() == 1
    # Family topics are not listed with the editors' topics.
    assert not Topic.objects.readable_by(None).filter(slug="jobs:7").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["nofamily:1", "jobs:", "jobs:a b", "news"])
def test_publishing_to_what_no_family_declares_stores_nothing(declared, name):
    declared("jobs")(lambda u, k: True)
    with pytest.raises(TopicNotFound):
        realtime.publish(name, 1)
    assert not Topic.objects.exists()


@pytest.mark.django_db
def test_notify_needs_a_signed_in_user_and_writes_to_their_topic():
    ann = User.objects.create_user("ann")
    message = realtime.notify(ann, {"text": "hi"})
    assert message.topic.slug == f"user:{ann.pk}" and message.seq == 1
    with pytest.raises(ValueError, match="signed-in user"):
        realtime.notify(AnonymousUser(), {"text": "hi"})


@pytest.mark.django_db
def test_a_token_scoped_to_a_family_publishes_to_its_topics_only(declared):
    declared("jobs")(lambda u, k: True)
    token = ApiToken.objects.create(name="jobs", token_hash="x", families="jobs")
    news = Topic.objects.create(slug="news")
    assert Topic.unsaved("jobs:1").can_publish(token=token)
    assert not news.can_publish(token=token)
    assert not Topic.unsaved("user:1").can_publish(token=token)
    token.families = "jobs nofamily"
    with pytest.raises(ValidationError, match="No family nofamily"):
        token.clean()


def test_access_changed_refuses_what_is_no_name():
    with pytest.raises(ValueError, match="neither a topic name nor a family"):
        realtime.access_changed("orders:1 2")


@pytest.mark.django_db
def test_a_family_template_renders_its_messages(declared, settings, tmp_path):
    (tmp_path / "jobs.html").write_text("<b>{{ data.done }}%</b> of {{ topic.slug }}")
    settings.TEMPLATES = [
        {**settings.TEMPLATES[0], "DIRS": [tmp_path, *settings.TEMPLATES[0].get("DIRS", [])]}
    ]
    declared("jobs", template="jobs.html")(lambda u, k: True)
    assert realtime.publish("jobs:3", {"done": 40}).html == "<b>40%</b> of jobs:3"
    declared("plain")(lambda u, k: True)
    assert "40" in realtime.publish("plain:1", {"done": 40}).html  # the default template
