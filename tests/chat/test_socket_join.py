"""Joining and leaving rooms on the socket: history, catch-up, presence."""

import asyncio
from contextlib import AsyncExitStack

import pytest
from channels.db import database_sync_to_async

from chat import events
from chat.presence import get_presence
from tests.factories import make_member, make_messages, make_room, make_user
from tests.ws import connect

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


async def test_join_answers_with_latest_50_messages_oldest_first(channel_backend, user, room):
    stored = await database_sync_to_async(make_messages)(room, user, 60)
    async with connect(user) as client:
        joined = await client.join(room.slug)
    assert [m["id"] for m in joined["messages"]] == [m.id for m in stored[-50:]]
    first = joined["messages"][0]
    assert set(first) == {"id", "seq", "room", "user", "body", "created", "client_id"}
    assert first["room"] == room.slug
    assert first["user"] == "alice"
    assert first["created"].endswith("Z")


async def test_join_with_since_returns_only_newer_messages(channel_backend, user, room):
    stored = await database_sync_to_async(make_messages)(room, user, 10)
    async with connect(user) as client:
        joined = await client.join(room.slug, since=stored[6].id)
    assert [m["id"] for m in joined["messages"]] == [m.id for m in stored[7:]]


async def test_catch_up_beyond_a_page_continues_with_a_second_join(channel_backend, user, room):
    stored = await database_sync_to_async(make_messages)(room, user, 130)
    async with connect(user) as client:
        first = await client.join(room.slug, since=stored[4].id)
        assert len(first["messages"]) == 100
        second = await client.join(room.slug, since=first["messages"][-1]["id"])
    received = [m["id"] for m in first["messages"] + second["messages"]]
    assert received == [m.id for m in stored[5:]]


async def test_join_unknown_room_is_an_error(channel_backend, user):
    async with connect(user) as client:
        await client.send({"type": "join", "room": "nowhere"})
        error = await client.receive_type("error")
    assert error["code"] == "room_not_found"
    assert error["ref"] == "nowhere"


async def test_private_room_refuses_non_members(channel_backend, user):
    secret = await database_sync_to_async(make_room)("secret", is_private=True)
    async with connect(user) as client:
        await client.send({"type": "join", "room": secret.slug})
        error = await client.receive_type("error")
    assert error["code"] == "forbidden"


async def test_private_room_admits_its_members(channel_backend, user):
    secret = await database_sync_to_async(make_room)("secret", is_private=True)
    await database_sync_to_async(make_member)(user, secret)
    async with connect(user) as client:
        joined = await client.join(secret.slug)
    assert joined["room"] == "secret"


async def test_others_see_presence_when_someone_joins_and_leaves(
    channel_backend, user, other_user, room
):
    async with connect(user) as alice:
        await alice.join(room.slug)
        async with connect(other_user) as bob:
            joined = await bob.join(room.slug)
            assert joined["online"] == ["alice", "bob"]
            # Not about herself, even when her join fell in the same moment.
            assert await alice.receive_type("presence") == {
                "type": "presence",
                "room": room.slug,
                "online": ["bob"],
                "offline": [],
            }
            await bob.send({"type": "leave", "room": room.slug})
            assert await bob.receive() == {"type": "left", "room": room.slug}
        offline = await alice.receive_type("presence")
    assert (offline["online"], offline["offline"]) == ([], ["bob"])


async def test_closing_the_socket_leaves_every_room(channel_backend, user, other_user, room):
    second = await database_sync_to_async(make_room)("second")
    async with connect(user) as alice:
        await alice.join(room.slug)
        await alice.join(second.slug)
        async with connect(other_user) as bob:
            await bob.join(room.slug)
            await bob.join(second.slug)
            await alice.receive_type("presence")
            await alice.receive_type("presence")
        gone = [await alice.receive_type("presence"), await alice.receive_type("presence")]
    assert {(p["room"], tuple(p["online"]), tuple(p["offline"])) for p in gone} == {
        (room.slug, (), ("bob",)),
        (second.slug, (), ("bob",)),
    }


async def test_second_tab_does_not_announce_or_drop_the_user(
    channel_backend, user, other_user, room
):
    async with connect(user) as alice:
        await alice.join(room.slug)
        async with connect(other_user) as bob_tab1:
            await bob_tab1.join(room.slug)
            await alice.receive_type("presence")
            async with connect(other_user) as bob_tab2:
                joined = await bob_tab2.join(room.slug)
                assert joined["online"] == ["alice", "bob"]
            # One of bob's two tabs closed: he is still online.
            await alice.assert_silent()
        assert (await alice.receive_type("presence"))["offline"] == ["bob"]


