"""The HTTP publish API: ``POST /api/v1/topics/<slug>/messages`` with ``{"data": ...}``.

Two ways in:
- ``Authorization: Bearer <token>`` (``manage.py tokens add``): services in any language. CSRF
  does not apply; the token's topics bound what it may publish to; ``source`` is ``api`` and
  the message's ``origin`` is ``token:<name>``; a per-token rate (``API_RATE_PER_S``,
  ``API_BURST``, per server process) answers 429 with ``Retry-After`` beyond it.
- the visitor's session (the JS client publishing over HTTP when it runs on Server-Sent
  Events): CSRF applies, as for any form; the topic must allow visitors to publish.

A family's topic (``orders:42``) is published to like any other: the family's rules decide for
visitors, a token scoped to the family (or to every topic) may, and the first publish makes
its row.

``Idempotency-Key`` (1-100 characters): the same key with the same token (or session) within
24 hours answers 201 with the first publish's topic and seq and stores nothing new; a key
used for another topic is refused (400 ``bad_request``). A token revoked while a request is
under way stores nothing once ``tokens revoke`` has returned (``tokens.hold``).

Errors are JSON ``{"error": code, "message": ...}`` with the WebSocket protocol's codes: 400
``bad_request``, 401 ``unauthorized`` (with ``WWW-Authenticate: Bearer``: no token and no
session, or a bad token), 403 ``forbidden`` (outside the token's topics, or not
for visitors), 404 ``not_found`` (unknown, disabled, or private and unreadable), 405, 413
``too_large``, 429 ``rate_limited``.
"""

from __future__ import annotations

import json
import math
from functools import partial

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from realtime import idempotency, protocol, tokens
from realtime.conf import realtime_settings
from realtime.exceptions import InvalidMessage, PublishRefused, TopicNotFound
from realtime.models import Source, Topic
from realtime.outbox import publish
from realtime.ratelimit import TokenBucket

_buckets: dict[int, TokenBucket] = {}  # per token id, in this process


def error_response(status: int, code: str, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": code, "message": message}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


def unauthorized(message: str, error: str | None = None) -> JsonResponse:
    challenge = 'Bearer realm="api"' + (f', error="{error}"' if error else "")
    return error_response(401, "unauthorized", message, WWW_Authenticate=challenge)


@csrf_exempt  # token requests are not cookie-authenticated; session ones are checked below
def publish_view(request: HttpRequest, slug: str) -> JsonResponse:
    if request.method != "POST":
        response = error_response(405, "method_not_allowed", 'POST a JSON body {"data": ...}.')
        response["Allow"] = "POST"
        return response
    limit = realtime_settings.MAX_FRAME_BYTES
    too_large = error_response(413, "too_large", f"The body is over {limit} bytes.")
    declared = request.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        return too_large  # before reading it, or any check that would
    token = None
    authorization = request.headers.get("Authorization")
    if authorization is not None:
        scheme, _, secret = authorization.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return unauthorized("Use 'Authorization: Bearer <token>'.", "invalid_request")
        token = tokens.authenticate(secret.strip())
        if token is None:
            return unauthorized("Unknown or revoked token.", "invalid_token")
        bucket = _buckets.get(token.pk)
        if bucket is None:
            bucket = _buckets[token.pk] = TokenBucket(
                realtime_settings.API_RATE_PER_S, realtime_settings.API_BURST
            )
        if not bucket.take():
            wait = math.ceil((1 - bucket.tokens) / bucket.rate)
            return error_response(
                429, "rate_limited", "Too many requests for this token.", Retry_After=str(wait)
            )
    elif not {settings.SESSION_COOKIE_NAME, settings.CSRF_COOKIE_NAME} & request.COOKIES.keys():
        # Neither a token nor a browser's cookies: say how to authenticate (a CSRF failure
        # would send a service's author the wrong way).
        return unauthorized("Send 'Authorization: Bearer <token>' (manage.py tokens add).")
    else:
        refused = CsrfViewMiddleware(lambda r: None).process_view(request, None, (), {})
        if refused is not None:
            return error_response(
                403,
                "forbidden",
                "CSRF check failed: send the csrftoken cookie's value "
                "in X-CSRFToken, or use a token.",
            )
    try:
        raw = request.body
    except RequestDataTooBig:
        return too_large
    if len(raw) > limit:
        return too_large
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        return error_response(400, "bad_json", "The body is not JSON.")
    if not isinstance(body, dict) or "data" not in body:
        return error_response(400, "bad_request", 'The body must be a JSON object {"data": ...}.')
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= protocol.MAX_KEY_CHARS:
        return error_response(
            400, "bad_request", f"Idempotency-Key must be 1-{protocol.MAX_KEY_CHARS} characters."
        )
    topic = None
    if protocol.is_valid_topic(slug):
        # A family's topic nobody has published to yet: its rules decide; the publish makes it.
        topic = Topic.objects.filter(slug=slug).first() or Topic.unsaved(slug)
        if topic is not None and not topic.enabled:
            topic = None
    user = None if token is not None else request.user
    if topic is None or (token is None and not topic.can_read(user)):
        return error_response(404, "not_found", f"No topic {slug!r}.")
    guard = None
    if token is not None:
        if not topic.can_publish(token=token):
            return error_response(403, "forbidden", f"This token may not publish to {slug!r}.")
        scope, source, origin = f"token:{token.pk}", Source.API, f"token:{token.name}"
        guard = partial(tokens.hold, token)
    else:
        if not topic.can_publish(user):
            return error_response(403, "forbidden", f"You may not publish to {slug!r}.")
        scope = idempotency.scope_of(user, request.session.session_key)
        source, origin = Source.VISITOR, ""
    try:
        message = publish(
            topic,
            body["data"],
            source=source,
            user=user,
            origin=origin,
            key=key,
            scope=scope,
            guard=guard,
        )
    except InvalidMessage as exc:  # KeyReused too
        return error_response(400, "bad_request", str(exc))
    except TopicNotFound:
        return error_response(404, "not_found", f"No topic {topic.slug!r}.")
    except PublishRefused as exc:
        return unauthorized(str(exc), "invalid_token")
    return JsonResponse({"topic": message.topic.slug, "seq": message.seq}, status=201)
