"""Moderation and membership changes take effect on the sockets open right now."""

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from chat.models import Membership, Message
from tests.api import api_client
from tests.factories import make_member, make_room, make_user
from tests.ws import connect

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


def admin_action(model: str, action: str, ids: list[int]) -> int:
    """Run an admin action as a superuser through the real admin views."""
    client = Client()
    client.force_login(make_user(f"admin-{action}", is_staff=True, is_superuser=True))
    response = client.post(
        f"/admin/chat/{model}/" if model != "user" else "/admin/auth/user/",
        {"action": action, "_selected_action": ids},
    )
    return response.status_code


async def test_hidden_message_disappears_from_open_screens(channel_backend, user, other_user, room):
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        await alice.receive_type("presence")
        await bob.post(room.slug, "rude words", "b-1")
        message_id = (await alice.receive_type("message"))["id"]
        await bob.receive_type("message")
        status = await database_sync_to_async(admin_action)("message", "hide", [message_id])
        assert status == 302
        for client in (alice, bob):
            assert await client.receive() == {
                "type": "message_deleted",
                "room": room.slug,
                "id": message_id,
            }
    assert (
        await database_sync_to_async(Message.objects.filter(hidden_at__isnull=False).count)() == 1
    )


async def test_author_deletes_own_message_over_the_socket(channel_backend, user, other_user, room):
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        await alice.receive_type("presence")
        await alice.post(room.slug, "oops", "a-1")
        message_id = (await alice.receive_type("message"))["id"]
        await bob.receive_type("message")
        # Bob may not delete Alice's message...
        await bob.send({"type": "delete", "room": room.slug, "id": message_id})
        refused = await bob.receive_type("error")
        assert refused["code"] == "forbidden"
        # ...Alice may.
        await alice.send({"type": "delete", "room": room.slug, "id": message_id})
        deleted = await bob.receive_type("message_deleted")
        assert deleted["id"] == message_id
        assert (await alice.receive_type("message_deleted"))["id"] == message_id
        await alice.send({"type": "delete", "room": room.slug, "id": message_id})
        assert (await alice.receive_type("error"))["code"] == "message_not_found"


async def test_lock_tells_the_room_and_refuses_sends(channel_backend, user, room):
    await database_sync_to_async(make_member)(user, room)
    async with connect(user) as alice:
        await alice.join(room.slug)
        assert await database_sync_to_async(admin_action)("room", "lock", [room.id]) == 302
        state = await alice.receive_type("room_state")
        assert (state["room"], state["locked"], state["archived"]) == (room.slug, True, False)
        await alice.post(room.slug, "hello?", "a-1")
        refused = await alice.receive_type("error")
    assert (refused["code"], refused["ref"]) == ("room_locked", "a-1")


async def test_muted_member_gets_error_frame_with_the_end(channel_backend, user, room):
    await database_sync_to_async(make_member)(user, room)
    async with connect(user) as alice:
        await alice.join(room.slug)
        membership = await database_sync_to_async(Membership.objects.get)(user=user, room=room)
        assert (
            await database_sync_to_async(admin_action)("membership", "mute_hour", [membership.id])
            == 302
        )
        await alice.post(room.slug, "can I talk?", "a-1")
        refused = await alice.receive_type("error")
    assert refused["code"] == "muted"
    assert refused["until"].endswith("Z")
    assert refused["until"] in refused["detail"]


async def test_ban_removes_the_user_from_the_room_at_once(channel_backend, user, other_user, room):
    async with connect(user) as alice, connect(other_user) as bob:
        await alice.join(room.slug)
        await bob.join(room.slug)
        await alice.receive_type("presence")
        membership = await database_sync_to_async(Membership.objects.get)(
            user=other_user, room=room
        )
        assert (
            await database_sync_to_async(admin_action)("membership", "ban", [membership.id]) == 302
        )
        assert await bob.receive() == {"type": "removed", "room": room.slug, "reason": "banned"}
        offline = await alice.receive_type("presence")
        assert (offline["online"], offline["offline"]) == ([], ["bob"])
        # Out of the room: no more of its messages, no way back in.
        await alice.post(room.slug, "bye bob", "a-1")
        await alice.receive_type("message")
        await bob.assert_silent()
        await bob.send({"type": "join", "room": room.slug})
        assert (await bob.receive_type("error"))["code"] == "banned"


@pytest.mark.parametrize(("by_owner", "reason"), [(False, "left"), (True, "removed")])
async def test_leaving_or_removal_through_the_api_takes_the_sockets_out_of_the_room(
    channel_backend, user, other_user, room, by_owner, reason
):
    owner = await database_sync_to_async(make_user)("owner")
    await database_sync_to_async(make_member)(owner, room, Membership.Role.OWNER)
    async with connect(other_user) as bob:
        await bob.join(room.slug)
        if by_owner:
            url = f"/api/rooms/{room.slug}/members/{other_user.username}/"
            response = await database_sync_to_async(api_client(owner).delete)(url)
        else:
            url = f"/api/rooms/{room.slug}/leave/"
            response = await database_sync_to_async(api_client(other_user).post)(url)
        assert response.status_code == 204
        assert await bob.receive() == {"type": "removed", "room": room.slug, "reason": reason}


async def test_deleting_a_room_takes_every_socket_out_of_it(channel_backend, user, other_user):
    owner = await database_sync_to_async(make_user)("owner")
    room = await database_sync_to_async(make_room)("doomed")
    await database_sync_to_async(make_member)(owner, room, Membership.Role.OWNER)
    async with connect(user) as alice, connect(other_user) as bob:
        for client in (alice, bob):
            await client.join(room.slug)
        url = f"/api/rooms/{room.slug}/"
        response = await database_sync_to_async(api_client(owner).delete)(url)
        assert response.status_code == 204
        for client in (alice, bob):
            assert await client.receive() == {
                "type": "removed",
                "room": room.slug,
                "reason": "deleted",
            }
        await alice.post(room.slug, "anyone?", "a-1")
        assert (await alice.receive_type("error"))["code"] == "not_joined"


async def test_deactivation_closes_every_socket_of_the_user(channel_backend, user, room):
    async with connect(user) as tab1, connect(user) as tab2:
        await tab1.join(room.slug)
        assert await database_sync_to_async(admin_action)("user", "deactivate", [user.id]) == 302
        for tab in (tab1, tab2):
            closed = await tab.communicator.receive_output(timeout=1)
            assert closed == {"type": "websocket.close", "code": 4403}
