"""How this project runs daphne: every flag below is set on purpose (see README, Operations).

Used by ``scripts/run``, the tests that start real servers, and the benchmark, so they all
run the server the same way.
"""

from __future__ import annotations

import os
import sys

from realtime.conf import realtime_settings

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
) -> list[str]:
    """The daphne command line. The access log (a line per connection, costly under many
    connections) is on when ``access_log`` is True, or when ACCESS_LOG=1 if it is None."""
    if access_log is None:
        access_log = os.environ.get("ACCESS_LOG", "0") == "1"
    interface = str(host).replace(":", "\\:")  # IPv6 colons are escaped in endpoints
    return [
        sys.executable,
        "-m",
        "daphne",
        "-e",
        f"tcp:port={port}:interface={interface}:backlog={LISTEN_BACKLOG}",
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

    Every connection allocates hundreds of long-lived objects, so with CPython's default
    thresholds (700, 10, 10) the collector runs full collections over an ever larger heap
    while connections open (about a third of the time to open 5,000 connections here).
    Objects from start-up are frozen out of collections and collections run less often;
    reference counting still frees almost everything at once. Off with REALTIME["GC_TUNING"].
    """
    import gc

    if realtime_settings.GC_TUNING:
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 20, 10)


def main(argv: list[str] | None = None) -> None:
    """``python -m realtime.server --port 8001``: run one daphne process with these flags."""
    import argparse

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args(argv)
    command = daphne_command(args.host, args.port)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
