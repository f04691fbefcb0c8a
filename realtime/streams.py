"""Topic streams on one socket: live frames from the hub, replay and gap fill from the database,
in order, each seq once (the decisions are ``delivery.Stream``'s), and the slow-reader drop.

``StreamsMixin`` is the half of ``RealtimeConsumer`` that the hub calls (``engine.Subscriber``);
the consumer is the half that speaks to the client.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from realtime import engine, metrics, protocol, wire
from realtime.conf import realtime_settings
from realtime.delivery import FETCH, SEND, Stream
from realtime.topics import first_retained_seq, latest_seq, read_page

logger = logging.getLogger("realtime.consumer")

STATE_DRAIN_POLL = 0.01  # seconds between checks of a socket holding back a state frame
# Replay pacing: rows are written while fewer than HIGH_WATER bytes wait for the client, then
# the replay waits (checking every DRAIN_POLL s) until at most LOW_WATER bytes wait. Both far
# below MAX_SEND_BUFFER, which is left to live frames of other topics meanwhile.
REPLAY_HIGH_WATER = 256 * 1024
REPLAY_LOW_WATER = 64 * 1024
DRAIN_POLL = 0.005


class StreamsMixin:
    """Per-topic streams of a consumer: ``streams``, ``hub``, ``direct``, ``tasks``."""

    streams: dict[str, Stream]
    hub: engine.Hub | None
    direct: Any
    write: Any  # wire.write or wire.send_prepared (REALTIME["WRITE_PATH"])
    tasks: set[asyncio.Task]
    closing: bool
    max_send_buffer: int
    connection_id: str
    address: str
    host: str  # the client's address, without the port
    counted: bool

    # Provided by the consumer: send (a closed connection's sends are dropped), _clean_up.
    send: Any
    _clean_up: Any

    async def _place(
        self, slug: str, stream: Stream, topic: Any, since: int | None, hub: Any
    ) -> tuple[int, bool]:
        """Set a new subscription's starting position (already listening; nothing sent):
        return the topic's latest seq and ``recovered``."""
        stream.topic_id = topic.pk
        stream.state = topic.is_state
        latest = await self._latest(hub, slug, topic.pk, since)
        recovered = stream.start(since, latest, topic.backlog)
        if recovered is None:
            recovered = await first_retained_seq(topic.pk, stream.last) == stream.last + 1
        return latest, recovered

    async def _open(self, slug: str, stream: Stream, topic: Any, frame: Any, hub: Any) -> None:
        """Place a new subscription (already listening), answer ``subscribed`` and send the
        backlog or what follows ``since``."""
        latest, recovered = await self._place(slug, stream, topic, frame.since, hub)
        await self._announce(slug, stream, latest, recovered, frame.id)

    async def _announce(
        self, slug: str, stream: Stream, latest: int, recovered: bool, id: Any = None
    ) -> None:
        """Answer ``subscribed`` for a placed stream, then send what it owes."""
        await self.send(text_data=protocol.subscribed(slug, latest, recovered, id=id))
        logger.info("subscribe %s topic=%s seq=%s", self.connection_id, slug, latest)
        await self._catch_up(slug, stream)

    def push(self, slug: str, seq: int, frame: wire.Frame) -> int:
        """The hub's fast path, without a coroutine per connection: 1 when the frame was
        written to the socket, 0 when not (a duplicate, waiting for a fetch, a slow reader
        dropped), -1 when it must go through ``deliver`` (no direct socket: not daphne)."""
        direct = self.direct
        if direct is None:
            return -1
        stream = self.streams.get(slug)
        if stream is None or self.closing:
            return 0
        verdict = stream.offer(seq)
        if verdict == SEND:
            transport = direct.transport
            # Only a socket with bytes already waiting can be over the limit.
            if transport is not None and (transport.dataBuffer or transport._tempDataLen):
                if stream.state:
                    # Behind on a state topic: hold the newest frame until the socket drains.
                    self._hold_state(slug, stream, frame)
                    return 0
                if wire.buffered(direct) > self.max_send_buffer:
                    self._drop_slow_reader()
                    return 0
            return 1 if self.write(direct, frame) else 0
        if verdict == FETCH:
            self._spawn(self._catch_up(slug, stream))
        return 0

    async def deliver(self, slug: str, seq: int, frame: wire.Frame) -> bool:
        """A live frame of ``slug``: send it if it is the next one, else catch up. True when
        the frame was written."""
        stream = self.streams.get(slug)
        if stream is None or self.closing:
            return False
        verdict = stream.offer(seq)
        if verdict == SEND:
            if self.direct is None:
                await self.send(text_data=frame.text)
                return not self.closing
            if wire.buffered(self.direct) > self.max_send_buffer:
                self._drop_slow_reader()
                return False
            return self.write(self.direct, frame)
        if verdict == FETCH:
            self._spawn(self._catch_up(slug, stream))
        return False

    def advance(self, slug: str, seq: int) -> None:
        """``seq`` exists in ``slug``: fetch what this connection lacks up to it."""
        stream = self.streams.get(slug)
        if stream is not None and not self.closing and stream.learn(seq):
            self._spawn(self._catch_up(slug, stream))

    def _hold_state(self, slug: str, stream: Any, frame: wire.Frame) -> None:
        """Keep only the newest frame of a state topic while the socket has bytes waiting;
        one task sends it once they are gone (frames in between are never sent)."""
        starting = stream.pending is None
        stream.pending = frame
        if starting:
            self._spawn(self._send_held_state(slug, stream))

    async def _send_held_state(self, slug: str, stream: Any) -> None:
        direct = self.direct
        while self.streams.get(slug) is stream and not self.closing:
            await asyncio.sleep(STATE_DRAIN_POLL)
            transport = direct.transport
            if transport is None:
                return
            if not (transport.dataBuffer or transport._tempDataLen):
                frame, stream.pending = stream.pending, None
                if frame is not None:
                    self.write(direct, frame)
                return
            if wire.buffered(direct) > self.max_send_buffer:
                stream.pending = None
                self._drop_slow_reader()
                return
        stream.pending = None

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _catch_up(self, slug: str, stream: Stream) -> None:
        """Send ``stream.last+1 .. stream.target`` from the database, in order, paced by what
        the socket drains: rows are written while fewer than ``REPLAY_HIGH_WATER`` bytes wait,
        then the replay waits for the client to read (``_drained``). A client that reads at
        any speed catches up however large the backlog; one that stops reading is dropped."""
        stream.busy = True
        try:
            while self.streams.get(slug) is stream and stream.owed:
                rows = await read_page(stream.topic_id, stream.fetch_after, stream.target)
                if self.streams.get(slug) is not stream or self.closing:
                    return
                if not rows:
                    stream.skip_to_target()  # pruned: nothing left to send
                    break
                for seq, text in rows:
                    if self.pending_bytes() > REPLAY_HIGH_WATER:
                        if not await self._drained():
                            return
                        if self.streams.get(slug) is not stream:
                            return
                    if stream.sent(seq):
                        await self._send_replayed(text)
                        metrics.local.replayed += 1
        except Exception:
            logger.warning("catch-up of %s on %s failed", slug, self.connection_id, exc_info=True)
            # The next frame or head announcement for the topic tries again.
        finally:
            stream.busy = False

    async def _send_replayed(self, text: str) -> None:
        """A replayed frame: straight to the socket when possible (as live frames are)."""
        if self.direct is not None:
            self.write(self.direct, wire.Frame(text.encode(), text))
        else:
            await self.send(text_data=text)

    def pending_bytes(self) -> int:
        """Bytes written to this connection that the client has not taken yet (0 when the
        server cannot tell: not under daphne)."""
        return wire.buffered(self.protocol) if self.protocol is not None else 0

    async def _drained(self) -> bool:
        """Wait until at most ``REPLAY_LOW_WATER`` bytes wait for the client. A client whose
        backlog does not shrink for ``SEND_STALL_TIMEOUT`` seconds does not read: it is
        dropped (False). True when drained (and still open)."""
        loop = asyncio.get_running_loop()
        stall = realtime_settings.SEND_STALL_TIMEOUT
        lowest, since = self.pending_bytes(), loop.time()
        while not self.closing:
            pending = self.pending_bytes()
            if pending <= REPLAY_LOW_WATER:
                return True
            now = loop.time()
            if pending < lowest:
                lowest, since = pending, now
            elif now - since > stall:
                self._drop_slow_reader()
                return False
            await asyncio.sleep(DRAIN_POLL)
        return False

    def _drop_slow_reader(self) -> None:
        """The client does not read: drop it before its buffer grows (it resumes with since)."""
        if not self.closing:
            metrics.SLOW_READERS.inc()
            logger.warning(
                "dropping slow reader %s addr=%s: %d bytes unsent",
                self.connection_id,
                self.address,
                self.pending_bytes(),
            )
            wire.drop(self.protocol)
            self._clean_up()

    def _release(self) -> None:
        """Leave every topic, the hub's per-address count and every task; idempotent. The
        subscriber's ``host`` is its client address, as counted by ``Hub.connected``."""
        self.closing = True
        for slug in list(self.streams):
            self._leave(slug)
        if self.hub is not None and self.counted:
            self.counted = False
            self.hub.disconnected(self, self.host)
        for task in list(self.tasks):
            task.cancel()

    def _leave(self, slug: str) -> None:
        if self.streams.pop(slug, None) is not None and self.hub is not None:
            self.hub.discard(slug, self)

    async def _latest(self, hub: engine.Hub, slug: str, topic_id: int, since: int | None) -> int:
        """The topic's latest seq: from the hub when it tracks it, else from the database
        (read after listening, so nothing published later can be missed). A ``since`` beyond
        the hub's head may come from a client of another process that saw a message this
        one has not received yet: the database decides."""
        head = hub.head(slug)
        if head is not None and (since is None or since <= head):
            return head
        epoch = hub.epoch()
        latest = await latest_seq(topic_id)
        hub.seed(slug, latest, epoch)
        return latest
