"""Autobahn (Daphne's WebSocket layer) without debug text nobody reads.

autobahn builds the text of its debug log lines whether debug logging is on
or not:

- for every new connection, WebSocketProtocol._connectionMade formats its
  whole configuration (about 40 options) with pprint.pformat: 16 to 24% of
  Daphne's event loop in a connect storm;
- for every frame sent, sendData colours the function's name, the peer and
  the length (hltype, hlval: click.style): 8% of Daphne's busy samples in
  1 room x 100 members, once for each member a message goes to;
- for every read from a socket, the Twisted adapter's dataReceived does the
  same: 3 µs a read, once for each message a client sends.

Those helpers serve only log lines (debug ones, and a client's error line
that a server never logs), so here they do their work only when txaio's log
level, which autobahn logs through, is debug or trace; otherwise pformat
gives a placeholder and hltype and hlval the value as it is. Measured in
docs/performance.md.

Installed by chatsite.asgi whenever autobahn is loaded. Daphne serves through
it; under another server it is only imported (the `daphne` app, for
runserver) and the patched helpers are never called.
"""

import pprint
import sys

import txaio

SKIPPED = "(not formatted: autobahn's debug logging is off)"


def debugging() -> bool:
    return txaio.get_global_log_level() in ("debug", "trace")


def pformat_if_debugging(obj: object, *args, **kwargs) -> str:
    return pprint.pformat(obj, *args, **kwargs) if debugging() else SKIPPED


def install() -> bool:
    """Use the helpers above in autobahn's protocol module and its Twisted
    adapter, where they are loaded."""
    protocol = sys.modules.get("autobahn.websocket.protocol")
    if protocol is None:
        return False
    util = sys.modules["autobahn.util"]  # where both modules took them from
    protocol.pformat = pformat_if_debugging
    adapter = sys.modules.get("autobahn.twisted.websocket")  # loaded with Daphne
    for module in filter(None, (protocol, adapter)):
        module.hltype = _if_debugging(util.hltype)
        module.hlval = _if_debugging(util.hlval)
    return True


def _if_debugging(highlight):
    """`highlight` (hltype or hlval) when debugging, else the value as it is."""

    def highlight_if_debugging(value: object, *args, **kwargs) -> object:
        return highlight(value, *args, **kwargs) if debugging() else value

    return highlight_if_debugging
