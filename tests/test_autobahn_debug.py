"""Daphne's WebSocket layer formats its debug text only when debugging (chatsite.autobahn_debug)."""

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
    monkeypatch.setattr(autobahn.websocket.protocol, "pformat", autobahn.websocket.protocol.pformat)
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


def test_a_server_without_autobahn_is_left_alone(monkeypatch):
    monkeypatch.delitem(autobahn_debug.sys.modules, "autobahn.websocket.protocol")
    assert not autobahn_debug.install()
