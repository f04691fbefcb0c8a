"""How this project runs daphne: every flag below is set on purpose (see README, Operations).

Used by ``scripts/run``, the tests that start real servers, and the benchmark, so they all
run the server the same way.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
import time
from typing import Any

from realtime.conf import realtime_settings

logger = logging.getLogger("realtime.server")

# Dead peers are found by WebSocket pings: a ping after 20 s of silence, dropped without a
# pong for 30 s more. Idle but alive connections stay open: daphne's default closes every
# socket after a day (websocket_timeout), all at once for sockets opened together.
PING_INTERVAL = 20
PING_TIMEOUT = 30
WEBSOCKET_TIMEOUT = -1
# A client has 10 s to finish the WebSocket handshake.
HANDSHAKE_TIMEOUT = 10
# An application instance gets 10 s to finish after its socket closed.
APPLICATION_CLOSE_TIMEOUT = 10
# The listen backlog: Twisted's default (50) overflows when many clients (re)connect at once,
# and each dropped SYN costs its client a one-second retransmission.
LISTEN_BACKLOG = 1024


def daphne_command(
    host: str,
    port: int,
    *,
    access_log: bool | None = None,
    ping_interval: int = PING_INTERVAL,
    ping_timeout: int = PING_TIMEOUT,
    application: str = "project.asgi:application",
    fd: int | None = None,
    proxy_headers: bool | None = None,
) -> list[str]:
    """The daphne command line. The access log (a line per connection, costly under many
    connections) is on when ``access_log`` is True, or when ACCESS_LOG=1 if it is None.
    With ``fd``, daphne serves that inherited listening socket instead of binding one.
    ``proxy_headers`` (PROXY_HEADERS=1 if None): the client address and scheme come from the
    proxy's X-Forwarded-For and X-Forwarded-Proto (only behind a proxy that sets them)."""
    if access_log is None:
        access_log = os.environ.get("ACCESS_LOG", "0") == "1"
    if proxy_headers is None:
        proxy_headers = os.environ.get("PROXY_HEADERS", "0") == "1"
    interface = str(host).replace(":", "\\:")  # IPv6 colons are escaped in endpoints
    if fd is not None:
        endpoint = f"fd:fileno={fd}"
    else:
        endpoint = f"tcp:port={port}:interface={interface}:backlog={LISTEN_BACKLOG}"
    return [
        sys.executable,
        "-m",
        "daphne",
        "-e",
        endpoint,
        *(["--proxy-headers"] if proxy_headers else []),
        "-v",
        "1" if access_log else "0",
        # One frame limit for the whole stack: autobahn closes a larger frame with 1009
        # before it is buffered, the consumer checks the same limit.
        "--websocket-max-message-size",
        str(realtime_settings.MAX_FRAME_BYTES),
        "--websocket_timeout",
        str(WEBSOCKET_TIMEOUT),
        "--websocket_connect_timeout",
        str(HANDSHAKE_TIMEOUT),
        "--ping-interval",
        str(ping_interval),
        "--ping-timeout",
        str(ping_timeout),
        "--application-close-timeout",
        str(APPLICATION_CLOSE_TIMEOUT),
        application,
    ]


