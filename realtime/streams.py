"""One client's topic streams: what the hub calls for each topic (``push``, ``deliver``,
``advance``) and the replay from the database, in order, each seq once (the decisions are
``delivery.Stream``'s), paced by what the transport drains.

Replay: rows are written while fewer than ``REPLAY_HIGH_WATER`` bytes wait, then the replay
waits until at most ``REPLAY_LOW_WATER`` wait; a client whose backlog does not shrink for
``SEND_STALL_TIMEOUT`` seconds is dropped. Live frames are judged by ``MAX_SEND_BUFFER``.
A ``Connection`` owns one ``TopicStreams`` (composition: it holds the streams, the transport
and a callback for when the client is dropped; nothing of the connection's).
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from realtime import metrics, protocol, replay, topics
from realtime.conf import realtime_settings
from realtime.delivery import FETCH, SEND, Stream
from realtime.wire import WAITING, Burst, Frame

logger = logging.getLogger("realtime.consumer")

STATE_DRAIN_POLL = 0.01  # seconds between checks of a socket holding back a state frame
REPLAY_HIGH_WATER = 256 * 1024
REPLAY_LOW_WATER = 64 * 1024
BURST_BYTES = 64 * 1024  # a replay writes up to this many bytes of frames at once
DRAIN_POLL = 0.005


class TopicStreams:
    """The streams of one client, by topic: the hub's subscriber for each of them."""

    def __init__(self, transport: Any, hub: Any, label: str, dropped: Callable[[], None]):
        self.transport = transport
        self.hub = hub
        self.label = label  # for logs: the connection id and address
        self.dropped = dropped  # the client was dropped (a reader that does not read)
        self.streams: dict[str, Stream] = {}
        self.tasks: set[asyncio.Task] | None = None  # made at the first (most hold none)
        self.closing = False
        self.max_send_buffer = realtime_settings.MAX_SEND_BUFFER
        self._write = transport.write
        self._waiting = transport.waiting
        self._bursts = getattr(transport, "bursts", False)  # frames may be joined in one write
        self.owner = ""  # the connection's id: its own whispers are not sent back to it

    def listen(self, slug: str) -> Stream:
        """A new stream for ``slug``, already listening (busy until placed and caught up)."""
        stream = self.streams[slug] = Stream()
        self.hub.add(slug, self)
        return stream

    def leave(self, slug: str) -> None:
        if self.streams.pop(slug, None) is not None:
            self.hub.discard(slug, self)

    def close(self) -> None:
        """Leave every topic and cancel every task; idempotent."""
        self.closing = True
        for slug in list(self.streams):
            self.leave(slug)
        for task in list(self.tasks or ()):
            task.cancel()

    # --- placing a stream ---------------------------------------------------------------------

    async def place(
        self, slug: str, stream: Stream, topic: Any, since: int | None
    ) -> tuple[int, bool]:
        """Set a new subscription's starting position (already listening; nothing sent):
        return the topic's latest seq and ``recovered``."""
        stream.topic_id = topic.pk
        if topic.pk is None:
            # A family topic read before its first publish: the row may exist by now (read
            # after listening, so a first message stored before the listen is not missed).
            stream.topic_id = await topics.topic_id(slug)
        stream.state = topic.is_state
        latest = await self._latest(slug, stream.topic_id, since)
        recovered = stream.start(since, latest, topic.backlog)
        if recovered is None:  # whether ``since + 1`` is still stored (the replay's page)
            recovered = (
                stream.topic_id is not None
                and (await replay.pages().read(stream.topic_id, stream.last, latest)).first
                == stream.last + 1
            )
        return latest, recovered

    async def announce(
        self, slug: str, stream: Stream, latest: int, recovered: bool, id: Any = None
    ) -> None:
        """Answer ``subscribed`` for a placed stream, then send what it owes."""
        await self.send(protocol.SUBSCRIBED, protocol.subscribed(slug, latest, recovered, id=id))
        logger.info("subscribe %s topic=%s seq=%s", self.label, slug, latest)
        await self._catch_up(slug, stream)

    async def _latest(self, slug: str, topic_id: int | None, since: int | None) -> int:
        """The topic's latest seq: from the hub when it tracks it, else from the database
        (read after listening, so nothing published later can be missed). A ``since`` beyond
        the hub's head may come from a client of another process that saw a message this
        one has not received yet: the database decides."""
        head = self.hub.head(slug)
        if head is not None and (since is None or since <= head):
            return head
        epoch = self.hub.epoch()
        latest = await topics.latest_seq(topic_id)
        self.hub.seed(slug, latest, epoch)
        return latest

    # --- from the hub, for each topic

    def push(self, slug: str, seq: int, frame: Frame) -> int:
        """The hub's fast path, without a coroutine per connection: 1 when the frame was
        written, 0 when not (a duplicate, waiting for a fetch, a slow reader dropped), -1
        when it must go through ``deliver`` (a transport without ``write``)."""
        write = self._write
        if write is None:
            return -1
        stream = self.streams.get(slug)
        if stream is None or self.closing:
            return 0
        verdict = stream.offer(seq)
        if verdict == SEND:
            written = write(frame)
            if written != WAITING:
                return written
            # Bytes already wait for this client (it reads slower than frames come).
            if stream.state:  # a state topic: hold the newest frame until the socket drains
                self._hold_state(slug, stream, frame)
                return 0
            if self.transport.pending() > self.max_send_buffer:
                self._drop_slow_reader()
                return 0
            return write(frame, True)  # queued behind what waits
        if verdict == FETCH:
            self._spawn(self._catch_up(slug, stream))
        return 0

    async def deliver(self, slug: str, seq: int, frame: Frame) -> bool:
        """A live frame of ``slug``: send it if it is the next one, else catch up. True when
        the frame was sent."""
        stream = self.streams.get(slug)
        if stream is None or self.closing:
            return False
        verdict = stream.offer(seq)
        if verdict == SEND:
            if self.transport.pending() > self.max_send_buffer:
                self._drop_slow_reader()
                return False
            await self.transport.send_frame(protocol.MESSAGE, frame.text)
            return not self.closing
        if verdict == FETCH:
            self._spawn(self._catch_up(slug, stream))
        return False

    def advance(self, slug: str, seq: int) -> None:
        """``seq`` exists in ``slug``: fetch what this connection lacks up to it."""
        stream = self.streams.get(slug)
        if stream is not None and not self.closing and stream.learn(seq):
            self._spawn(self._catch_up(slug, stream))

    def whisper(self, slug: str, frame: Frame, sender: str) -> None:
        """A whisper of ``slug`` from connection ``sender``: at most once, never to itself."""
        if sender != self.owner and slug in self.streams:
            self._notice(protocol.WHISPER, frame)

    def notice(self, kind: str, text: str) -> None:
        """A frame outside the topic's seq (presence): sent now, in order, at most once."""
        self._notice(kind, Frame(text.encode(), text))

    def _notice(self, kind: str, frame: Frame) -> None:
        if self.closing:
            return
        if self._write is None:
            self._spawn(self.send(kind, frame.text))
        elif self.transport.pending() > self.max_send_buffer:
            self._drop_slow_reader()
        else:
            self._write(frame, True, kind)

    # --- sending

    async def send(self, kind: str, text: str) -> None:
        if not self.closing:
            await self.transport.send_frame(kind, text)

    def _hold_state(self, slug: str, stream: Stream, frame: Frame) -> None:
        """Keep only the newest frame of a state topic while the socket has bytes waiting;
        one task sends it once they are gone (frames in between are never sent)."""
        starting = stream.pending is None
        stream.pending = frame
        if starting:
            self._spawn(self._send_held_state(slug, stream))

    async def _send_held_state(self, slug: str, stream: Stream) -> None:
        while self.streams.get(slug) is stream and not self.closing:
            await asyncio.sleep(STATE_DRAIN_POLL)
            if not self._waiting():
                frame, stream.pending = stream.pending, None
                if frame is not None:
                    self._write(frame, True)
                return
            if self.transport.pending() > self.max_send_buffer:
                stream.pending = None
                self._drop_slow_reader()
                return
        stream.pending = None

    async def _catch_up(self, slug: str, stream: Stream) -> None:
        """Send ``stream.last+1 .. stream.target`` from the database, in order, paced by what
        the transport drains; a client that reads at any speed catches up however large the
        backlog, one that stops reading is dropped. Pages are read once for every connection
        of the process (``replay.Pages``)."""
        stream.busy = True
        try:
            if stream.topic_id is None and stream.owed:
                # A family topic subscribed before its first publish: its row is new.
                stream.topic_id = await topics.topic_id(slug)
                if stream.topic_id is None or self.streams.get(slug) is not stream:
                    return
            pages = replay.pages()
            while self.streams.get(slug) is stream and stream.owed:
                got = await pages.read(stream.topic_id, stream.fetch_after, stream.target)
                if self.streams.get(slug) is not stream or self.closing:
                    return
                if not await self._replay(slug, stream, got):
                    return
                stream.skip_to(got.upto)  # what the page lacks up to there was pruned
        except Exception:
            logger.warning("catch-up of %s on %s failed", slug, self.label, exc_info=True)
            # The next frame or head announcement for the topic tries again.
        finally:
            stream.busy = False

    async def _replay(self, slug: str, stream: Stream, got: replay.Slice) -> bool:
        """Write the slice's frames the stream lacks, in order: on a socket in runs of up to
        ``BURST_BYTES``, one write each (the page's bytes, shared by every connection),
        elsewhere one by one. False when the stream ended or the client was dropped."""
        page, i, n = got.page, got.lo, got.hi
        seqs, offsets = page.seqs, page.offsets
        while i < n:
            if self.transport.pending() > REPLAY_HIGH_WATER:
                if not await self._drained() or self.streams.get(slug) is not stream:
                    return False
            while i < n and seqs[i] <= stream.last:
                i += 1  # sent already
            if i == n:
                break
            if self._bursts:
                start = offsets[i]
                j = max(i + 1, bisect_right(offsets, start + BURST_BYTES, i + 1, n + 1) - 1)
                stream.skip_to(seqs[j - 1])
                self._write(Burst(page.wire[start : offsets[j]]), True)  # queued if need be
            else:
                j = i + 1
                stream.sent(seqs[i])
                if self._write is not None:
                    self._write(page.frames[i], True)
                else:
                    await self.send(protocol.MESSAGE, page.frames[i].text)
                    if self.streams.get(slug) is not stream or self.closing:
                        return False
            metrics.local.replayed += j - i
            i = j
        return True

    async def _drained(self) -> bool:
        """Wait until at most ``REPLAY_LOW_WATER`` bytes wait for the client. A client whose
        backlog does not shrink for ``SEND_STALL_TIMEOUT`` seconds does not read: it is
        dropped (False). True when drained (and still open)."""
        loop = asyncio.get_running_loop()
        stall = realtime_settings.SEND_STALL_TIMEOUT
        lowest, since = self.transport.pending(), loop.time()
        while not self.closing:
            pending = self.transport.pending()
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
                "dropping slow reader %s: %d bytes unsent", self.label, self.transport.pending()
            )
            self.transport.drop()
            self.dropped()

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        if self.tasks is None:
            self.tasks = set()
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
