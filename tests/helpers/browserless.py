"""A signed-in HTTP client for real servers (urllib + a cookie jar): log in through Django's
login form like a browser, log out, and open sockets with the same session."""

from __future__ import annotations

import http.cookiejar
import re
import urllib.parse
import urllib.request
from typing import Any

from websockets.asyncio.client import connect


class Browserless:
    def __init__(self, base_url: str):
        self.base = base_url
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str | None:
        return next((c.value for c in self.jar if c.name == name), None)

    def _post_form(self, path: str, fields: dict[str, str]) -> Any:
        page = self.opener.open(self.base + path, timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        body = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": token.group(1)}).encode()
        request = urllib.request.Request(
            self.base + path, data=body, headers={"Referer": self.base}
        )
        return self.opener.open(request, timeout=10)

    def login(self, username: str, password: str) -> str:
        """Sign in; return the session key."""
        self._post_form("/accounts/login/", {"username": username, "password": password})
        key = self.cookie("sessionid")
        assert key, "not signed in"
        return key

    def logout(self) -> None:
        page_with_token = "/accounts/login/"
        page = self.opener.open(self.base + page_with_token, timeout=10).read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        body = urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode()
        request = urllib.request.Request(
            self.base + "/accounts/logout/", data=body, headers={"Referer": self.base}
        )
        self.opener.open(request, timeout=10)

    def socket(self, ws_url: str, session_key: str | None = None):
        """A websockets connection carrying the session cookie and the page's Origin (the
        socket's own host and port, as for a page served by that process)."""
        key = session_key or self.cookie("sessionid")
        return connect(
            ws_url,
            subprotocols=["realtime.v1"],
            origin=ws_url.replace("ws", "http", 1).split("/ws/")[0],
            additional_headers={"Cookie": f"sessionid={key}"},
        )