def tune_gc() -> None:
    """Garbage collector settings for a server holding thousands of long-lived connections.

    Every connection holds some eighty objects the cyclic collector tracks, so while
    connections open the heap keeps growing, and every quarter it grows ends in a full
    collection over all of it: 7-9 full collections, 2.3-3.7 s, while 5,000 connections opened
    in one process (``bench/connection_profile.py --gc``). With ``REALTIME["GC_TUNING"]`` (on by
    default):
    - the objects made at start-up (Django, the URL conf, templates: about half of what is
      tracked with a few thousand connections) are frozen out of collections, so a full
      collection scans only what connections hold;
    - full collections are paced (``PacedFullCollections``): at most one every
      ``GC_FULL_INTERVAL`` seconds, and only once a connection closed since the last one (or
      a minute passed), each still when Python's own rule calls for it. A crowd opening at
      once sets off none instead of seven; in a steady state, where Python's rule holds
      them off, nothing changes. The young collections keep
      Python's thresholds, so a closed connection's garbage goes as it would without, or
      within ``GC_FULL_INTERVAL`` seconds for what reached the old generation
      (``tests/test_closes.py``: RSS flat over a churn of 6,000 connections). A higher young
      threshold (7,000) also left no full collection while they opened, but let a churn's
      garbage pile up without bound: RSS +11 % over 10,000 connections.
    Off: nothing is frozen or paced.
    """
    if realtime_settings.GC_TUNING:
        gc.collect()
        gc.freeze()
    PacedFullCollections.uninstall_all()  # once per process, whatever called this before
    if realtime_settings.GC_TUNING and realtime_settings.GC_FULL_INTERVAL > 0:
        PacedFullCollections(realtime_settings.GC_FULL_INTERVAL).install()


_closed = 0  # connections closed in this process (``connection_closed``)


def connection_closed() -> None:
    """A connection closed: what it held may now be garbage in the old generation, which
    only a full collection frees (``PacedFullCollections``)."""
    global _closed
    _closed += 1


def connections_closed() -> int:
    return _closed


