"""Every bad frame gets an error frame, and the socket stays usable."""

import asyncio
import json

import pytest
import websockets
from channels.db import database_sync_to_async
from rest_framework_simplejwt.tokens import AccessToken

from tests.ws import connect

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

BAD_FRAMES = [
    ("not json", "invalid_json", None),
    ("[1, 2]", "invalid_frame", None),
    ('"join"', "invalid_frame", None),
    ("{}", "unknown_type", None),
    ('{"type": "shout", "room": "lobby"}', "unknown_type", "lobby"),
    ('{"type": 7}', "unknown_type", None),
    ('{"type": "join"}', "invalid_field", None),
    ('{"type": "join", "room": 5}', "invalid_field", None),
    ('{"type": "join", "room": ""}', "invalid_field", ""),
    ('{"type": "join", "room": "lobby", "since": "x"}', "invalid_field", "lobby"),
    ('{"type": "join", "room": "lobby", "since": true}', "invalid_field", "lobby"),
    ('{"type": "join", "room": "lobby", "since": -1}', "invalid_field", "lobby"),
    ('{"type": "join", "room": "no-such-room"}', "room_not_found", "no-such-room"),
    ('{"type": "message", "room": "lobby"}', "invalid_field", "lobby"),
    ('{"type": "message", "room": "lobby", "body": 3}', "invalid_field", "lobby"),
    ('{"type": "message", "room": "lobby", "body": "x", "client_id": 9}', "invalid_field", "lobby"),
    ('{"type": "message", "room": "lobby", "body": "   ", "client_id": "c1"}', "empty_body", "c1"),
    ('{"type": "message", "room": "lobby", "body": "", "client_id": "c2"}', "empty_body", "c2"),
    ('{"type": "typing", "room": "lobby", "typing": "yes"}', "invalid_field", "lobby"),
    ('{"type": "typing", "room": "other", "typing": true}', "not_joined", "other"),
    ('{"type": "message", "room": "other", "body": "hi", "client_id": "c3"}', "not_joined", "c3"),
    ('{"type": "leave", "room": "other"}', "not_joined", "other"),
    # NUL characters: valid JSON, but no PostgreSQL text holds them.
    ('{"type": "join", "room": "lo\\u0000bby"}', "invalid_field", "lo\x00bby"),
    (
        '{"type": "message", "room": "lobby", "body": "a\\u0000b", "client_id": "c4"}',
        "invalid_field",
        "c4",
    ),
    (
        '{"type": "message", "room": "lobby", "body": "hi", "client_id": "c\\u0000"}',
        "invalid_field",
        "c\x00",
    ),
    # Half a UTF-16 pair, escaped alone: valid JSON, but no UTF-8 text holds it.
    ('{"type": "join", "room": "lobby\\ud800"}', "invalid_json", None),
    (
        '{"type": "message", "room": "lobby", "body": "\\udfff", "client_id": "c5"}',
        "invalid_json",
        None,
    ),
    (
        '{"type": "message", "room": "lobby", "body": "hi", "client_id": "\\ud83d"}',
        "invalid_json",
        None,
    ),
]


@pytest.mark.parametrize(("text", "code", "ref"), BAD_FRAMES)
async def test_bad_frame_gets_error_and_socket_stays_usable(user, room, text, code, ref):
    async with connect(user) as client:
        await client.join(room.slug)
        await client.send_text(text)
        error = await client.receive_type("error")
        assert error["code"] == code
        assert error["ref"] == ref
        assert isinstance(error["detail"], str)
        assert error["detail"]
        # Still usable: a good frame after the bad one works.
        await client.post(room.slug, "still here", "after-error")
        assert (await client.receive_type("message"))["body"] == "still here"


async def test_body_over_4000_characters_is_refused(user, room):
    async with connect(user) as client:
        await client.join(room.slug)
        await client.post(room.slug, "x" * 4001, "long")
        error = await client.receive_type("error")
        await client.post(room.slug, "x" * 4000, "just-fits")
        accepted = await client.receive_type("message")
    assert (error["code"], error["ref"]) == ("body_too_long", "long")
    assert len(accepted["body"]) == 4000


async def test_binary_frame_is_refused(user, room):
    async with connect(user) as client:
        await client.communicator.send_to(bytes_data=b"\x00\x01")
        error = await client.receive_type("error")
    assert error["code"] == "invalid_frame"


async def _next_of_type(socket, kind: str) -> dict:
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 5))
        if frame["type"] == kind:
            return frame


async def test_unpaired_surrogates_are_refused_over_a_real_socket(server, user):
    """Through Daphne, which encodes every frame it sends as UTF-8: an error
    whose ref echoed half a surrogate pair failed that send and ended the
    socket, leaving the user online in its rooms."""
    token = await database_sync_to_async(lambda: str(AccessToken.for_user(user)))()
    url = server.replace("http://", "ws://") + "/ws/chat/"
    headers = {"Authorization": f"Bearer {token}"}
    async with websockets.connect(url, additional_headers=headers) as socket:
        for text in [
            '{"type": "leave", "room": "\\ud800"}',
            '{"type": "message", "room": "general", "body": "hi", "client_id": "\\udfff"}',
        ]:
            await socket.send(text)
            error = await _next_of_type(socket, "error")
            assert (error["code"], error["ref"]) == ("invalid_json", None)
        await socket.send(json.dumps({"type": "join", "room": "general"}))
        await _next_of_type(socket, "joined")
        # A whole pair, escaped, is one character: taken.
        pair = (
            '{"type": "message", "room": "general", "body": "\\ud83d\\ude00", "client_id": "c-1"}'
        )
        await socket.send(pair)
        assert (await _next_of_type(socket, "message"))["body"] == "\U0001f600"
