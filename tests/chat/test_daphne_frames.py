"""Room frames written straight to Daphne's connections (chat.daphne_frames).

Daphne's own WebSocket protocol (autobahn underneath) on a recording
transport: what the direct write puts on the wire is compared with what
Daphne's ASGI send puts there for the same text.
"""

import asyncio
import functools

import pytest
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory
from twisted.internet.testing import StringTransport

from chat import daphne_frames

TEXTS = [
    "x",
    "y" * 125,  # the longest length in the first header byte
    "z" * 126,  # a 2-byte length
    "é" * 63 + "!",  # 127 bytes of UTF-8 from 64 characters
    "w" * 65535,
    "v" * 65536,  # an 8-byte length
    '{"type":"message","body":"日本語 ✓"}',
]


@pytest.fixture
def daphne_socket():
    """(Daphne's ASGI send for an open WebSocket, its recording transport, its protocol)."""
    server = Server(application=None, endpoints=["tcp:port=0:interface=127.0.0.1"])
    server.connections = {}
    factory = WebSocketFactory(server)
    # As Daphne's run() sets them (its defaults: no size limits).
    factory.setProtocolOptions(
        allowNullOrigin=True,
        maxMessagePayloadSize=server.websocket_max_message_size,
        maxFramePayloadSize=server.websocket_max_frame_size,
    )
    protocol = factory.buildProtocol(("127.0.0.1", 40000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    # The handshake, done (Daphne's onConnect and autobahn's state).
    protocol.client_addr = ["127.0.0.1", 40000]
    protocol.state = protocol.STATE_OPEN
    server.connections[protocol] = {"connected": 0.0}
    return functools.partial(server.handle_reply, protocol), transport, protocol


def asgi_sent(send, transport: StringTransport, text: str) -> bytes:
    transport.clear()
    asyncio.run(send({"type": "websocket.send", "text": text}))
    return transport.value()


@pytest.mark.parametrize("text", TEXTS, ids=lambda text: f"{len(text.encode())}B")
def test_a_frame_is_written_as_daphnes_asgi_send_writes_it(daphne_socket, text):
    send, transport, _protocol = daphne_socket
    expected = asgi_sent(send, transport, text)
    write = daphne_frames.writer_for(send)
    transport.clear()
    assert write(daphne_frames.text_frame(text)) is True
    assert transport.value() == expected


def test_frames_keep_their_order_with_asgi_sends(daphne_socket):
    send, transport, _protocol = daphne_socket
    write = daphne_frames.writer_for(send)
    expected = b"".join(asgi_sent(send, transport, text) for text in ("one", "two", "three"))
    transport.clear()
    write(daphne_frames.text_frame("one"))
    asyncio.run(send({"type": "websocket.send", "text": "two"}))
    write(daphne_frames.text_frame("three"))
    assert transport.value() == expected


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(lambda p, c: setattr(p, "state", p.STATE_CLOSING), id="closing"),
        pytest.param(lambda p, c: p.send_queue.append((b"x", True)), id="autobahn-queue"),
        pytest.param(lambda p, c: c[p].update(disconnected=1.0), id="daphne-disconnected"),
        # As Daphne forgets a connection: marked disconnected first.
        pytest.param(lambda p, c: c.pop(p).update(disconnected=1.0), id="daphne-forgot-it"),
    ],
)
def test_a_frame_goes_through_asgi_when_autobahn_would_not_send_it_plainly(daphne_socket, state):
    send, transport, protocol = daphne_socket
    write = daphne_frames.writer_for(send)
    state(protocol, send.func.__self__.connections)
    transport.clear()
    assert write(daphne_frames.text_frame("a message of more than ten bytes")) is False
    assert transport.value() == b""


@pytest.mark.parametrize(
    "setting",
    [
        pytest.param(lambda p: setattr(p, "_perMessageCompress", object()), id="compressed"),
        pytest.param(lambda p: setattr(p, "autoFragmentSize", 10), id="fragmented"),
        pytest.param(lambda p: setattr(p, "maxMessagePayloadSize", 10), id="over-limit"),
        pytest.param(lambda p: setattr(p, "logFrames", True), id="logging-frames"),
        pytest.param(lambda p: setattr(p, "trackedTimings", object()), id="tracking-timings"),
        pytest.param(lambda p: setattr(p, "maskServerFrames", True), id="masking"),
        pytest.param(lambda p: setattr(p, "state", p.STATE_CONNECTING), id="not-open-yet"),
    ],
)
def test_a_connection_settled_otherwise_at_its_handshake_gets_no_plain_frame(
    daphne_socket, setting
):
    send, transport, protocol = daphne_socket
    setting(protocol)  # as the handshake left it: the consumer asks after accepting
    write = daphne_frames.writer_for(send)
    transport.clear()
    frame = daphne_frames.text_frame("a message of more than ten bytes")
    assert write is None or write(frame) is False
    assert transport.value() == b""


def test_other_servers_sends_get_no_writer(daphne_socket):
    send, _transport, _protocol = daphne_socket

    async def uvicorn_like_send(message):
        pass

    async def session_send(message):  # Daphne's, wrapped by a middleware
        await send(message)

    assert daphne_frames.writer_for(uvicorn_like_send) is None
    assert daphne_frames.writer_for(functools.partial(uvicorn_like_send)) is None
    assert daphne_frames.writer_for(session_send) is None


def test_an_events_frame_is_built_once_per_text():
    event = {"type": "room.event", "text": "hello"}
    frame = daphne_frames.event_frame(event)
    assert frame == daphne_frames.text_frame("hello")
    assert daphne_frames.event_frame(event) is frame
    # A copy with its own text (a presence frame made personal) gets its own.
    personal = {**event, "text": "hi"}
    assert daphne_frames.event_frame(personal) == daphne_frames.text_frame("hi")
    assert daphne_frames.event_frame(event) is frame


def test_a_connection_daphne_does_not_know_gets_no_frame_written(daphne_socket):
    send, transport, protocol = daphne_socket
    del send.func.__self__.connections[protocol]
    write = daphne_frames.writer_for(send)
    transport.clear()
    assert write(daphne_frames.text_frame("hello")) is False
    assert transport.value() == b""
