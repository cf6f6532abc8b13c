"""Daphne's TCP connections send at once when nothing waits (chatsite.twisted_writes).

A Twisted server connection over a real loopback socket, with a reactor that
only records what the transport asks of it: the peer reads what was sent.
"""

import select
import socket
import time
from types import SimpleNamespace

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol

from chatsite import twisted_writes


class RecordingReactor:
    def __init__(self) -> None:
        self.writers: set = set()
        self.registrations = 0

    def addWriter(self, writer) -> None:  # noqa: N802 - Twisted's interface
        self.writers.add(writer)
        self.registrations += 1

    def removeWriter(self, writer) -> None:  # noqa: N802
        self.writers.discard(writer)

    def addReader(self, reader) -> None:  # noqa: N802
        pass

    def removeReader(self, reader) -> None:  # noqa: N802
        pass


@pytest.fixture
def installed(monkeypatch):
    monkeypatch.setattr(tcp.Server, "write", tcp.Server.write, raising=False)
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
    assert tcp.Server.write.buffered_write is tcp.Connection.write
