"""Daphne's TCP connections send a turn's writes together (chatsite.twisted_writes).

A Twisted server connection over a real loopback socket, with a reactor that
only records what the transport asks of it: the peer reads what was sent.
"""

import asyncio
import select
import socket
import struct
import time
from types import SimpleNamespace

import pytest
from twisted.internet import error, tcp
from twisted.internet.protocol import Protocol
from twisted.python import failure

from chatsite import twisted_writes


class RecordingReactor:
    def __init__(self) -> None:
        self.writers: set = set()
        self.registrations = 0
        self.later: list = []

    def addWriter(self, writer) -> None:  # noqa: N802 - Twisted's interface
        self.writers.add(writer)
        self.registrations += 1

    def removeWriter(self, writer) -> None:  # noqa: N802
        self.writers.discard(writer)

    def addReader(self, reader) -> None:  # noqa: N802
        pass

    def removeReader(self, reader) -> None:  # noqa: N802
        pass

    def callLater(self, delay, function, *args):  # noqa: N802
        self.later.append((function, args))


PATCHED = ("write", *twisted_writes.FLUSHING, *twisted_writes.DROPPING)


@pytest.fixture
def installed(monkeypatch):
    """Installed afresh on Twisted's own methods (chatsite.asgi may have installed it)."""
    originals = getattr(tcp.Server, "turn_originals", {})
    for name in PATCHED:
        monkeypatch.setattr(tcp.Server, name, originals.get(name, getattr(tcp.Server, name)))
    monkeypatch.setattr(tcp.Server, "turn", None, raising=False)
    monkeypatch.delattr(tcp.Server, "turn_originals", raising=False)
    assert twisted_writes.install()


@pytest.fixture
def connection():
    """(the server side's Twisted transport, its reactor, the peer's socket)."""
    listener = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(listener.getsockname())
    accepted, address = listener.accept()
    listener.close()
    reactor = RecordingReactor()
    transport = tcp.Server(
        accepted,
        Protocol(),
        address,
        SimpleNamespace(_realPortNumber=address[1]),
        0,
        reactor,
    )
    peer.settimeout(5)
    yield transport, reactor, peer
    peer.close()
    accepted.close()


