"""Daphne's WebSocket layer formats its debug text only when debugging (chatsite.autobahn_debug)."""

import autobahn.twisted.websocket
import autobahn.util
import autobahn.websocket.protocol
import pytest
import txaio

from chatsite import autobahn_debug


@pytest.fixture
def autobahn_log_level():
    level = txaio.get_global_log_level()
    yield txaio.set_global_log_level
    txaio.set_global_log_level(level)


@pytest.fixture
def installed(monkeypatch):
    for name in ("pformat", "hltype", "hlval"):
        monkeypatch.setattr(
            autobahn.websocket.protocol, name, getattr(autobahn.websocket.protocol, name)
        )
    for name in ("hltype", "hlval"):
        monkeypatch.setattr(
            autobahn.twisted.websocket, name, getattr(autobahn.twisted.websocket, name)
        )
    assert autobahn_debug.install()
    return autobahn.websocket.protocol


def test_autobahn_formats_no_configuration_when_debug_logging_is_off(installed, autobahn_log_level):
    autobahn_log_level("info")
    config = [("autoPingInterval", 0, "WebSocketServerFactory")] * 40
    assert installed.pformat(config) == autobahn_debug.SKIPPED


def test_autobahn_formats_its_debug_text_when_debugging(installed, autobahn_log_level):
    autobahn_log_level("debug")
    config = [("autoPingInterval", 0, "WebSocketServerFactory")] * 40
    assert installed.pformat(config) == autobahn_debug.pprint.pformat(config)


def test_autobahn_colours_nothing_per_frame_when_debug_logging_is_off(
    installed, autobahn_log_level
):
    """sendData passes these to a debug line for every frame sent."""
    autobahn_log_level("info")
    assert installed.hltype(installed.WebSocketProtocol.sendData) is (
        installed.WebSocketProtocol.sendData
    )
    assert installed.hlval(1234) == 1234


def test_autobahn_colours_nothing_per_read_when_debug_logging_is_off(installed, autobahn_log_level):
    """Its Twisted adapter's dataReceived passes these to a debug line for
    every read from a socket."""
    autobahn_log_level("info")
    adapter = autobahn.twisted.websocket
    received = adapter.WebSocketAdapterProtocol.dataReceived
    assert adapter.hltype(received) is received
    assert adapter.hlval(1234) == 1234
    autobahn_log_level("debug")
    assert adapter.hltype(received) == autobahn.util.hltype(received)


def test_autobahn_colours_its_debug_text_when_debugging(installed, autobahn_log_level):
    autobahn_log_level("debug")
    send_data = installed.WebSocketProtocol.sendData
    assert installed.hltype(send_data) == autobahn.util.hltype(send_data)
    assert installed.hlval(1234) == autobahn.util.hlval(1234)
    assert installed.hlval(1234) != "1234"  # coloured


def test_installing_twice_wraps_once(installed, autobahn_log_level):
    assert autobahn_debug.install()
    autobahn_log_level("debug")
    assert installed.hlval(7) == autobahn.util.hlval(7)


def test_a_server_without_autobahn_is_left_alone(monkeypatch):
    monkeypatch.delitem(autobahn_debug.sys.modules, "autobahn.websocket.protocol")
    assert not autobahn_debug.install()
