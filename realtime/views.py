"""Pages: the topics a visitor may read, one topic's live stream, and the raw console."""

from __future__ import annotations

from django.contrib.auth.views import redirect_to_login
from django.db.models import OuterRef, Subquery
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from realtime.conf import realtime_settings
from realtime.models import Message, Topic


def home(request: HttpRequest) -> HttpResponse:
    latest = Message.objects.filter(topic=OuterRef("pk")).order_by("-seq")
    topics = Topic.objects.readable_by(request.user).annotate(
        latest_at=Subquery(latest.values("created_at")[:1]),
    )
    return render(request, "realtime/home.html", {"topics": topics})


@ensure_csrf_cookie  # the JS client publishes over HTTP (with CSRF) when it runs on SSE
def topic_detail(request: HttpRequest, slug: str) -> HttpResponse:
    topic = Topic.objects.enabled().filter(slug=slug).first()
    if topic is None:
        raise Http404(f"No topic {slug!r}.")
    if not topic.can_read(request.user):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        raise Http404(f"No topic {slug!r}.")
    context = {
        "topic": topic,
        "can_publish": topic.can_publish(request.user),
        "show_presence": topic.allows("presence", request.user),
        "can_whisper": topic.allows("whisper", request.user),
    }
    return render(request, "realtime/topic.html", context)


def console(request: HttpRequest) -> HttpResponse:
    return render(
        request, "realtime/console.html", {"max_frame_bytes": realtime_settings.MAX_FRAME_BYTES}
    )
