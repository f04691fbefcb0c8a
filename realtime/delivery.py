"""Per-subscription delivery: what a connection has sent of a topic and what it still owes.

Pure (no I/O, no Django): the consumer tells a ``Stream`` what happened and does what it answers.

``last`` is the last seq sent on the connection, ``target`` the highest seq known to exist. A
live frame at or below ``last`` is a duplicate and dropped; the frame right after ``last`` is
sent at once; anything further means frames were lost, and ``last+1 .. target`` is fetched from
the database. While a fetch runs (``busy``) live frames only raise ``target``, so frames leave in
order from one place at a time. A new stream starts busy: it reads the database (backlog,
``since``) before it sends live frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# What to do with a live frame. Plain ints, not an Enum: this runs once per delivery, and an
# Enum member lookup costs about 170 ns on CPython 3.11 (a third of the Python-side cost of a
# delivery; see bench/RESULTS.md).
SEND = 0  # the next one: write it now
DROP = 1  # already sent (a duplicate)
WAIT = 2  # a fetch is running; it will send this one
FETCH = 3  # frames were lost: start a fetch from the database


@dataclass(slots=True)
class Stream:
    """One subscription's delivery position."""

    topic_id: int | None = 0  # None: a family topic without a row yet
    last: int = 0
    target: int = 0
    busy: bool = True
    # A ``state`` topic: only the latest message matters. A newer frame is sent over a gap
    # instead of fetching what lies between; a fetch reads only the latest row.
    state: bool = False
    # A state frame held back while the socket has bytes waiting (sent when they are gone,
    # unless a newer one replaces it first): the consumer's, opaque here.
    pending: Any = None

    def offer(self, seq: int) -> int:
        """A live frame ``seq`` arrived from the hub."""
        if seq <= self.last:
            return DROP
        if seq > self.target:
            self.target = seq
        if self.busy:
            return WAIT
        if seq == self.last + 1 or self.state:
            self.last = seq
            return SEND
        self.busy = True
        return FETCH

    @property
    def fetch_after(self) -> int:
        """A fetch reads the rows after this seq, up to ``target``: every missing one, or only
        the latest for a state topic."""
        if self.state:
            return max(self.last, self.target - 1)
        return self.last

    def learn(self, seq: int) -> bool:
        """``seq`` exists (a heads announcement, a resync): True when a fetch must start."""
        if seq > self.target:
            self.target = seq
        if self.last < self.target and not self.busy:
            self.busy = True
            return True
        return False

    @property
    def owed(self) -> bool:
        """Whether messages up to ``target`` remain to be sent."""
        return self.last < self.target

    def sent(self, seq: int) -> bool:
        """A fetched ``seq`` is about to be written: False when it was already sent."""
        if seq <= self.last:
            return False
        self.last = seq
        return True

    def skip_to(self, seq: int) -> None:
        """Nothing up to ``seq`` is left to send (the rest was pruned, or was sent)."""
        if seq > self.last:
            self.last = seq

    def start(self, since: int | None, latest: int, backlog: int) -> bool | None:
        """Place a new subscription; return ``recovered`` (None: it depends on whether
        ``since + 1`` is still retained, which only the database knows).

        Without ``since``, or with ``since`` beyond ``latest`` (a client from another
        database), the last ``backlog`` messages are sent and ``recovered`` is False.
        A state topic sends only its latest message (whatever ``backlog`` says), and a
        ``since`` at or below ``latest`` is recovered: the latest state is all there is to
        recover.
        """
        self.target = max(self.target, latest)
        if self.state:
            if since is None or since > latest:
                self.last = max(0, latest - 1)
                return False
            self.last = max(since, latest - 1)
            return True
        if since is None or since > latest:
            self.last = max(0, latest - backlog)
            return False
        self.last = since
        return True if since == latest else None
