"""The status board: every service, and one service; both live through {% live_topic %}."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from demo.models import Service


def board(request: HttpRequest) -> HttpResponse:
    return render(request, "demo/board.html", {"services": Service.objects.all()})


def service(request: HttpRequest, slug: str) -> HttpResponse:
    found = get_object_or_404(Service, slug=slug)
    return render(request, "demo/service_page.html", {"service": found})
