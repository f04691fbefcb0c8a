"""Rate limits: a token bucket (``rate`` tokens a second, up to ``burst`` saved), and the
limits of one WebSocket connection."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from realtime import protocol
from realtime.protocol import ProtocolError


class TokenBucket:
    """Allows ``burst`` events at once and ``rate`` a second after that."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "clock")

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError(f"TokenBucket needs rate > 0 and burst >= 1, not {rate!r}, {burst!r}.")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.stamp = clock()

    def take(self) -> bool:
        """Take one token; False when the bucket is empty."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class FrameTooBig(Exception):
    """A client frame over ``MAX_FRAME_BYTES``: the connection closes with 1009."""


class ConnectionLimits:
    """One connection's limits, read from ``REALTIME`` once at connect; the ``check_*``
    methods raise the ``ProtocolError`` the client is told. Held by every connection for its
    life, so in slots; the publish and whisper buckets are made at the first publish or
    whisper (most connections never send one; a bucket made then is as full as one made at
    connect would be)."""

    __slots__ = (
        "frame_bytes",
        "send_buffer",
        "subscriptions",
        "publish_rate",
        "whisper_rate",
        "publish_burst",
        "whisper_burst",
        "frames",
        "abuse",
        "_publishes",
        "_whispers",
    )

    def __init__(self, conf: Any):
        self.frame_bytes = conf.MAX_FRAME_BYTES
        self.send_buffer = conf.MAX_SEND_BUFFER
        self.subscriptions = conf.MAX_SUBSCRIPTIONS
        self.publish_rate = conf.PUBLISH_RATE_PER_S
        self.whisper_rate = conf.WHISPER_RATE_PER_S
        self.publish_burst = conf.PUBLISH_BURST
        self.whisper_burst = conf.WHISPER_BURST
        self.frames = TokenBucket(conf.FRAME_RATE_PER_S, conf.FRAME_BURST)
        # Refused frames: ABUSE_BUDGET at once, one more a second; then 1008.
        self.abuse = TokenBucket(1.0, max(1, conf.ABUSE_BUDGET))
        self._publishes: TokenBucket | None = None
        self._whispers: TokenBucket | None = None

    @property
    def publishes(self) -> TokenBucket:
        if self._publishes is None:
            self._publishes = TokenBucket(self.publish_rate, self.publish_burst)
        return self._publishes

    @property
    def whispers(self) -> TokenBucket:
        if self._whispers is None:
            self._whispers = TokenBucket(self.whisper_rate, self.whisper_burst)
        return self._whispers

    def advertised(self) -> dict[str, Any]:
        """The ``limits`` of the ``welcome`` frame."""
        return {
            "max_frame_bytes": self.frame_bytes,
            "max_subscriptions": self.subscriptions,
            "publish_rate_per_s": self.publish_rate,
            "whisper_rate_per_s": self.whisper_rate,
        }

    def vet(self, text: str | None, data: bytes | None = None) -> protocol.ClientFrame:
        """A client frame, size-checked, paid for and parsed; raises ``FrameTooBig`` or the
        ``ProtocolError`` the client is told."""
        if text is None:
            if data is not None and len(data) > self.frame_bytes:
                raise FrameTooBig("binary frame over the limit")
            raise ProtocolError(protocol.BINARY_UNSUPPORTED, "Send JSON text, not binary frames.")
        if self.too_big(text):
            raise FrameTooBig("frame over the limit")
        self.check_frame(text)
        return protocol.parse(text)

    def too_big(self, text: str) -> bool:
        """Whether a text frame is over ``frame_bytes`` in UTF-8 (a str has at most 4 bytes a
        character: only encode when it could be too big)."""
        limit = self.frame_bytes
        return len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit

    def check_frame(self, text: str) -> None:
        """Spend a frame token for ``text`` (read for its ``id`` only when refused)."""
        if not self.frames.take():
            message = f"A connection may send {self.frames.rate:g} frames a second."
            raise ProtocolError(protocol.RATE_LIMITED, message, id=protocol.frame_id(text))

    def check_publish(self, frame: protocol.ClientFrame) -> None:
        if not self.publishes.take():
            message = f"Publishing is limited to {self.publishes.rate:g} messages a second."
            raise ProtocolError(protocol.RATE_LIMITED, message, id=frame.id, topic=frame.topic)

    def check_whisper(self, frame: protocol.ClientFrame) -> None:
        if not self.whispers.take():
            message = f"Whispers are limited to {self.whispers.rate:g} a second."
            raise ProtocolError(protocol.RATE_LIMITED, message, id=frame.id, topic=frame.topic)

    def check_subscriptions(self, held: int, frame: protocol.ClientFrame) -> None:
        if held >= self.subscriptions:
            message = (
                f"A connection may hold {self.subscriptions} subscriptions; unsubscribe first."
            )
            code = protocol.TOO_MANY_SUBSCRIPTIONS
            raise ProtocolError(code, message, id=frame.id, topic=frame.topic)
