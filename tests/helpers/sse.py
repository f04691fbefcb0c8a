"""A Server-Sent Events client for tests: one GET, events read as they arrive."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit


class EventSourceClient:
    def __init__(self, url: str, headers: dict[str, str] | None = None, timeout: float = 10):
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.connection.request("GET", path, headers=headers or {})
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}
        self.retry: int | None = None
        self.last_id: str | None = None

    def json_body(self) -> dict:
        return json.loads(self.response.read())

    def next(self) -> dict:
        """The next event: {"event", "data" (parsed JSON), "id"}; comments and bare ``retry``
        blocks are skipped."""
        fields: dict[str, str] = {}
        while True:
            line = self.response.readline()
            if not line:
                raise ConnectionError("the stream ended")
            line = line.decode().rstrip("\n")
            if not line:
                if "data" in fields:
                    if "id" in fields:
                        self.last_id = fields["id"]
                    return {
                        "event": fields.get("event", "message"),
                        "data": json.loads(fields["data"]),
                        "id": fields.get("id"),
                    }
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "retry":
                self.retry = int(value)
            else:
                fields[name] = value

    def messages(self, count: int) -> list[dict]:
        found = []
        while len(found) < count:
            event = self.next()
            if event["event"] == "message":
                found.append(event)
        return found

    def close(self) -> None:
        self.connection.close()
