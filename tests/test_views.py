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


def test_site_styled_error_pages_favicon_and_a_sign_in_page_that_says_why(client, topic_factory):
    missing = client.get("/no/such/page/")
    assert missing.status_code == 404
    text = missing.content.decode()
    assert "Page not found" in text and 'class="error-code">404' in text
    assert 'id="status"' not in text  # no socket badge where nothing is live
    icon = client.get("/favicon.ico")
    assert icon.status_code == 301 and icon["Location"].endswith("realtime/favicon.svg")
    topic_factory("secret", private=True)
    asked = client.get("/topics/secret/", follow=True).content.decode()
    assert "Sign in to see" in asked and "/topics/secret/" in asked
    assert 'id="status"' not in asked
    plain = client.get("/accounts/login/").content.decode()
    assert "Sign in to see" not in plain and "Members see private topics" in plain


def test_a_server_error_page_of_its_own(client, settings):
    from django.template.loader import render_to_string

    page = render_to_string("500.html")  # rendered without a request context
    assert "Something went wrong on our side" in page and "favicon.svg" in page
    forbidden = render_to_string("403.html", {"request": None})
    assert "Not allowed" in forbidden


def test_home_says_no_messages_yet_for_an_empty_topic(client, topic_factory):
    topic_factory("quiet")
    page = client.get("/").content.decode()
    assert "No messages yet" in page and "#0" not in page
