"""Room frames written to Daphne's connections as bytes built once per process.

A room event goes to every member socket of a process with the same text.
Through ASGI each copy is a `websocket.send` message: Daphne looks the
connection up and hands the text to autobahn, which checks its state, encodes
the text to UTF-8, counts statistics, builds the frame header and writes. That
is done per member for bytes that are the same for all of them (a server's
frames are not masked). Here the fan-out's frame is built once per process
(`event_frame`), and each socket that Daphne serves writes those bytes to its
connection (`writer_for`) whenever autobahn would have sent them as one plain
frame: the connection open, nothing queued in autobahn, no compression, no
fragmentation, no size limit crossed, no frame logging. Otherwise, and under
any other server, the socket sends through ASGI as before.

Writes of either kind are synchronous, so frames keep the order they were
sent in. Measured in docs/performance.md.
"""

import functools
import struct
from collections.abc import Callable

TEXT_FIN = 0x81  # FIN, opcode 1 (text); no RSV bits: not compressed
GONE = {"disconnected": True}  # Daphne's entry for a connection it no longer has


def text_frame(text: str) -> bytes:
    """`text` as one unmasked WebSocket text frame (RFC 6455, 5.2)."""
    payload = text.encode()
    length = len(payload)
    if length <= 125:
        header = struct.pack("!BB", TEXT_FIN, length)
    elif length <= 0xFFFF:
        header = struct.pack("!BBH", TEXT_FIN, 126, length)
    else:
        header = struct.pack("!BBQ", TEXT_FIN, 127, length)
    return header + payload


def event_frame(event: dict) -> bytes:
    """The frame of a room event's `text`, built once for all its sockets.

    Kept in the event with the text it was built from: a copy of the event
    with another text (chat.events.presence_without) gets its own.
    """
    text, built = event["text"], event.get("frame")
    if built is None or built[0] is not text:
        built = event["frame"] = (text, text_frame(text))
    return built[1]


def payload_length(frame: bytes) -> int:
    code = frame[1] & 0x7F
    return len(frame) - (2 if code <= 125 else 4 if code == 126 else 10)


def writer_for(send: Callable) -> Callable[[bytes], bool] | None:
    """For an ASGI `send` that is Daphne's own: a function writing a frame of
    text_frame() straight to that connection, which says False when the frame
    must go through `send` instead. None for any other `send`.
    """
    try:
        from daphne.server import Server
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:
        return None
    if not (
        isinstance(send, functools.partial)
        and getattr(send.func, "__func__", None) is Server.handle_reply
        and len(send.args) == 1
        and not send.keywords
        and isinstance(send.args[0], WebSocketProtocol)
    ):
        return None
    protocol = send.args[0]
    # What autobahn does to a frame beyond its state is settled by the
    # handshake (the consumer asks after accepting): compression, timings,
    # frame logging, masking and size limits stay the connection's. Checked
    # once here, not per frame: the fan-out writes to every socket of a room.
    if (
        protocol.state != protocol.STATE_OPEN
        or protocol._perMessageCompress is not None
        or protocol.trackedTimings
        or protocol.logFrames
        or protocol.maskServerFrames
    ):
        return None
    limits = [n for n in (protocol.autoFragmentSize, protocol.maxMessagePayloadSize) if n > 0]
    limit = min(limits, default=None)
    # Daphne's entry for the connection: made when it connected, marked
    # "disconnected" before it is forgotten. Looked up once: autobahn hashes
    # its protocols in Python.
    connection = send.func.__self__.connections.get(protocol, GONE)
    open_state, ground = protocol.STATE_OPEN, protocol.SEND_STATE_GROUND

    def write(frame: bytes) -> bool:
        # What Daphne's handle_reply and autobahn's sendMessage, sendFrame and
        # sendData would check before writing the frame as it is. (A frame's
        # payload is shorter than the frame: most need no exact length.)
        if (
            protocol.state != open_state
            or protocol.send_state != ground
            or protocol.send_queue
            or (limit is not None and limit < len(frame) and limit < payload_length(frame))
            or connection.get("disconnected")
        ):
            return False
        protocol.transport.write(frame)
        return True

    return write
