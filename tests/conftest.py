"""Shared fixtures: a real Redis (REDIS_URL, or an embedded one), consumers and clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from realtime.embedded import EmbeddedRedis

TIMEOUT = 5


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """Redis from REDIS_URL when set, else an embedded redis-server on a free port."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(directory=tmp_path_factory.mktemp("redis")).start()
    yield server.url
    server.stop()


def layer_settings(url: str, prefix: str) -> dict[str, Any]:
    return {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [url], "prefix": prefix, "capacity": 1000},
        }
    }


@pytest.fixture(autouse=True)
def channel_layer(settings, redis_url):
    """Every test gets the real Redis layer under its own key prefix."""
    settings.CHANNEL_LAYERS = layer_settings(redis_url, f"test-{uuid.uuid4().hex[:10]}")
    from channels.layers import get_channel_layer

    return get_channel_layer()


class Listener:
    """A raw Redis pub/sub client on every topic channel: what the engine publishes."""

    def __init__(self):
        import redis.asyncio as aioredis

        from realtime import keys

        url, self.prefix = keys.redis_config()
        self.client = aioredis.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.channel_prefix = keys.topic_channel(self.prefix, "")

    async def start(self) -> Listener:
        await self.pubsub.psubscribe(self.channel_prefix + "*")
        return self

    async def next(self, timeout: float = TIMEOUT) -> tuple[str, int, dict[str, Any]]:
        """The next (slug, seq, frame) published."""
        from realtime import keys

        async with asyncio.timeout(timeout):
            while True:
                msg = await self.pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                if msg and msg["type"] == "pmessage":
                    slug = msg["channel"].decode()[len(self.channel_prefix) :]
                    seq, _, frame = keys.decode_event(msg["data"])
                    return slug, seq, json.loads(frame)

    async def close(self) -> None:
        await self.pubsub.aclose()
        await self.client.aclose()


@pytest.fixture
async def listener():
    found = await Listener().start()
    yield found
    await found.close()