class PacedFullCollections:
    """At most one full collection every ``interval`` seconds, each when Python calls for it,
    and only once a connection closed since the last one (or ``max_wait`` seconds passed).

    Python collects the old generation once ten collections of the middle generation have
    passed since the last full one *and* the old generation grew by a quarter since. Between
    full collections this (a ``gc.callbacks`` hook) holds the first condition off with a
    threshold Python never reaches; once ``interval`` seconds passed and a connection closed
    meanwhile, Python's threshold is back and its own rule decides. While connections only
    open (a crowd after a restart) the old generation grows with objects all alive: a full
    collection then walks all of them and frees nothing (one, 0.22 s, while 5,000 opened:
    9 % of the opening, bench/notes.md), so it waits for a close, or ``max_wait`` for any
    other old garbage. Nothing runs on a timer: the check rides on the middle generation's
    collections.
    """

    HELD = 1 << 30  # the old generation's threshold while held: never reached
    MAX_WAIT = 60.0  # seconds a full collection waits at most when no connection closed

    def __init__(
        self,
        interval: float,
        clock: Any = time.monotonic,
        closed: Any = connections_closed,
        max_wait: float = MAX_WAIT,
    ):
        self.interval, self.clock, self.closed, self.max_wait = interval, clock, closed, max_wait
        self.young, self.middle, self.old = gc.get_threshold()
        self.last_full = clock()
        self.closed_at_full = closed()
        self.held = False

    def install(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        self.hold()

    def uninstall(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
        self.release()

    @classmethod
    def uninstall_all(cls) -> None:
        """Every one installed, newest first, so Python's own thresholds are back."""
        for found in reversed([c for c in gc.callbacks if isinstance(c, cls)]):
            found.uninstall()

    def hold(self) -> None:
        gc.set_threshold(self.young, self.middle, self.HELD)
        self.held = True

    def release(self) -> None:
        gc.set_threshold(self.young, self.middle, self.old)
        self.held = False

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase != "stop":
            return
        generation = info["generation"]
        if generation == 2:  # Python's, or anyone's gc.collect()
            self.last_full = self.clock()
            self.closed_at_full = self.closed()
            if not self.held:
                self.hold()
        elif generation == 1 and self.held:
            waited = self.clock() - self.last_full
            if waited >= self.interval and (
                self.closed() != self.closed_at_full or waited >= self.max_wait
            ):
                self.release()


def limit_http_request_time(seconds: float) -> None:
    """Close HTTP connections whose request head is not complete within ``seconds``.

    Two limits, set on every factory daphne builds after this call (daphne imports the
    application before it builds its factory); both pinned by ``test_wire``:
    - an idle timeout: Twisted's own ``HTTPFactory.timeOut`` (daphne leaves Twisted's 12 hours),
      reset by data received, suspended while a request is served;
    - a deadline for the whole head, like nginx's ``client_header_timeout``: a client that
      trickles a byte every few seconds resets the idle timeout forever (slowloris), so each
      connection's head must be complete ``seconds`` after the connection opened (or after
      the previous request on a kept-alive connection ended) whatever arrives meanwhile
      (``head_deadline_channel``: daphne's factory builds its HTTP/1.1 channels from it). The
      head's size is bounded by Twisted (``totalHeadersSize``, 16 KiB: 400 and closed beyond).
    """
    try:
        from daphne import http_protocol
        from twisted.web import http
    except ImportError:
        return
    factory = http_protocol.HTTPFactory
    original = getattr(factory.__init__, "__wrapped__", factory.__init__)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self.timeOut = seconds

    channel = head_deadline_channel()
    channel.head_seconds = seconds
    generic = http._GenericHTTPChannelProtocol  # (read once: twisted.web.http is a module proxy)

    def protocol(self: Any) -> Any:  # Twisted's _genericHTTPChannelProtocolFactory, our channel
        return generic(channel())

    __init__.__wrapped__ = original  # type: ignore[attr-defined]
    factory.__init__ = __init__
    factory.protocol = protocol


@functools.cache
def head_deadline_channel() -> type:
    """Twisted's HTTP/1.1 channel with a deadline for each request head: armed when the
    connection opens and when a kept-alive request ends, disarmed when a head is complete
    (``allHeadersReceived``; a WebSocket upgrade leaves the channel there); on expiry the
    connection is closed. A subclass, not wrappers on each channel: a handshake makes no
    closures and the channel holds one more attribute, not five."""
    from twisted.web import http

    class HeadDeadlineChannel(http.HTTPChannel):
        head_seconds = 10.0
        head_call: Any = None

        def connectionMade(self) -> None:
            super().connectionMade()
            self.arm_head_deadline()

        def allHeadersReceived(self) -> None:
            self.disarm_head_deadline()
            super().allHeadersReceived()

        def requestDone(self, request: Any) -> None:
            super().requestDone(request)
            if self.persistent and self.transport is not None:
                self.arm_head_deadline()

        def connectionLost(self, reason: Any) -> None:
            self.disarm_head_deadline()
            super().connectionLost(reason)

        def arm_head_deadline(self) -> None:
            from twisted.internet import reactor  # daphne's, installed before it serves

            self.disarm_head_deadline()
            self.head_call = reactor.callLater(self.head_seconds, self.head_expired)

        def disarm_head_deadline(self) -> None:
            call = self.head_call
            if call is not None:
                if call.active():
                    call.cancel()
                self.head_call = None

        def head_expired(self) -> None:
            self.head_call = None
            if self.transport is not None:
                logger.info(
                    "closing %s: no complete request head in %gs",
                    self.transport.getPeer(),
                    self.head_seconds,
                )
                self.transport.abortConnection()

    return HeadDeadlineChannel


def quiet_probe_access_log() -> None:
    """daphne's access log (``ACCESS_LOG=1``) writes a line per request: not for the probes
    of ``realtime.ops`` (a load balancer asks every few seconds)."""
    try:
        from daphne.access import AccessLogGenerator
    except ImportError:
        return
    original = getattr(AccessLogGenerator.__call__, "__wrapped__", AccessLogGenerator.__call__)

    def __call__(self: Any, protocol: str, action: str, details: dict[str, Any]) -> None:
        if protocol == "http" and details.get("path") in ("/healthz", "/readyz", "/metrics"):
            return
        original(self, protocol, action, details)

    __call__.__wrapped__ = original  # type: ignore[attr-defined]
    AccessLogGenerator.__call__ = __call__


_shutdown_installed = False
DRAIN_STEPS = 20
_drained: Any = None  # fires when the shutdown drain has closed every connection


def install_shutdown_close() -> None:
    """Under daphne: when the server stops, first stop accepting connections, then close
    every local socket with 1001 (going away), spread over ``SHUTDOWN_DRAIN`` seconds, so
    that clients reconnect (with jitter, elsewhere) instead of seeing an abnormal closure or
    reconnecting to a dying process, and not all at once."""
    global _shutdown_installed
    if _shutdown_installed or "daphne.server" not in sys.modules:
        return
    _shutdown_installed = True
    from twisted.internet import defer, reactor, task, tcp

    from realtime import engine

    def close_all() -> Any:
        for reader in list(reactor.getReaders()):
            if isinstance(reader, tcp.Port):
                reader.stopListening()
        clients = [client for hub in engine.all_hubs() for client in list(hub.connections)]
        # Spread the closes over SHUTDOWN_DRAIN seconds (DRAIN_STEPS batches): clients come
        # back on the other hosts a batch at a time, and a rolling restart never has every
        # client away at once.
        drain = realtime_settings.SHUTDOWN_DRAIN
        batch = max(1, -(-len(clients) // DRAIN_STEPS))
        interval = drain / DRAIN_STEPS if drain else 0
        closed = 0
        global _drained
        _drained = defer.Deferred()

        def close_batch() -> Any:
            nonlocal closed
            for client in clients[closed : closed + batch]:
                try:
                    client.server_shutdown()
                except Exception:
                    logger.exception("could not close a connection at shutdown")
            closed += batch
            if closed < len(clients):
                return task.deferLater(reactor, interval, close_batch)
            logger.info("server shutting down: closed %d connection(s) with 1001", len(clients))
            # Give the close frames a moment to leave before the reactor stops.
            return task.deferLater(reactor, 0.5 if clients else 0, _drained.callback, None)

        close_batch()
        return _drained

    # daphne's own trigger (registered after ours, run in the same phase without waiting for
    # ours) cancels every application at once: it waits for the drain.
    from daphne.server import Server

    kill_all = Server.kill_all_applications

    def kill_after_drain(self: Any) -> Any:
        if _drained is None or _drained.called:
            return kill_all(self)
        waiting = defer.Deferred()
        _drained.addBoth(lambda result: (waiting.callback(None), result)[1])
        waiting.addCallback(lambda _: kill_all(self))
        return waiting

    Server.kill_all_applications = kill_after_drain

    # Registered when the ASGI application is imported, before daphne registers its own
    # trigger that cancels every application: ours must run first.
    reactor.addSystemEventTrigger("before", "shutdown", close_all)


def _int_env(name: str) -> int:
    """An integer environment variable; 0 when unset or empty."""
    value = os.environ.get(name, "").strip()
    if not value:
        return 0
    try:
        return int(value)
    except ValueError:
        sys.exit(f"{name} must be an integer, not {value!r}")


def main(argv: list[str] | None = None) -> int:
    """``python -m realtime.server --port 8000 --workers 4``: daphne with these flags, in N
    worker processes sharing one port (default: one per CPU), supervised."""
    import argparse

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=_int_env("PORT") or 8000)
    parser.add_argument(
        "--workers",
        type=int,
        default=_int_env("WORKERS") or os.cpu_count() or 1,
        help="daphne processes serving the port (default: WORKERS, else the number of CPUs)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, not {args.workers}")
    if ":" in args.host:
        parser.error("--host must be an IPv4 address (daphne adopts IPv4 sockets only)")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0-65535, not {args.port}")
    import django

    django.setup()
    from realtime import supervisor

    return supervisor.run(
        args.host,
        args.port,
        args.workers,
        lambda fd: daphne_command(args.host, args.port, fd=fd),
        LISTEN_BACKLOG,
    )


if __name__ == "__main__":
    sys.exit(main())