def read(peer: socket.socket, length: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = peer.recv(length - len(data))
        assert chunk, "the connection closed"
        data += chunk
    return data


def test_a_write_with_nothing_buffered_is_sent_at_once(installed, connection):
    transport, reactor, peer = connection
    for number in range(100):
        transport.write(b"frame %d;" % number)
    expected = b"".join(b"frame %d;" % number for number in range(100))
    assert read(peer, len(expected)) == expected
    assert reactor.registrations == 0  # no reactor turn needed, no epoll_ctl
    assert not transport.dataBuffer
    assert not transport._tempDataBuffer


def test_what_the_socket_does_not_take_waits_and_keeps_its_place(installed, connection):
    """A peer that does not read: the kernel takes part, Twisted buffers the
    rest, and a later write queues behind it instead of overtaking it."""
    transport, reactor, peer = connection
    transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    big = bytes(range(256)) * 8192  # 2 MiB, past the kernel's buffers
    transport.write(big)
    transport.write(b"and then this")
    assert reactor.writers == {transport}
    assert transport._tempDataBuffer[-1] == b"and then this"

    received = bytearray()
    expected = big + b"and then this"
    deadline = time.monotonic() + 10
    while len(received) < len(expected) and time.monotonic() < deadline:
        readable, writable, _ = select.select([peer], [transport.socket], [], 1)
        if writable and transport in reactor.writers:
            transport.doWrite()  # the reactor's turn, as it would come
        if readable:
            received += peer.recv(65536)
    assert bytes(received) == expected
    assert reactor.writers == set()


def test_a_write_to_a_closing_connection_is_left_to_twisted(installed, connection):
    transport, reactor, _peer = connection
    transport.disconnecting = True
    transport.write(b"after loseConnection")
    assert transport._tempDataBuffer == [b"after loseConnection"]
    assert reactor.writers == {transport}


def test_installing_twice_keeps_one_direct_path(installed, connection):
    assert twisted_writes.install()
    transport, _reactor, peer = connection
    transport.write(b"once")
    assert read(peer, 4) == b"once"
    assert tcp.Server.turn_originals["write"] is tcp.Connection.write


class SocketSpy:
    """A connection's socket, its sends recorded (or made to fail)."""

    def __init__(self, sock: socket.socket, failure: Exception | None = None) -> None:
        self.sock, self.failure = sock, failure
        self.sends: list[bytes] = []

    def send(self, data) -> int:
        if self.failure is not None:
            raise self.failure
        self.sends.append(bytes(data))
        return self.sock.send(data)

    def __getattr__(self, name: str):
        return getattr(self.sock, name)


def sends_of(monkeypatch, transport, failure: Exception | None = None) -> list[bytes]:
    spy = SocketSpy(transport.socket, failure)
    monkeypatch.setattr(transport, "socket", spy)
    return spy.sends


def test_a_send_that_fails_leaves_the_data_and_the_lost_connection_to_twisted(
    installed, connection
):
    transport, reactor, peer = connection
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()  # a reset: the next send fails
    time.sleep(0.05)

    async def one_turn():
        transport.write(b"to a reset connection")
        await asyncio.sleep(0)

    asyncio.run(one_turn())
    assert transport._tempDataBuffer == [b"to a reset connection"]
    assert reactor.writers == {transport}
    assert isinstance(transport.doWrite(), error.ConnectionLost)


def test_the_writes_of_one_turn_go_out_in_one_send(installed, connection, monkeypatch):
    transport, reactor, peer = connection
    sends = sends_of(monkeypatch, transport)
    expected = b"".join(b"frame %d;" % number for number in range(100))

    async def one_turn():
        for number in range(100):
            transport.write(b"frame %d;" % number)
        assert sends == []  # not before the turn ends
        await asyncio.sleep(0)

    asyncio.run(one_turn())
    assert sends == [expected]
    assert read(peer, len(expected)) == expected
    assert reactor.registrations == 0


def test_a_turn_asks_for_the_running_loop_once_not_per_write(installed, connection, monkeypatch):
    # On Python 3.11 each asyncio.get_running_loop() is a getpid() system
    # call, and the fan-out writes once per member of a room.
    transport, _reactor, peer = connection
    asked = []
    get_running_loop = asyncio.get_running_loop

    def counted():
        asked.append(1)
        return get_running_loop()

    async def one_turn():
        with monkeypatch.context() as patched:
            patched.setattr(twisted_writes.asyncio, "get_running_loop", counted)
            for number in range(100):
                transport.write(b"frame %d;" % number)
            await asyncio.sleep(0)

    asyncio.run(one_turn())
    assert len(asked) == 1
    expected = b"".join(b"frame %d;" % number for number in range(100))
    assert read(peer, len(expected)) == expected


def test_each_turn_sends_its_own_writes(installed, connection, monkeypatch):
    transport, _reactor, peer = connection
    sends = sends_of(monkeypatch, transport)

    async def two_turns():
        transport.write(b"first ")
        await asyncio.sleep(0)
        transport.write(b"second")
        await asyncio.sleep(0)

    asyncio.run(two_turns())
    assert sends == [b"first ", b"second"]
    assert read(peer, 12) == b"first second"


def test_closing_sends_what_waits_first(installed, connection):
    transport, reactor, peer = connection

    async def write_and_close():
        transport.write(b"goodbye")
        transport.loseConnection()
        assert transport.disconnecting

    asyncio.run(write_and_close())
    assert read(peer, 7) == b"goodbye"
    assert reactor.writers == {transport}  # Twisted closes on its next turn, as always


def test_a_write_sequence_comes_after_what_waits(installed, connection):
    transport, _reactor, peer = connection

    async def write_then_sequence():
        transport.write(b"1")
        transport.writeSequence([b"2", b"3"])
        transport.write(b"4")  # behind Twisted's buffer now

    asyncio.run(write_then_sequence())
    assert read(peer, 1) == b"1"
    assert transport._tempDataBuffer == [b"2", b"3", b"4"]


def test_aborting_drops_what_waits(installed, connection, monkeypatch):
    transport, reactor, _peer = connection
    sends = sends_of(monkeypatch, transport)

    async def write_and_abort():
        transport.write(b"never sent")
        transport.abortConnection()
        await asyncio.sleep(0)

    asyncio.run(write_and_abort())
    assert sends == []
    assert transport not in tcp.Server.turn.waiting
    assert len(reactor.later) == 1  # Twisted's connectionLost, on its next turn


def test_a_lost_connection_drops_what_waits(installed, connection, monkeypatch):
    transport, _reactor, _peer = connection
    sends = sends_of(monkeypatch, transport)

    async def write_and_lose():
        transport.write(b"never sent")
        transport.connectionLost(failure.Failure(error.ConnectionLost()))
        await asyncio.sleep(0)

    asyncio.run(write_and_lose())
    assert sends == []


def test_one_connections_failure_does_not_cost_the_others_their_writes(
    installed, connection, monkeypatch, caplog
):
    transport, reactor, _peer = connection
    listener = socket.create_server(("127.0.0.1", 0))
    other_peer = socket.create_connection(listener.getsockname())
    accepted, address = listener.accept()
    listener.close()
    other = tcp.Server(
        accepted, Protocol(), address, SimpleNamespace(_realPortNumber=address[1]), 0, reactor
    )

    sends_of(monkeypatch, transport, failure=RuntimeError("a bug"))

    async def one_turn():
        transport.write(b"lost")
        other.write(b"still sent")
        await asyncio.sleep(0)

    asyncio.run(one_turn())
    other_peer.settimeout(5)
    assert read(other_peer, 10) == b"still sent"
    assert "could not send" in caplog.text
    other_peer.close()
    accepted.close()


def test_a_loop_that_ends_before_its_turn_does_not_hold_the_next_loops_writes(
    installed, connection
):
    transport, _reactor, peer = connection
    ended = asyncio.new_event_loop()

    def write_and_stop():
        transport.write(b"first ")
        ended.stop()  # the loop ends with this turn: its send never runs

    ended.call_soon(write_and_stop)
    ended.run_forever()
    ended.close()
    assert transport in tcp.Server.turn.waiting

    async def write_again():
        transport.write(b"second")
        await asyncio.sleep(0)

    asyncio.run(write_again())
    assert read(peer, 12) == b"first second"
