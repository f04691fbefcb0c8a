"""realtime.origins: which handshakes may open a socket."""

from __future__ import annotations

import pytest

from realtime.origins import handshake_refusal, origin_allowed, split_origin


@pytest.fixture
def hosts(settings):
    settings.ALLOWED_HOSTS = ["example.com", "localhost"]
    settings.HTTPS = False
    settings.REALTIME = {}
    return settings


@pytest.mark.parametrize(
    "origin, host, allowed",
    [
        ("http://example.com", "example.com", True),
        ("https://example.com", "example.com", True),
        ("https://example.com:443", "example.com", True),  # the default port, written out
        ("http://localhost:8000", "localhost:8000", True),
        ("http://localhost:8001", "localhost:8000", False),  # another port: another origin
        ("http://example.com:8443", "example.com", False),
        ("http://evil.example", "example.com", False),
        ("http://example.com.evil.net", "example.com", False),
        ("null", "example.com", False),
        ("ftp://example.com", "example.com", False),
        ("http://example.com/path", "example.com", False),
        ("http://example.com:99999", "example.com", False),
    ],
)
def test_origin_is_the_site_itself(hosts, origin, host, allowed):
    assert origin_allowed(origin, host) is allowed


def test_origin_must_be_https_behind_tls(hosts):
    hosts.HTTPS = True
    assert origin_allowed("https://example.com", "example.com")
    assert not origin_allowed("http://example.com", "example.com")


def test_extra_origins_match_scheme_host_and_port_exactly(hosts):
    hosts.REALTIME = {"ALLOWED_ORIGINS": ["https://app.example.net", "http://dev.test:3000"]}
    assert origin_allowed("https://app.example.net", "example.com")
    assert origin_allowed("https://APP.example.net:443/", "example.com")
    assert origin_allowed("http://dev.test:3000", "example.com")
    assert not origin_allowed("http://app.example.net", "example.com")
    assert not origin_allowed("http://dev.test:3001", "example.com")


def test_missing_origin_is_accepted_unless_required(hosts):
    assert origin_allowed(None, "example.com")
    hosts.REALTIME = {"REQUIRE_ORIGIN": True}
    assert not origin_allowed(None, "example.com")


def test_split_origin_normalises_case_and_default_ports():
    assert split_origin("HTTPS://Example.COM:443") == ("https", "example.com", None)
    assert split_origin("http://[::1]:8000") == ("http", "[::1]", 8000)
    assert split_origin("not an origin") is None


def test_handshake_refusal_names_the_reason(hosts):
    scope = {"subprotocols": ["chat"], "headers": []}
    assert "subprotocols" in handshake_refusal(scope)
    scope = {"subprotocols": ["realtime.v1"], "headers": [(b"origin", b"http://evil.example")]}
    assert "evil.example" in handshake_refusal(scope)
    scope = {"headers": [(b"origin", b"http://example.com"), (b"host", b"example.com")]}
    assert handshake_refusal(scope) is None


@pytest.mark.django_db(transaction=True)
async def test_only_ws_is_routed_to_the_consumer():
    """/ws/ (also under a root path) reaches the consumer; any other path is channels' "No
    route found", with or without a session cookie."""
    from channels.testing import WebsocketCommunicator

    from realtime.routing import websocket_application

    app = websocket_application()

    async def receive():
        return {"type": "websocket.connect"}

    async def send(message):
        raise AssertionError(f"nothing is sent on a path without a route: {message}")

    for path, headers in (
        ("/elsewhere/", []),
        ("/ws/more/", []),
        ("/elsewhere/", [(b"origin", b"http://localhost"), (b"cookie", b"sessionid=x")]),
    ):
        scope = {"type": "websocket", "path": path, "headers": headers, "subprotocols": []}
        with pytest.raises(ValueError, match="No route found"):
            await app(scope, receive, send)
    comm = WebsocketCommunicator(app, "/ws/", subprotocols=["realtime.v1"])
    comm.scope["root_path"] = "/site"
    comm.scope["path"] = "/site/ws/"
    connected, _ = await comm.connect(timeout=5)
    assert connected and (await comm.receive_json_from(timeout=5))["type"] == "welcome"
    await comm.disconnect()


def test_a_remembered_decision_follows_a_changed_setting(hosts):
    assert not origin_allowed("http://other.example", "other.example")
    hosts.ALLOWED_HOSTS = ["other.example"]
    assert origin_allowed("http://other.example", "other.example")
    hosts.ALLOWED_HOSTS = ["example.com"]
    assert not origin_allowed("http://other.example", "other.example")


def test_only_so_many_origins_are_remembered(hosts):
    for i in range(1500):  # headers a client chooses: remembering them must not grow forever
        assert not origin_allowed(f"http://h{i}.example", "example.com")
    assert origin_allowed.cache_info().currsize == 1024
