"""``realtime.broadcasts`` and ``{% live_topic obj %}``: a model's saves and deletes reach its
family's topic after commit, rendered; the tag renders the object now and marks the region."""

from __future__ import annotations

import pytest
from django.db import transaction
from django.template import Context, Template, TemplateSyntaxError
from django.test import RequestFactory

import realtime
from demo.models import Service
from realtime import families
from realtime.models import Message, Topic

pytestmark = pytest.mark.django_db(transaction=True)


def states(slug: str) -> list[dict]:
    return [m.data for m in Message.objects.filter(topic__slug=f"services:{slug}").order_by("seq")]


def test_a_save_publishes_the_object_rendered_after_commit():
    with transaction.atomic():
        service = Service.objects.create(slug="db", name="Database", status="outage", note="<x>")
        assert not Message.objects.exists()  # nothing before the commit
    message = Message.objects.get(topic__slug="services:db")
    assert message.data["object"]["status"] == "outage" and message.data["deleted"] is False
    assert 'data-status="outage"' in message.html and "&lt;x&gt;" in message.html
    assert Topic.objects.get(slug="services:db").kind == "state"
    service.status = "operational"
    service.save()
    service.delete()
    assert [(s["object"]["status"], s["deleted"]) for s in states("db")] == [
        ("outage", False),
        ("operational", False),
        ("operational", True),
    ]


def test_a_rolled_back_save_publishes_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        Service.objects.create(slug="web", name="Web")
        raise RuntimeError
    assert not Message.objects.exists()


def test_broadcasting_to_an_undeclared_family_is_refused():
    with pytest.raises(families.FamilyError, match="declare the family 'nowhere' first"):
        realtime.broadcasts(Service, family="nowhere")


def render(text: str, **context) -> str:
    request = RequestFactory().get("/")
    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    return Template("{% load realtime %}" + text).render(Context({"request": request, **context}))


def test_live_topic_of_an_object_renders_it_now_and_resumes_before_its_latest_state():
    service = Service.objects.create(slug="api", name="API", status="degraded")
    service.status = "outage"
    service.save()  # seq 2
    html = render("{% live_topic service id='x' %}", service=service)
    assert 'data-live-topic="services:api"' in html and 'data-mode="replace"' in html
    assert 'data-seq="1"' in html  # the latest state (2) is sent again on subscribe
    assert 'data-status="outage"' in html and 'id="x"' in html


def test_live_topic_of_an_object_before_any_broadcast_starts_at_zero():
    Service.objects.bulk_create([Service(slug="new", name="New")])  # no signal: no message
    html = render("{% live_topic service %}", service=Service.objects.get(slug="new"))
    assert 'data-live-topic="services:new"' in html and 'data-seq="0"' in html


def test_live_topic_of_something_not_broadcast_says_so():
    with pytest.raises(TemplateSyntaxError, match="realtime.broadcasts"):
        render("{% live_topic thing %}", thing=object())
