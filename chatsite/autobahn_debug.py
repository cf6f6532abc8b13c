"""Autobahn (Daphne's WebSocket layer) without its debug dump per connection.

For every new connection, autobahn's WebSocketProtocol._connectionMade
formats its whole configuration (about 40 options) with pprint.pformat, to
pass to a debug log line, whether debug logging is on or not: 16 to 24% of
Daphne's event loop in a connect storm (docs/performance.md). That module
calls pformat only to build debug text (two debug lines and Timings, which
only debugging turns on), so here it formats only when txaio's log level,
which autobahn logs through, is debug or trace.

Installed by chatsite.asgi when Daphne has imported autobahn; other servers
never load it.
"""

import pprint
import sys

import txaio

SKIPPED = "(not formatted: autobahn's debug logging is off)"


def pformat_if_debugging(obj: object, *args, **kwargs) -> str:
    if txaio.get_global_log_level() in ("debug", "trace"):
        return pprint.pformat(obj, *args, **kwargs)
    return SKIPPED


def install() -> bool:
    """Use pformat_if_debugging in autobahn's protocol module, if it is loaded."""
    protocol = sys.modules.get("autobahn.websocket.protocol")
    if protocol is None:
        return False
    protocol.pformat = pformat_if_debugging
    return True
