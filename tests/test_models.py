"""realtime.models: the read rule (``readable_by``) and the publish rule (``can_publish``),
each one statement asked everywhere; heads and pages of messages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser, Group, User

from realtime import tokens
from realtime.models import Message, Topic
from realtime.outbox import publish

pytestmark = pytest.mark.django_db


@pytest.fixture
def people():
    members = Group.objects.create(name="members")
    member = User.objects.create_user("mem")
    member.groups.add(members)
    return {
        "anonymous": AnonymousUser(),
        "member": member,
        "outsider": User.objects.create_user("out"),
        "staff": User.objects.create_user("boss", is_staff=True),
        "group": members,
    }


def test_the_read_rule_for_public_private_grouped_and_disabled_topics(people):
    Topic.objects.create(slug="public", title="p")
    Topic.objects.create(slug="private", title="p", private=True)
    Topic.objects.create(slug="grouped", title="g", private=True).groups.add(people["group"])
    Topic.objects.create(slug="off", title="o", enabled=False)

    def readable(who: str) -> list[str]:
        return sorted(Topic.objects.readable_by(people[who]).values_list("slug", flat=True))

    assert readable("anonymous") == ["public"]
    assert readable("outsider") == ["private", "public"]  # private, no groups: signed-in users
    assert readable("member") == ["grouped", "private", "public"]
    assert readable("staff") == ["grouped", "private", "public"]
    for topic in Topic.objects.all():  # can_read agrees with readable_by, topic by topic
        for who in ("anonymous", "outsider", "member", "staff"):
            assert topic.can_read(people[who]) == (topic.slug in readable(who)), (topic, who)


def test_the_publish_rule_for_visitors_and_tokens(people):
    chat = Topic.objects.create(slug="chat", title="c", visitor_publish=True)
    news = Topic.objects.create(slug="news", title="n")
    secret = Topic.objects.create(slug="secret", title="s", visitor_publish=True, private=True)
    secret.groups.add(people["group"])
    assert chat.can_publish(people["anonymous"]) and not news.can_publish(people["staff"])
    assert secret.can_publish(people["member"]) and not secret.can_publish(people["outsider"])
    everywhere, _ = tokens.create("everywhere")
    scoped, _ = tokens.create("scoped", ["news"])
    assert news.can_publish(token=everywhere) and chat.can_publish(token=everywhere)
    assert news.can_publish(token=scoped) and not chat.can_publish(token=scoped)
    tokens.revoke("scoped")
    scoped.refresh_from_db()
    assert not news.can_publish(token=scoped)
    news.enabled = False
    assert not news.can_publish(token=everywhere)


def test_heads_and_pages_of_messages():
    news = Topic.objects.create(slug="news", title="n")
    for i in range(5):
        publish(news, i)
    assert Topic.objects.heads(["news", "nope"]) == {"news": 5}
    assert Topic.objects.latest_seq(news.pk) == 5
    assert [row[0] for row in Message.objects.page(news.pk, 1, 4, 10)] == [2, 3, 4]
    assert [row[0] for row in Message.objects.page(news.pk, 0, 5, 2)] == [1, 2]
