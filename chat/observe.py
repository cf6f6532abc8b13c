"""What a socket tells operators: ChatConsumer calls one hook per event; each
updates chat.metrics and, where the event is worth a line, logs it.

Log lines carry the socket's connection id (chatsite.logs). The fan-out
reports a message's deliveries once per process (messages_delivered), not
once per member: on a busy room that is per-delivery work saved.
"""

import logging
import time

from chat.metrics import (
    ERRORS,
    FANOUT_LATENCY,
    MESSAGES_DELIVERED,
    ROOM_SUBSCRIPTIONS,
    SOCKETS_OPEN,
)
from chatsite import logs

logger = logging.getLogger(__name__)


def socket_connecting() -> None:
    """Give the socket its connection id, for everything logged on its behalf.

    Daphne runs each connection's consumer in a task of its own, and every
    handler of the consumer runs in that task, so the id lasts for the
    socket's life and no other socket sees it. Services the consumer calls
    through database_sync_to_async run in a copy of its context: theirs too.
    """
    logs.connection_id.set(logs.new_id())


def socket_opened(*, user_id: int) -> float:
    """The handshake was accepted. Returns the time to hand to socket_closed."""
    SOCKETS_OPEN.inc()
    logger.info("socket open", extra={"user_id": user_id})
    return time.monotonic()


def socket_closed(*, user_id: int, code: int, opened_at: float) -> None:
    SOCKETS_OPEN.dec()
    duration_ms = round((time.monotonic() - opened_at) * 1000)
    logger.info(
        "socket closed",
        extra={"user_id": user_id, "close_code": code, "duration_ms": duration_ms},
    )


def room_joined() -> None:
    ROOM_SUBSCRIPTIONS.inc()


def room_left() -> None:
    ROOM_SUBSCRIPTIONS.dec()


def error_sent(code: str) -> None:
    ERRORS.labels(code, "socket").inc()
    logger.info("error frame %s", code, extra={"code": code})


def messages_delivered(event: dict, sockets: int) -> None:
    """A room message event (chat.events) was written to `sockets` sockets of this process."""
    MESSAGES_DELIVERED.inc(sockets)
    sent_at = event.get("t")
    # No time from a process older than the field (during a rolling upgrade).
    # Hosts' clocks may differ by a little: never observe below zero.
    if sent_at is not None:
        FANOUT_LATENCY.observe(max(time.time() - sent_at, 0.0))
