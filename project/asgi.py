"""ASGI entry point: HTTP goes to Django, WebSockets under /ws/ to the realtime consumer."""

import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from realtime.conf import realtime_settings, refuse_insecure_secret_key  # noqa: E402
from realtime.ops import OpsEndpoints  # noqa: E402
from realtime.routing import IgnoreRootPathHeader, websocket_application  # noqa: E402
from realtime.server import (  # noqa: E402
    install_shutdown_close,
    limit_http_request_time,
    quiet_probe_access_log,
    tune_gc,
)
from realtime.sse import EventsEndpoint  # noqa: E402

# Refuse to serve with DEBUG off and the development key. Test runs (pytest-django turns
# DEBUG off) may import the application in-process; they serve nothing.
if "pytest" not in sys.modules:
    refuse_insecure_secret_key()

application = IgnoreRootPathHeader(
    ProtocolTypeRouter(
        {
            # /healthz, /readyz, /metrics before Django (no ALLOWED_HOSTS, no middleware);
            # /events/ (Server-Sent Events) with the session's user.
            "http": OpsEndpoints(EventsEndpoint(django_asgi_app)),
            "websocket": websocket_application(),
        }
    )
)
tune_gc()
install_shutdown_close()  # under daphne: close sockets with 1001 when the server stops
limit_http_request_time(realtime_settings.HTTP_REQUEST_TIMEOUT)
quiet_probe_access_log()  # with ACCESS_LOG=1: no line per probe
