"""Every bad frame gets an error frame, and the socket stays usable."""

import pytest

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
