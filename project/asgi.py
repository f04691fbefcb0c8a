"""ASGI entry point: HTTP goes to Django, WebSockets under /ws/ to the realtime consumer."""

import os
import sys

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from realtime.conf import refuse_insecure_secret_key  # noqa: E402
from realtime.engine import install_shutdown_close  # noqa: E402
from realtime.routing import websocket_application  # noqa: E402
from realtime.server import tune_gc  # noqa: E402

# Refuse to serve with DEBUG off and the development key. Test runs (pytest-django turns
# DEBUG off) may import the application in-process; they serve nothing.
if "pytest" not in sys.modules:
    refuse_insecure_secret_key()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": websocket_application(),
    }
)
tune_gc()
install_shutdown_close()  # under daphne: close sockets with 1001 when the server stops
