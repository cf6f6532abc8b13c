"""The ASGI entry point: HTTP to Django, WebSockets to the chat consumer.

WebSocket handshakes pass, outside in: the Origin check, then the user from
the bearer token (programs) or else the session cookie (browsers), then the
URL router.
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")
# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.middleware import SocketAuthMiddleware  # noqa: E402
from chat.routing import websocket_urlpatterns  # noqa: E402
from chatsite import autobahn_debug, twisted_writes  # noqa: E402
from chatsite.security import AllowedHostsOriginValidator  # noqa: E402

# Daphne's WebSocket and TCP layers: less work per connection and per frame
# sent (inert under other servers, which make no Twisted connections).
autobahn_debug.install()
twisted_writes.install()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            SocketAuthMiddleware(URLRouter(websocket_urlpatterns))
        ),
    }
)
# What startup built (Django, the URL conf, the models, every imported module:
# hundreds of thousands of objects) lives as long as the process. Out of the
# collector's sight, full collections walk only what serving allocates: on
# the benchmark they went from 90-130 ms pauses of the whole process to
# 30-45 ms, and a busy room's p99 latency from 190-250 ms to 63 ms
# (docs/performance.md).
gc.freeze()
