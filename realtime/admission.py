"""Admission: how many connections each client address holds in this process, and whether
one more may open (``REALTIME["MAX_CONNECTIONS_PER_ADDRESS"]``, 0: no limit). One count per
event loop, shared by every door (sockets and event streams)."""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter

from realtime.conf import realtime_settings
from realtime.origins import Refusal


class Admission:
    """Connections per client address."""

    def __init__(self) -> None:
        self.per_address: Counter[str] = Counter()

    def admit(self, address: str, limit: int) -> bool:
        """Count a new connection from ``address``; False (not counted) beyond ``limit``."""
        if limit and self.per_address[address] >= limit:
            return False
        self.per_address[address] += 1
        return True

    def refusal(self, address: str) -> Refusal | None:
        """Admit a connection from ``address`` under ``MAX_CONNECTIONS_PER_ADDRESS`` (None),
        or the ``Refusal`` that says why not."""
        limit = realtime_settings.MAX_CONNECTIONS_PER_ADDRESS
        if self.admit(address, limit):
            return None
        return Refusal("address_limit", f"already {limit} connection(s) from its address")

    def leave(self, address: str) -> None:
        """A connection counted by ``admit`` ended."""
        self.per_address[address] -= 1
        if self.per_address[address] <= 0:
            del self.per_address[address]


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Admission] = (
    weakref.WeakKeyDictionary()
)


def admission() -> Admission:
    """The running event loop's admission count."""
    loop = asyncio.get_running_loop()
    found = _per_loop.get(loop)
    if found is None:
        found = _per_loop[loop] = Admission()
    return found
