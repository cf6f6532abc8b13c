"""The chat's Prometheus metrics, one set per server process.

Each Daphne process counts what passes through it and answers for itself at
/metrics (chatsite.metrics); Prometheus scrapes every process and sums them.
Names and meanings are listed in docs/operations.md, "Metrics".

Nothing here takes a label on the hot path: the per-delivery metrics have no
labels, and the error counter's children are looked up only when an error is
answered.
"""

from prometheus_client import Counter, Gauge, Histogram

SOCKETS_OPEN = Gauge(
    "chat_sockets_open",
    "WebSocket connections accepted by this process and not yet closed.",
)
ROOM_SUBSCRIPTIONS = Gauge(
    "chat_room_subscriptions",
    "Rooms joined, summed over this process's open sockets (a socket in 3 rooms counts 3).",
)
MESSAGES_STORED = Counter(
    "chat_messages_stored",
    "Messages committed to the database (socket, API and admin posts; not imports).",
)
MESSAGES_DELIVERED = Counter(
    "chat_messages_delivered",
    "Room messages written to a socket by the room fan-out, the sender's own "
    "copy (its acknowledgement) included. Catch-up pages are not counted.",
)
ERRORS = Counter(
    "chat_errors",
    "Errors answered to clients, by their `code` and by `source`: `socket` "
    "(an error frame) or `api` (an error body).",
    ["code", "source"],
)
FANOUT_LATENCY = Histogram(
    "chat_fanout_latency_seconds",
    "From a room message's broadcast to its frame written to the last of a "
    "process's members (one observation per message per process).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
ROUND_SECONDS = Histogram(
    "chat_message_round_seconds",
    "A round of posts stored on PostgreSQL: its one statement on the event "
    "loop's connection, sent to rows read, the commit's WAL flush included. "
    "Nothing reaches a screen before it ends.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)