class WS:
    """A WebsocketCommunicator speaking JSON frames."""

    def __init__(self, communicator: WebsocketCommunicator):
        self.c = communicator
        self.welcome: dict[str, Any] | None = None

    async def send(self, frame: Any) -> None:
        await self.c.send_to(text_data=frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        return json.loads(await self.c.receive_from(timeout=timeout))

    async def recv_until(self, type_: str, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Frames received up to and including the first of ``type_``."""
        frames = []
        while True:
            frames.append(await self.recv(timeout))
            if frames[-1]["type"] == type_:
                return frames

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        await self.send(frame)
        return await self.recv()

    async def subscribe(self, topic: str, **extra: Any) -> dict[str, Any]:
        """Subscribe and return the ``subscribed`` answer (replayed messages follow it)."""
        answer = await self.request({"type": "subscribe", "topic": topic, **extra})
        assert answer["type"] == "subscribed", answer
        return answer

    async def messages(self, n: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        out = [await self.recv(timeout) for _ in range(n)]
        assert all(f["type"] == "message" for f in out), out
        return out

    async def closed(self, timeout: float = TIMEOUT) -> int | None:
        """Wait for the server to close; return the close code."""
        while True:
            output = await self.c.receive_output(timeout)
            if output["type"] == "websocket.close":
                return output.get("code")

    async def close(self) -> None:
        await self.c.disconnect()


def session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@pytest.fixture
async def connect():
    """Open consumers on /ws/; every one still open is disconnected at teardown."""
    from realtime.routing import websocket_application

    opened: list[WS] = []
    app = websocket_application()

    async def _connect(
        *,
        user=None,
        origin: bytes | None = b"http://localhost",
        subprotocols: list[str] | None = None,
        expect_welcome: bool = True,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> tuple[bool, Any, WS]:
        all_headers = list(headers or [])
        if origin is not None:
            all_headers.append((b"origin", origin))
        if user is not None:
            all_headers.append((b"cookie", await database_sync_to_async(session_cookie)(user)))
        comm = WebsocketCommunicator(
            app,
            "/ws/",
            headers=all_headers,
            subprotocols=["realtime.v1"] if subprotocols is None else subprotocols,
        )
        connected, subprotocol = await comm.connect(timeout=TIMEOUT)
        ws = WS(comm)
        opened.append(ws)
        if connected and expect_welcome:
            ws.welcome = await ws.recv()
        return connected, subprotocol, ws

    yield _connect
    for ws in opened:
        try:
            # channels_redis shields its blocking pop, so a consumer takes up to 5 s to
            # finish; the communicator cancels it after this timeout.
            await ws.c.disconnect(timeout=0.3)
        except Exception:
            pass
    from realtime import engine

    await engine.stop_loop_hubs()


@pytest.fixture
def topic_factory(db):
    from realtime.models import Topic

    def make(slug: str = "news", **kw: Any) -> Topic:
        return Topic.objects.create(slug=slug, title=kw.pop("title", slug.title()), **kw)

    return make


@pytest.fixture(autouse=True)
def closed_breakers():
    """A fan-out failure in one test (a Redis made to fail) does not open the next one's."""
    from realtime import fanout

    fanout.breakers.clear()


@pytest.fixture(autouse=True)
def fresh_topic_cache():
    """Each test's topics are new rows: no cached row of an earlier test may be reused."""
    from realtime import topics

    topics.forget()
    yield
    topics.forget()


@pytest.fixture
def live_site(tmp_path, redis_url):
    """Start real sites (daphne + optionally runscheduler, fresh SQLite database, own Redis
    prefix): ``live_site(scheduler=False, plain=True, workers=2, realtime={...}, redis=...)``.
    Every site started is stopped by pid at teardown."""
    from tests.helpers.processes import Site

    started: list[Site] = []

    def start(
        *,
        scheduler: bool = True,
        plain: bool = False,
        workers: int | None = None,
        realtime: dict[str, Any] | None = None,
        redis: str | None = None,
        daphne_options: dict[str, Any] | None = None,
        **env: str,
    ) -> Site:
        if realtime is not None:
            env["REALTIME"] = json.dumps(realtime)
        site = Site(
            tmp_path / f"site-{len(started)}",
            redis or redis_url,
            daphne_options,
            plain=plain,
            workers=workers,
            **env,
        )
        site.tmp_path.mkdir(parents=True, exist_ok=True)
        started.append(site)
        return site.start(scheduler=scheduler)

    yield start
    for site in started:
        site.stop()


POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def postgres_database():
    """The URL of a fresh PostgreSQL database, dropped (connections and all) at teardown."""
    import psycopg

    name = f"realtime_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is needed at {POSTGRES_URL} (set TEST_POSTGRES_URL): {exc}")
    admin.execute(f'CREATE DATABASE "{name}"')
    yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture
def postgres_via_proxy(tmp_path):
    """A fresh PostgreSQL database reached through a TCP proxy we can stop and start."""
    import psycopg

    from realtime.embedded import free_port, wait_for_port
    from tests.helpers.processes import PYTHON, Proc

    base = os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    name = f"realtime_outage_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(base, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{name}"')
    port = free_port()
    target = base.split("@", 1)[1].split("/", 1)[0]
    if ":" not in target:
        target += ":5432"
    proxy_log = tmp_path / "proxy.log"
    argv = [PYTHON, "tests/helpers/tcpproxy.py", str(port), target]
    state = {"proxy": None}

    def start():
        state["proxy"] = Proc(argv, dict(os.environ), proxy_log)
        wait_for_port(port)

    def stop():
        state["proxy"].stop(signal.SIGKILL)

    start()
    prefix = base.split("@", 1)[0]
    yield f"{prefix}@127.0.0.1:{port}/{name}", start, stop
    stop()
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.close()
