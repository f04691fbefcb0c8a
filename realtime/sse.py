"""Server-Sent Events: ``GET /events/?topic=news&topic=clock``, the same topics, access rules
and delivery guarantee as the WebSocket, for clients that cannot open one.

Each message is an event: ``event: message``, ``data:`` the JSON of the WebSocket ``message``
frame (with ``html``), and ``id:`` a cursor holding the position in every topic of the stream,
``news:12,clock:50``. Browsers send the last one back by themselves as ``Last-Event-ID`` when
they reconnect, which resumes every topic after its seq: nothing missed, nothing twice, in
order per topic. ``?since=news:12,clock:50`` (or ``?since=12`` with a single topic) is the
same cursor for pages that rendered a seq.

The stream is the door of a ``connection.Connection`` like a socket (replay, gap fill,
dedupe, revocation: an ended session ends the stream with an ``error`` event, a lost topic
sends ``unsubscribed``); this module only parses the request and formats events. A comment
every ``HEARTBEAT`` seconds keeps proxies from closing it; ``retry:`` asks browsers to
reconnect after 2-4 s (jittered). Errors before the stream starts are HTTP statuses with JSON
``{"error": code, "message": ...}``; after it started, ``event: error`` with the same JSON,
and the stream ends.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from typing import Any
from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack

from realtime import engine, protocol, topics, wire
from realtime.admission import admission
from realtime.conf import realtime_settings
from realtime.connection import Connection

logger = logging.getLogger("realtime.sse")

PATH = "/events/"
HEARTBEAT = 15.0


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def parse_cursor(text: str, slugs: list[str]) -> dict[str, int]:
    """``news:12,clock:50`` (or a bare ``12`` for a single topic) → {slug: seq}."""
    text = text.strip()
    if not text:
        return {}
    if ":" not in text and len(slugs) == 1:
        text = f"{slugs[0]}:{text}"
    cursor: dict[str, int] = {}
    for part in text.split(","):
        slug, _, seq = part.strip().rpartition(":")
        if not protocol.is_valid_topic(slug) or not seq.isdigit() or len(seq) > 19:
            raise BadRequest(400, "bad_request", f"{part[:100]!r} is not a cursor entry slug:seq.")
        cursor[slug] = int(seq)
    return cursor


def event(kind: str, data: str, cursor: str | None = None) -> bytes:
    lines = [f"event: {kind}"]
    if cursor is not None:
        lines.append(f"id: {cursor}")
    lines.append(f"data: {data}")
    return ("\n".join(lines) + "\n\n").encode()


class EventStream:
    """One ``text/event-stream`` response: the event-stream door of a ``Connection`` (its
    ``Transport``: frames become events; message events carry the cursor)."""

    write: Any = None  # under daphne: ``_write``, events written straight to the response
    bursts = False  # each message event carries its own cursor: written one by one

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any):
        self.scope, self.receive, self.asgi_send = scope, receive, send
        client = scope.get("client") or ("?",)
        self.address, self.host = ":".join(str(p) for p in client), str(client[0])
        self.protocol = wire.daphne_protocol(scope.get(wire.SCOPE_KEY, send))
        if self.protocol is not None and hasattr(self.protocol, "write"):
            # daphne's response (a Twisted Request): events are written to it at once, as
            # socket frames are, without a coroutine and an ASGI message per subscriber.
            self.write = self._write
        self.connection: Connection | None = None
        self.done = asyncio.Event()
        self.ended = False
        self.ending = False  # an error event is on its way; nothing more is sent
        self.gone = False  # the client went away
        self.presence = False  # ?presence=1: presence events too
        self.started = False  # the response's head is sent: events may be written

    # --- the request

    async def run(self) -> None:
        try:
            slugs, cursor = self.parse()
            user = self.scope.get("user")
            found = {}
            for slug in slugs:
                access_found = await topics.access(slug, user)
                if access_found.topic is None:
                    raise BadRequest(404, protocol.NOT_FOUND, f"No topic {slug!r}.")
                found[slug] = access_found.topic
            hub = engine.hub()
            if not await hub.wait_ready(5.0):
                raise BadRequest(503, protocol.SERVER_ERROR, "Not connected to Redis; retry.")
            if admission().refusal(self.host) is not None:  # the same rule as sockets'
                raise BadRequest(429, protocol.RATE_LIMITED, "Too many connections from here.")
        except BadRequest as exc:
            await self.refuse(exc)
            return
        connection_id = "sse-" + uuid.uuid4().hex[:12]
        self.connection = Connection.for_scope(
            self, hub, self.scope, admitted=True, connection_id=connection_id
        )
        hub.connected(self.connection)
        await self.asgi_send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream; charset=utf-8"),
                    (b"cache-control", b"no-cache, no-store"),
                    (b"x-accel-buffering", b"no"),  # nginx: pass events on at once
                ],
            }
        )
        if self.protocol is not None:
            wire.no_delay(self.protocol)  # events leave at once (no Nagle, no delayed ACK)
        retry = random.randint(2000, 4000)
        await self.raw(f"retry: {retry}\n\n".encode())
        self.started = True
        logger.info(
            "sse open %s addr=%s topics=%s", self.connection.connection_id, self.address, slugs
        )
        try:
            await self.connection.open_all(found, cursor, presence=self.presence)
            await self.wait_until_done()
        finally:
            self.release()
            logger.info("sse close %s", self.connection.connection_id)

    def parse(self) -> tuple[list[str], dict[str, int]]:
        query = parse_qs(self.scope.get("query_string", b"").decode("latin1"))
        slugs = list(dict.fromkeys(query.get("topic", [])))
        if not slugs:
            raise BadRequest(400, protocol.BAD_REQUEST, "Name topics: /events/?topic=news.")
        bad = [s for s in slugs if not protocol.is_valid_topic(s)]
        if bad:
            raise BadRequest(400, protocol.BAD_REQUEST, f"{bad[0][:200]!r} is not a topic name.")
        self.presence = (query.get("presence") or [""])[0] in ("1", "true")
        if len(slugs) > realtime_settings.MAX_SUBSCRIPTIONS:
            raise BadRequest(
                400,
                protocol.TOO_MANY_SUBSCRIPTIONS,
                f"At most {realtime_settings.MAX_SUBSCRIPTIONS} topics per stream.",
            )
        last_id = ""
        for name, value in self.scope.get("headers", ()):
            if name == b"last-event-id":
                last_id = value.decode("latin1")
        text = last_id or (query.get("since") or [""])[0]
        return slugs, parse_cursor(text, slugs)

    async def refuse(self, exc: BadRequest) -> None:
        body = json.dumps({"error": exc.code, "message": exc.message}).encode()
        await self.asgi_send(
            {
                "type": "http.response.start",
                "status": exc.status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await self.asgi_send({"type": "http.response.body", "body": body})
        self.release()

    async def wait_until_done(self) -> None:
        """Heartbeats until the client goes away or the server ends the stream."""
        disconnect = asyncio.ensure_future(self._wait_disconnect())
        finished = asyncio.ensure_future(self.done.wait())
        try:
            while True:
                await asyncio.wait(
                    {disconnect, finished}, timeout=HEARTBEAT, return_when=asyncio.FIRST_COMPLETED
                )
                if disconnect.done() or finished.done():
                    break
                await self.raw(b": keep-alive\n\n")
            client_gone = disconnect.done()
        finally:
            disconnect.cancel()
            finished.cancel()
        if not client_gone:
            await self.end()

    async def _wait_disconnect(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.gone = True
                return

    def release(self) -> None:
        if self.connection is not None:
            self.connection.release()  # and its place in admission's count
        self.done.set()

    # --- writing

    async def raw(self, body: bytes) -> None:
        if self.gone or self.ended:
            return
        await self.asgi_send({"type": "http.response.body", "body": body, "more_body": True})

    def cursor(self) -> str:
        streams = self.connection.streams
        return ",".join(f"{slug}:{stream.last}" for slug, stream in streams.items())

    async def end(self) -> None:
        """End the response (the browser reconnects after ``retry``)."""
        if self.ended:
            return
        self.ended = True
        self.done.set()
        try:
            await self.asgi_send({"type": "http.response.body", "body": b"", "more_body": False})
        except Exception:  # noqa: BLE001 (the client may be gone already)
            pass

    # --- the connection's Transport

    async def send_frame(self, kind: str, text: str) -> None:
        """A server frame as an event of its type: messages carry the cursor as their id."""
        if self.ending:
            return
        if kind == protocol.MESSAGE:
            await self.raw(event(kind, text, self.cursor()))
            return
        if kind == protocol.ERROR:
            frame = json.loads(text)
            text = json.dumps({"error": frame.get("code"), "message": frame.get("message")})
        await self.raw(event(kind, text))

    def _write(self, frame: Any, force: bool = False, kind: str = protocol.MESSAGE) -> int:
        """The Transport's ``write``: the frame as an event of its type (a message carries
        the cursor, computed after its stream took the seq), written to daphne's response
        (``wire.write_body``: one ``send()`` when nothing waits, as for socket frames)."""
        if self.gone or self.ended or self.ending or not self.started:
            return 0
        if not force and wire.buffered(self.protocol) > 0:
            return wire.WAITING
        cursor = self.cursor() if kind == protocol.MESSAGE else None
        return 1 if wire.write_body(self.protocol, event(kind, frame.text, cursor)) else 0

    def waiting(self) -> bool:
        return self.pending() > 0

    def pending(self) -> int:
        return wire.buffered(self.protocol) if self.protocol is not None else 0

    async def close(self, code: int, reason: str) -> None:
        """The session ended (4401 on a socket): an ``error`` event, then the end."""
        if self.ending:
            return  # already ending (a logout is announced more than once)
        self.ending = True
        name = "unauthorized" if code == protocol.CLOSE_UNAUTHORIZED else "closed"
        await self.raw(event("error", json.dumps({"error": name, "message": reason})))
        self.done.set()  # then the response ends

    def shutdown(self) -> bool:
        self.done.set()  # the stream ends; the browser reconnects elsewhere
        return True

    def drop(self) -> None:
        logger.warning("dropping slow SSE reader %s", self.address)
        if self.protocol is not None:
            wire.abort(self.protocol)
        self.done.set()


async def _event_stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await EventStream(scope, receive, send).run()


class EventsEndpoint:
    """ASGI middleware: ``GET /events/`` is an event stream (with the session's user); the
    rest goes on to Django."""

    def __init__(self, app: Any):
        self.app = app
        self.stream = AuthMiddlewareStack(_event_stream)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "http" and scope["path"] == PATH:
            if scope["method"] != "GET":
                body = b'{"error": "method_not_allowed", "message": "GET the stream."}'
                await send(
                    {
                        "type": "http.response.start",
                        "status": 405,
                        "headers": [(b"content-type", b"application/json"), (b"allow", b"GET")],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return None
            return await self.stream({**scope, wire.SCOPE_KEY: send}, receive, send)
        return await self.app(scope, receive, send)
