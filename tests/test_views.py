"""The home page lists the topics a visitor may read."""

import pytest
from django.contrib.auth.models import Group

from realtime.outbox import publish

pytestmark = pytest.mark.django_db


def test_home_lists_public_topics_with_latest_message(client, topic_factory):
    topic_factory("news")
    topic_factory("secret", private=True)
    publish("news", {"title": "<b>bold</b>"})
    page = client.get("/").content.decode()
    assert 'data-topic="news"' in page and 'data-topic="secret"' not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page and "<b>bold</b>" not in page


def test_home_shows_private_topic_to_group_member(client, topic_factory, django_user_model):
    secret = topic_factory("secret", private=True)
    members = Group.objects.create(name="members")
    secret.groups.add(members)
    topic_factory("other-secret", private=True).groups.add(Group.objects.create(name="x"))
    user = django_user_model.objects.create_user("mem")
    user.groups.add(members)
    client.force_login(user)
    page = client.get("/").content.decode()
    assert 'data-topic="secret"' in page and 'data-topic="other-secret"' not in page
