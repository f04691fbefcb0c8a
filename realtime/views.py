"""Pages: the topics a visitor may read, updated live by the JS client."""

from __future__ import annotations

from django.db.models import OuterRef, Subquery
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from realtime.models import Message, Topic


def home(request: HttpRequest) -> HttpResponse:
    latest = Message.objects.filter(topic=OuterRef("pk")).order_by("-seq")
    topics = Topic.objects.readable_by(request.user).annotate(
        latest_data=Subquery(latest.values("data")[:1]),
        latest_at=Subquery(latest.values("created_at")[:1]),
    )
    return render(request, "realtime/home.html", {"topics": topics})
