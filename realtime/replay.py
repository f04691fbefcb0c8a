"""Replay pages shared by every connection of a process.

A crowd that comes back after a network blip resumes from nearly the same seq: read page by
page for each client, 1,000 clients 750 messages behind cost 2,000 database reads and 750,000
frames encoded one by one, all through the one database thread (78 s until the median client
had caught up; bench/catchup.py). Here a topic's messages are read in pages aligned on
``PAGE`` (page k holds seqs ``k*PAGE+1 .. (k+1)*PAGE``), each page is read from the database
once, while other readers of the same page wait for it (single flight), and kept for
``KEEP`` seconds: its frames are encoded once and their wire bytes shared by every client.

Correct because stored messages never change (the admin cannot edit or delete one; only
retention removes the oldest) and seqs commit in order (the topic's row is locked while a seq is
allocated), so a read sees a prefix of the page: every seq up to the highest it returned, and
up to the head the reader knew of (committed before it asked), exists unless it was pruned.
That bound is the page's ``covered``; a reader that needs more reads again.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from bisect import bisect_right
from collections import OrderedDict
from dataclasses import dataclass

from channels.db import database_sync_to_async

from realtime import metrics
from realtime.wire import Frame, text_frame

PAGE = 500  # seqs per page
KEEP = 30.0  # seconds a page read from the database is served from memory
MAX_BYTES = 32 * 1024 * 1024  # bytes of frames kept in all, the least recently used dropped


@dataclass(slots=True, eq=False)
class Page:
    """The stored frames of one page, in order. Only ever grows (a reader that needs seqs
    beyond ``covered`` extends it), so a ``Slice`` of it stays valid."""

    seqs: list[int]
    frames: list[Frame]  # each frame's text, for transports that write them one by one
    wire: bytes  # every frame's socket bytes, joined: a replay writes runs of them at once
    offsets: list[int]  # frame k is wire[offsets[k]:offsets[k + 1]]
    covered: int  # every seq of the page up to this one is in ``seqs`` or does not exist
    read_at: float

    @property
    def size(self) -> int:
        return 2 * len(self.wire) + 100 * len(self.seqs)


@dataclass(slots=True)
class Slice:
    """What a reader gets: frames ``lo .. hi-1`` of ``page``, every stored seq with
    ``after < seq <= upto``."""

    page: Page
    lo: int
    hi: int
    upto: int

    @property
    def seqs(self) -> list[int]:
        return self.page.seqs[self.lo : self.hi]

    @property
    def first(self) -> int | None:
        return self.page.seqs[self.lo] if self.lo < self.hi else None


@database_sync_to_async
def _rows(topic_id: int, after: int, end: int) -> tuple[list[int], list[bytes]]:
    from realtime.fanout import stored_frame
    from realtime.models import Message, Topic

    slug = Topic.objects.filter(pk=topic_id).values_list("slug", flat=True).first()
    seqs, payloads = [], []
    for seq, created_at, data, html in Message.objects.page(topic_id, after, end, PAGE):
        seqs.append(seq)
        payloads.append(stored_frame(slug, seq, created_at, data, html).encode())
    return seqs, payloads


async def _read(page: Page | None, topic_id: int, start: int, end: int, known: int) -> Page:
    """``page`` extended with the rows after its ``covered`` (a new page from ``start``)."""
    after = start if page is None else page.covered
    seqs, payloads = await _rows(topic_id, after, end)
    covered = min(end, max(known, seqs[-1] if seqs else 0, after))
    wires = [text_frame(p) for p in payloads]
    if page is None:
        page = Page([], [], b"", [0], covered, time.monotonic())
    end_offset = page.offsets[-1]
    for w in wires:
        end_offset += len(w)
        page.offsets.append(end_offset)
    page.seqs.extend(seqs)
    page.frames.extend(Frame(p) for p in payloads)
    page.wire += b"".join(wires)
    page.covered = covered
    return page


class Pages:
    """The replay pages of one event loop (one per process under daphne)."""

    def __init__(self, keep: float = KEEP, max_bytes: int = MAX_BYTES):
        self.keep, self.max_bytes = keep, max_bytes
        self.pages: OrderedDict[tuple[int, int], Page] = OrderedDict()
        self.reading: dict[tuple[int, int], asyncio.Event] = {}
        self.bytes = 0
        self.reads = 0  # database reads (for tests and the benchmark's notes)

    async def read(self, topic_id: int, after: int, upto: int) -> Slice:
        """The stored frames of ``topic_id`` with ``after < seq``, up to ``upto`` (a seq
        known to be committed) or to the end of the page holding ``after + 1``, whichever
        comes first."""
        index = after // PAGE
        start, end = index * PAGE, (index + 1) * PAGE
        want = min(upto, end)
        key = (topic_id, index)
        while True:
            page = self._fresh(key)
            if page is not None and page.covered >= want:
                break
            reading = self.reading.get(key)
            if reading is not None:  # another reader is at it: use what it reads
                await reading.wait()
                continue
            self.reading[key] = done = asyncio.Event()
            try:
                self.reads += 1
                metrics.REPLAY_READS.inc()
                size = page.size if page is not None else 0
                page = await _read(page, topic_id, start, end, upto)
                self._keep(key, page, page.size - size)
            finally:
                del self.reading[key]
                done.set()
            break
        seqs = page.seqs
        return Slice(page, bisect_right(seqs, after), bisect_right(seqs, want), want)

    def _fresh(self, key: tuple[int, int]) -> Page | None:
        page = self.pages.get(key)
        if page is None:
            return None
        if time.monotonic() - page.read_at > self.keep:
            self._forget(key)
            return None
        self.pages.move_to_end(key)
        return page

    def _keep(self, key: tuple[int, int], page: Page, grown: int) -> None:
        if self.pages.get(key) is page:
            self.bytes += grown
        else:  # new, or dropped while it was extended
            self._forget(key)
            self.pages[key] = page
            self.bytes += page.size
        while self.bytes > self.max_bytes and len(self.pages) > 1:
            self._forget(next(iter(self.pages)))

    def _forget(self, key: tuple[int, int]) -> None:
        page = self.pages.pop(key, None)
        if page is not None:
            self.bytes -= page.size


_pages: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pages] = weakref.WeakKeyDictionary()


def pages() -> Pages:
    """This event loop's replay pages."""
    loop = asyncio.get_running_loop()
    found = _pages.get(loop)
    if found is None:
        found = _pages[loop] = Pages()
    return found
