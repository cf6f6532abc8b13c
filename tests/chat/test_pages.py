"""The server-rendered chat pages."""

import json

import pytest
from django.urls import reverse

from chat.models import Room
from tests.factories import make_member, make_messages, make_room

pytestmark = pytest.mark.django_db


def test_pages_need_login(client, room):
    for url in (reverse("chat:room-list"), reverse("chat:room-detail", args=[room.slug])):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


def test_room_list_shows_public_rooms_and_my_private_rooms(client, user):
    make_room("open-room", name="Open Room")
    mine = make_room("mine", name="My Secret", is_private=True)
    make_room("theirs", name="Their Secret", is_private=True)
    make_member(user, mine)
    client.force_login(user)
    page = client.get(reverse("chat:room-list")).content.decode()
    assert "Open Room" in page
    assert "My Secret" in page
    assert "Their Secret" not in page


def test_room_list_comes_in_pages_of_50(client, user):
    existing = Room.objects.count()
    for n in range(60):
        make_room(f"r{n:02d}", name=f"Room {n:02d}")
    client.force_login(user)
    first = client.get(reverse("chat:room-list"))
    shown = [room.name for room in first.context["rooms"]]
    assert len(shown) == 50
    assert 'rel="next" href="?page=2"' in first.content.decode()
    second = client.get(reverse("chat:room-list"), {"page": 2})
    rest = [room.name for room in second.context["rooms"]]
    assert len(rest) == existing + 10
    assert not set(shown) & set(rest)
    assert 'rel="prev" href="?page=1"' in second.content.decode()
    # Not a page: the nearest one, never an error.
    assert client.get(reverse("chat:room-list"), {"page": "x"}).context["rooms"].number == 1
    assert client.get(reverse("chat:room-list"), {"page": 99}).context["rooms"].number == 2


def test_room_page_renders_the_last_50_messages(client, user, room):
    stored = make_messages(room, user, 55)
    client.force_login(user)
    response = client.get(reverse("chat:room-detail", args=[room.slug]))
    page = response.content.decode()
    assert f'data-id="{stored[5].id}"' in page
    assert f'data-id="{stored[4].id}"' not in page
    initial = response.context["initial"]
    assert [m["id"] for m in initial] == [m.id for m in stored[5:]]
    assert json.loads(json.dumps(initial))[0]["room"] == room.slug


def test_room_page_escapes_message_text(client, user, room):
    from chat.models import Message

    Message.objects.create(room=room, user=user, body="<img src=x onerror=alert(1)>")
    client.force_login(user)
    page = client.get(reverse("chat:room-detail", args=[room.slug])).content.decode()
    assert "<img src=x onerror=alert(1)>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


@pytest.mark.parametrize(
    ("role", "staff", "composer_open"),
    [("member", False, False), ("moderator", False, True), (None, True, True)],
)
def test_a_locked_room_page_opens_its_composer_to_those_who_may_post(
    client, user, room, role, staff, composer_open
):
    room.is_locked = True
    room.save()
    if role is not None:
        make_member(user, room, role)
    user.is_staff = staff
    user.save()
    client.force_login(user)
    page = client.get(reverse("chat:room-detail", args=[room.slug])).content.decode()
    fieldset = page[page.index('<fieldset id="composer-fields"') :].split(">", 1)[0]
    assert ("disabled" not in fieldset) is composer_open
    assert ("you still can" in page) is composer_open


def test_private_room_page_is_404_for_non_members(client, user):
    private = make_room("hidden", is_private=True)
    client.force_login(user)
    assert client.get(reverse("chat:room-detail", args=[private.slug])).status_code == 404


def test_unknown_room_page_is_404(client, user):
    client.force_login(user)
    assert client.get(reverse("chat:room-detail", args=["nope"])).status_code == 404


def test_default_rooms_exist_after_migrate():
    from chat.models import Room

    assert set(
        Room.objects.filter(slug__in=["general", "random"]).values_list("slug", flat=True)
    ) == {
        "general",
        "random",
    }
