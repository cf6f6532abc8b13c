"""Twisted's TCP transport (Daphne's): a connection's writes of one turn of
the event loop, sent together at its end.

Twisted buffers every write and sends it on the reactor's next turn: each
frame costs registering the socket for writing (an epoll_ctl), a callback
when it is writable, the send, and unregistering it (another epoll_ctl). A
message to a room goes out once per member: in 1 room x 100 members,
registering and unregistering were 30% of Daphne's busy samples.

Here the writes to a plain TCP connection (no TLS) with nothing buffered
wait for the end of the loop's turn, and go out in one send: when the
fan-out hands a burst of messages to a room's sockets in one turn, each
socket gets one send, not one per message (docs/performance.md). What the
socket does not take goes to Twisted's buffer as before, so bytes keep their
order; so do writes while anything is buffered, and everything when no
asyncio loop runs. Whatever would change the connection's course (a
writeSequence, closing it) sends what waits first; aborting drops it, as it
drops Twisted's buffer. A send that fails leaves the data to Twisted, whose
next turn finds the lost connection as it always did.

Installed by chatsite.asgi whenever Twisted is loaded. Daphne serves through
it; under another server Twisted is only imported (the `daphne` app, for
runserver) and carries no connection, so the patched methods are never called.
"""

import asyncio
import logging
import sys

logger = logging.getLogger(__name__)

# The methods patched, with what each does first to the writes of the turn.
FLUSHING = ("writeSequence", "loseConnection", "loseWriteConnection")
DROPPING = ("abortConnection", "connectionLost")


class Turn:
    """The writes of this turn of the loop, by connection, and their send."""

    def __init__(self, send_now) -> None:
        self.send_now = send_now
        self.waiting: dict = {}  # connection -> [bytes], in write order
        self.scheduled: asyncio.AbstractEventLoop | None = None  # the loop send_all waits on

    def add(self, connection, data: bytes) -> bool:
        """`data` for `connection` at the end of this turn; False if no event
        loop runs to end it (the caller sends now)."""
        loop = self.scheduled
        # Once per turn, and again if the loop it was asked of no longer runs
        # (tests run a loop each, and one may end before its turn does). Not
        # per write: on Python 3.11 asking asyncio for the running loop is a
        # getpid() system call (its check for a forked process), and the
        # fan-out writes once per member of a room (docs/performance.md).
        if loop is None or not loop.is_running():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False
            self.scheduled = loop
            loop.call_soon(self.send_all)
        chunks = self.waiting.get(connection)
        if chunks is None:
            self.waiting[connection] = [data]
        else:
            chunks.append(data)
        return True

    def send_all(self) -> None:
        self.scheduled = None
        waiting, self.waiting = self.waiting, {}
        for connection, chunks in waiting.items():
            try:
                self.send_now(connection, chunks[0] if len(chunks) == 1 else b"".join(chunks))
            except Exception:
                # One connection's failure must not cost the others their frames.
                logger.exception("could not send to %s", connection)

    def send(self, connection) -> None:
        chunks = self.waiting.pop(connection, None)
        if chunks:
            self.send_now(connection, b"".join(chunks))

    def drop(self, connection) -> None:
        self.waiting.pop(connection, None)


def install() -> bool:
    """Send each turn's writes together from Twisted's TCP server connections,
    if Twisted is loaded."""
    tcp = sys.modules.get("twisted.internet.tcp")
    if tcp is None:
        return False
    server = tcp.Server
    originals = getattr(server, "turn_originals", None)
    if originals is None:
        originals = {name: getattr(server, name) for name in ("write", *FLUSHING, *DROPPING)}
    buffered_write = originals["write"]

    def plain(connection) -> bool:
        """A plain TCP connection, open, with nothing in Twisted's buffer."""
        return (
            type(connection) is server  # not unix.Server: it may pass descriptors along
            and not connection.TLS
            and connection.connected
            and not connection.disconnecting
            and not connection._writeDisconnecting
            and not connection._writeDisconnected
            and not connection.dataBuffer
            and not connection._tempDataBuffer
        )

    def send_now(connection, data: bytes) -> None:
        if plain(connection):
            sent = connection.writeSomeData(data)  # bytes sent, or the lost connection
            if sent == len(data):
                return
            if isinstance(sent, int):
                data = data[sent:]
        buffered_write(connection, data)

    turn = Turn(send_now)

    def write(self, data: bytes) -> None:
        waits = self in turn.waiting
        if type(data) is bytes and data and (waits or plain(self)):
            if not turn.add(self, data):  # no loop to end a turn: now, after what waits
                turn.send(self)
                send_now(self, data)
            return
        if waits:
            turn.send(self)  # then Twisted's own (which refuses what is not bytes)
        buffered_write(self, data)

    def first(name: str, then):
        original = originals[name]

        def patched(self, *args, **kwargs):
            then(self)
            return original(self, *args, **kwargs)

        patched.__name__ = name
        return patched

    server.write = write
    for name in FLUSHING:
        setattr(server, name, first(name, turn.send))
    for name in DROPPING:
        setattr(server, name, first(name, turn.drop))
    server.turn_originals = originals
    server.turn = turn
    return True
