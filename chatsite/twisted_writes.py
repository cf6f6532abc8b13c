"""Twisted's TCP transport (Daphne's) sending at once when nothing waits.

Twisted buffers every write and sends it on the reactor's next turn: each
frame costs registering the socket for writing (an epoll_ctl), a callback
when it is writable, the send, and unregistering it (another epoll_ctl).
asyncio's transports (uvicorn's) send at once and buffer only what the
socket does not take. A message to a room goes out once per member: in
1 room x 100 members, registering and unregistering were 30% of Daphne's
busy samples (docs/performance.md).

Here a write to a plain TCP connection (no TLS) with nothing buffered is
sent at once. What the socket does not take, and every write while anything
is buffered, goes to Twisted's buffer as before, so bytes keep their order.
A send that fails leaves the data to Twisted, whose next turn finds the
lost connection as it always did.

Installed by chatsite.asgi whenever Twisted is loaded. Daphne serves through
it; under another server Twisted is only imported (the `daphne` app, for
runserver) and carries no connection, so the patched method is never called.
"""

import sys


def install() -> bool:
    """Send at once from Twisted's TCP server connections, if Twisted is loaded."""
    tcp = sys.modules.get("twisted.internet.tcp")
    if tcp is None:
        return False
    buffered_write = getattr(tcp.Server.write, "buffered_write", tcp.Server.write)

    def write(self, data: bytes) -> None:
        if (
            type(self) is tcp.Server  # not unix.Server: it may pass descriptors along
            and type(data) is bytes
            and data
            and not self.TLS
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnecting
            and not self._writeDisconnected
            and not self.dataBuffer
            and not self._tempDataBuffer
        ):
            sent = self.writeSomeData(data)  # bytes sent, or the lost connection
            if sent == len(data):
                return
            if isinstance(sent, int):
                data = data[sent:]
        buffered_write(self, data)

    write.buffered_write = buffered_write
    tcp.Server.write = write
    return True
