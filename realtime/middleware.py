"""``DatabaseBusy``: a request that finds no free database connection gets 503, not 500.

With PostgreSQL each process holds a bounded pool (settings: ``DB_POOL_*``). A request
takes its connection here, before the session or the view read anything; when none frees up
within ``DB_POOL_TIMEOUT`` it is answered ``503 Service Unavailable`` with ``Retry-After``
(JSON for the API, text otherwise) instead of queueing without bound or failing halfway.
Without a pool (SQLite) this costs nothing: the connection opens as it would anyway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger("realtime.middleware")

RETRY_AFTER = 1  # seconds


def pool_exhausted(exc: BaseException) -> bool:
    """Whether ``exc`` (or what Django wrapped) is psycopg's pool timing out."""
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:
        return False
    return isinstance(exc, PoolTimeout) or isinstance(exc.__cause__, PoolTimeout)


class DatabaseBusy:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if connection.vendor == "postgresql" and connection.settings_dict["OPTIONS"].get("pool"):
            try:
                connection.ensure_connection()
            except OperationalError as exc:
                if not pool_exhausted(exc):
                    raise
                return busy(request)
        return self.get_response(request)


def busy(request: HttpRequest) -> HttpResponse:
    logger.warning("no free database connection for %s %s: 503", request.method, request.path)
    message = "The server is busy: no database connection was free. Retry shortly."
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse(
            {"error": "server_error", "message": message}, status=503
        )
    else:
        response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER)
    return response
