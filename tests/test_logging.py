"""Logs: one line per HTTP request under a request id, one per socket opened,
error frame and socket closed under a connection id; JSON or plain; and never
a token or a password."""

import asyncio
import json
import logging
import re
import sys
import time
import urllib.error
import urllib.request

import pytest
import websockets
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework_simplejwt.tokens import AccessToken

from chat import services
from chatsite.asgi import application
from chatsite.logs import ContextFilter, JsonFormatter, PlainFormatter
from tests.servers import DaphneProcess
from tests.ws import connect

PASSWORD = "a-long-unusual-password-4711"


class JsonLines(logging.Handler):
    """What the production handler writes, parsed back: one dict per record."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.addFilter(ContextFilter())
        self.setFormatter(JsonFormatter())
        self.lines: list[dict] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))

    def from_logger(self, name: str) -> list[dict]:
        return [line for line in self.lines if line["logger"] == name]


@pytest.fixture
def json_lines():
    handler, root = JsonLines(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


@pytest.mark.django_db
def test_request_line_is_json_with_the_given_request_id(client, json_lines):
    response = client.get("/api/rooms/?token=do-not-log-me", headers={"X-Request-ID": "edge-42"})
    assert response.status_code == 401
    assert response["X-Request-ID"] == "edge-42"
    [line] = json_lines.from_logger("chatsite.requestlog")
    assert line["request_id"] == "edge-42"
    assert line["level"] == "INFO"
    assert line["msg"] == "GET /api/rooms/ 401"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/api/rooms/", 401)
    assert line["duration_ms"] >= 0
    assert "user_id" not in line  # anonymous
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["ts"])
    assert all("do-not-log-me" not in json.dumps(entry) for entry in json_lines.lines)


@pytest.mark.django_db
def test_request_line_names_the_user(client, json_lines, user):
    headers = {"Authorization": f"Bearer {AccessToken.for_user(user)}"}
    response = client.get("/api/rooms/nope/", headers=headers)
    assert response.status_code == 404
    [line] = json_lines.from_logger("chatsite.requestlog")
    assert response["X-Request-ID"] == line["request_id"]
    assert re.fullmatch(r"[0-9a-f]{16}", line["request_id"])
    assert (line["status"], line["user_id"]) == (404, user.pk)
    # Django logs a failed request after the middleware is done: under the same id.
    [warning] = json_lines.from_logger("django.request")
    assert warning["request_id"] == line["request_id"]


@pytest.mark.parametrize("given", ["has space", "new\nline", "x" * 65, "é"])
def test_an_unsafe_request_id_is_replaced(client, given):
    response = client.get("/healthz", headers={"X-Request-ID": given})
    assert re.fullmatch(r"[0-9a-f]{16}", response["X-Request-ID"])


def test_probes_are_logged_at_debug(client, json_lines):
    client.get("/healthz")
    [line] = json_lines.from_logger("chatsite.requestlog")
    assert line["level"] == "DEBUG"


def test_plain_format_appends_ids_and_fields():
    record = logging.makeLogRecord(
        {"name": "chat.observe", "levelno": logging.INFO, "levelname": "INFO", "msg": "socket open"}
    )
    record.connection_id, record.user_id = "ab12", 7
    text = PlainFormatter().format(record)
    assert text.endswith(" INFO chat.observe socket open connection_id=ab12 user_id=7")


def test_json_format_writes_the_exception():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info()
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "failed"
    assert "ValueError: boom" in line["exc"]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_each_socket_logs_under_its_own_connection_id(json_lines, user, other_user, room):
    async with connect(user) as alice, connect(other_user) as bob:
        for client in (alice, bob):
            await client.send_text("not json")
            await client.receive_type("error")
    lines = json_lines.from_logger("chat.observe")
    by_socket: dict[str, list[str]] = {}
    for line in lines:
        by_socket.setdefault(line["connection_id"], []).append(line["msg"])
    assert len(by_socket) == 2
    assert all(
        msgs == ["socket open", "error frame invalid_json", "socket closed"]
        for msgs in by_socket.values()
    )
    closed = [line for line in lines if line["msg"] == "socket closed"]
    assert {line["user_id"] for line in closed} == {user.pk, other_user.pk}
    assert all(line["close_code"] == 1000 and line["duration_ms"] >= 0 for line in closed)
    assert [line["code"] for line in lines if "code" in line] == ["invalid_json"] * 2


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_services_a_socket_calls_log_under_its_connection_id(
    json_lines, user, room, monkeypatch
):
    room_join = services.room_join

    def logging_room_join(**arguments):
        logging.getLogger("chat.services").info("joining")
        return room_join(**arguments)

    monkeypatch.setattr(services, "room_join", logging_room_join)
    async with connect(user) as client:
        await client.join(room.slug)
    [opened, _] = json_lines.from_logger("chat.observe")
    [joining] = json_lines.from_logger("chat.services")
    assert joining["connection_id"] == opened["connection_id"]


def closed(lines: list[dict]) -> int:
    return sum(line["msg"] == "socket closed" for line in lines)


def server_lines(server: DaphneProcess, until, timeout: float = 10) -> list[dict]:
    """The JSON lines the server has written, once `until(lines)` holds (or on timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        server.log.seek(0)
        text = server.log.read().decode()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        if until(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_daphne_writes_json_lines_under_request_and_connection_ids(user):
    server = DaphneProcess(LOG_FORMAT="json", DEBUG="1")
    server.start()
    try:
        request = urllib.request.Request(
            f"http://{server.address}/api/rooms/", headers={"X-Request-ID": "edge-7"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310 - our own server
        assert refused.value.headers["X-Request-ID"] == "edge-7"

        async def chat() -> None:
            headers = {"Authorization": f"Bearer {AccessToken.for_user(user)}"}
            for _ in range(2):
                url = f"ws://{server.address}/ws/chat/"
                async with websockets.connect(url, additional_headers=headers) as socket:
                    await socket.send("not json")
                    await asyncio.wait_for(socket.recv(), timeout=5)

        asyncio.run(chat())
        # The client is gone once its close is answered; the server's
        # disconnect handler (and its line) may still be running.
        lines = server_lines(server, until=lambda lines: closed(lines) == 2)
    finally:
        server.stop()
        server.log.close()
    http = [line for line in lines if line["logger"] in {"chatsite.requestlog", "django.request"}]
    assert [(line["logger"], line["request_id"]) for line in http] == [
        ("chatsite.requestlog", "edge-7"),
        ("django.request", "edge-7"),
    ]
    ours = [line for line in lines if line["logger"] == "chat.observe"]
    ids = [line["connection_id"] for line in ours]
    assert [line["msg"] for line in ours] == 2 * [
        "socket open",
        "error frame invalid_json",
        "socket closed",
    ]
    assert ids[0] == ids[1] == ids[2] != ids[3] == ids[4] == ids[5]


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_whole_session_logs_no_token_and_no_password(client, caplog, room):
    caplog.set_level(logging.DEBUG)
    # The test client in a thread that closes its database connection after.
    get = database_sync_to_async(client.get)

    @database_sync_to_async
    def post(url: str, body: dict):
        return client.post(url, body, content_type="application/json")

    registered = await post("/api/auth/register/", {"username": "zoe", "password": PASSWORD})
    assert registered.status_code == 201
    tokens = (await post("/api/auth/token/", {"username": "zoe", "password": PASSWORD})).json()
    access, refresh = tokens["access"], tokens["refresh"]

    # The socket takes the token in its Authorization header only: one in the
    # query string is refused (accounts/middleware.py), and must not be logged either.
    refused = WebsocketCommunicator(
        application, f"/ws/chat/?token={access}", headers=[(b"origin", b"http://localhost")]
    )
    assert (await refused.connect(timeout=3))[0] is False
    await refused.disconnect()
    headers = [(b"authorization", f"Bearer {access}".encode())]
    async with connect(headers=headers) as zoe:
        await zoe.join(room.slug)
        await zoe.post(room.slug, "hello", "c-1")
        await zoe.receive_type("message")
    rooms = await get("/api/rooms/?token=" + access)
    assert rooms.status_code == 401  # a token in the query string is no credential
    assert (await post("/api/auth/logout/", {"refresh": refresh})).status_code == 200

    messages = {record.getMessage() for record in caplog.records}
    assert {"socket open", "socket closed"} <= messages
    assert any(message.startswith("POST /api/auth/token/ 200") for message in messages)
    json_formatter, plain_formatter = JsonFormatter(), PlainFormatter()
    for record in caplog.records:
        written = json_formatter.format(record) + plain_formatter.format(record)
        for secret in (access, refresh, PASSWORD):
            assert secret not in written, record.getMessage()
            assert secret not in repr(record.args), record.getMessage()
