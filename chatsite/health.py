"""Health endpoints for load balancers and orchestrators.

`/healthz` answers while the process can serve a request at all (liveness: restart
it when this fails). `/readyz` also proves the process can reach what every chat
needs, the database and the channel layer (readiness: send it no traffic while
this fails). Both are plain views outside the API: no authentication, no throttle.
"""

import asyncio
import logging
import uuid
from collections.abc import Callable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

logger = logging.getLogger(__name__)

# A probe that hangs is worse than one that fails: orchestrators time out
# around a few seconds, and a hung Redis must read as "channel_layer" down.
CHANNEL_LAYER_TIMEOUT = 2.0


def database_check() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _channel_layer_round_trip() -> None:
    layer = get_channel_layer()
    # A fresh name for each probe, so that concurrent probes (two balancers,
    # several processes) never take each other's message.
    channel = f"health.{uuid.uuid4().hex}"
    token = uuid.uuid4().hex
    await layer.send(channel, {"type": "health.ping", "token": token})
    message = await layer.receive(channel)
    if message.get("token") != token:
        raise LookupError("the channel layer returned another message")


def channel_layer_check() -> None:
    async def probe() -> None:
        await asyncio.wait_for(_channel_layer_round_trip(), CHANNEL_LAYER_TIMEOUT)

    async_to_sync(probe)()


READINESS_CHECKS: dict[str, Callable[[], None]] = {
    "database": database_check,
    "channel_layer": channel_layer_check,
}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """200 when every check passes, else 503 naming each failed check's error class."""
    checks = {}
    for name, check in READINESS_CHECKS.items():
        try:
            check()
        except Exception as exc:
            # Any failure means "not ready"; the class name tells an operator
            # which kind (OperationalError, ConnectionError, TimeoutError)
            # without putting connection strings in a public answer.
            logger.warning("readiness check %s failed", name, exc_info=True)
            checks[name] = f"error: {type(exc).__name__}"
        else:
            checks[name] = "ok"
    ready = all(result == "ok" for result in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "error", "checks": checks}, status=200 if ready else 503
    )