async def test_a_leave_is_not_announced_once_the_user_is_back_through_another_process(
    channel_backend, user, other_user, room
):
    """A quick reconnect through another process: this one announces the old
    socket's leave after its tick, the other the new socket's join after its
    own, in either order. A leave no longer true by its tick is dropped."""
    async with connect(user) as alice:
        await alice.join(room.slug)
        async with connect(other_user) as bob:
            await bob.join(room.slug)
            assert (await alice.receive_type("presence"))["online"] == ["bob"]
            await bob.send({"type": "leave", "room": room.slug})
            await bob.receive_type("left")
            await get_presence().add(room.id, "bob", "specific.another-process!1")
        assert await alice.communicator.receive_nothing(timeout=5 * events.PRESENCE_TICK)


async def test_leave_of_a_room_not_joined_is_an_error(channel_backend, user, room):
    async with connect(user) as client:
        await client.send({"type": "leave", "room": room.slug})
        error = await client.receive_type("error")
    assert error["code"] == "not_joined"


async def test_rejoin_after_reconnect_resumes_without_gaps(channel_backend, user, other_user, room):
    async with connect(user) as alice:
        await alice.join(room.slug)
        await alice.post(room.slug, "before", "c-1")
        last_seen = (await alice.receive_type("message"))["id"]
    async with connect(other_user) as bob:
        await bob.join(room.slug)
        await bob.post(room.slug, "while alice was away", "c-2")
        await bob.receive_type("message")
    async with connect(user) as alice:
        joined = await alice.join(room.slug, since=last_seen)
    assert [m["body"] for m in joined["messages"]] == ["while alice was away"]


async def test_a_storm_of_joins_reaches_each_socket_in_a_few_presence_frames(
    channel_backend, user, room
):
    """Every client of a big room reconnecting at once (a restart) must not
    cost each socket a frame per joiner: a room's joins go out together."""
    names = [f"guest{i}" for i in range(8)]
    guests = [await database_sync_to_async(make_user)(name) for name in names]
    async with connect(user) as alice, AsyncExitStack() as stack:
        await alice.join(room.slug)
        sockets = [await stack.enter_async_context(connect(guest)) for guest in guests]
        for socket in sockets:
            await socket.join(room.slug)
        frames, seen = 0, set()
        while seen != set(names):
            frame = await alice.receive_type("presence")
            frames += 1
            seen.update(frame["online"])
            assert frame["offline"] == []
        assert frames <= 3  # one per 0.1 s tick that the joins spanned; not 8
        await alice.assert_silent()


async def test_a_users_arrival_comes_before_their_first_message(
    channel_backend, user, other_user, room
):
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        await bob.post(room.slug, "hi, just got here", "b-1")
        assert (await alice.receive_type("presence"))["online"] == ["bob"]
        assert (await alice.receive_type("message"))["body"] == "hi, just got here"


async def test_a_message_sent_while_the_tick_checks_its_leaves_still_follows_its_senders_join(
    channel_backend, user, other_user, room, monkeypatch
):
    store = get_presence()
    asked, release = asyncio.Event(), asyncio.Event()
    online = store.online

    async def online_once_released(room_id):
        asked.set()
        await release.wait()
        return await online(room_id)

    async with connect(user) as alice:
        await alice.join(room.slug)
        monkeypatch.setattr(store, "online", online_once_released)
        async with connect(other_user) as bob:
            await bob.join(room.slug)
            # A leave in the same tick as bob's join: the tick checks it.
            events.presence_changed(
                room_id=room.id, room_slug=room.slug, user="ghost", online=False
            )
            await asyncio.wait_for(asked.wait(), 5)
            await bob.post(room.slug, "hi, just got here", "b-1")
            await bob.receive_type("message")
            release.set()
            receive = alice.communicator.receive_json_from
            first, second = await receive(), await receive()
            assert (first["type"], first["online"]) == ("presence", ["bob"])
            assert (second["type"], second["body"]) == ("message", "hi, just got here")
            assert (await alice.receive_type("presence"))["offline"] == ["ghost"]
