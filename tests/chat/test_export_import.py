"""export_room writes a room as JSON Lines; import_room reads it back, idempotently."""

import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chat import backup
from chat.models import Membership, Message, Room
from tests.factories import make_member, make_messages, make_room, make_user

pytestmark = pytest.mark.django_db

Role = Membership.Role
T0 = datetime(2024, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def lobby(room, user, other_user):
    """alice owns it, bob is muted, carol banned by the owner; four messages at known times,
    one sent with a client_id, one hidden by alice."""
    make_member(user, room, role=Role.OWNER)
    bob = make_member(other_user, room)
    bob.muted_until = T0 + timedelta(days=30)
    bob.mute_authority = Role.OWNER
    bob.save()
    carol = make_user("carol")
    Membership.objects.create(user=carol, room=room, is_banned=True, ban_authority=Role.OWNER)
    make_messages(room, user, 2)
    Message.objects.create(room=room, user=other_user, body="sent with an id", client_id="c-1")
    Message.objects.create(room=room, user=carol, body="rude", hidden_at=T0, hidden_by=user)
    for minutes, message in enumerate(room.messages.order_by("id")):
        Message.objects.filter(pk=message.pk).update(created_at=T0 + timedelta(minutes=minutes))
    Room.objects.filter(pk=room.pk).update(created_at=T0 - timedelta(days=1))
    return Room.objects.get(pk=room.pk)


def export(slug: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{slug}.jsonl"
    call_command("export_room", slug, output=str(path), stdout=StringIO())
    return path


def import_room(path: Path, **options: str) -> str:
    out = StringIO()
    call_command("import_room", str(path), stdout=out, **options)
    return out.getvalue()


def history(slug: str) -> list[tuple]:
    return list(
        Message.objects.filter(room__slug=slug)
        .order_by("id")
        .values_list("user__username", "body", "created_at", "hidden_at", "hidden_by__username")
    )


def members(slug: str) -> set[tuple]:
    return set(Membership.objects.filter(room__slug=slug).values_list(*backup.MEMBER_COLUMNS))


def room_settings(slug: str) -> dict:
    return Room.objects.filter(slug=slug).values(
        "name", "description", "is_private", "is_locked", "is_archived", "created_at"
    )[0]


def database_counts() -> tuple[int, ...]:
    return (
        Room.objects.count(),
        Membership.objects.count(),
        Message.objects.count(),
        get_user_model().objects.count(),
    )


# --- export ------------------------------------------------------------------------------


def test_export_writes_header_members_then_messages_in_id_order(lobby, tmp_path):
    lines = [json.loads(line) for line in export("lobby", tmp_path).read_text().splitlines()]

    assert lines[0] == {
        "kind": "room",
        "format": 1,
        "slug": "lobby",
        "name": "Lobby",
        "description": "",
        "is_private": False,
        "is_locked": False,
        "is_archived": False,
        "created_at": "2024-02-29T12:00:00.123456Z",
    }
    assert [(line["kind"], line["username"]) for line in lines[1:4]] == [
        ("member", "alice"),
        ("member", "bob"),
        ("member", "carol"),
    ]
    assert lines[2]["muted_until"] == "2024-03-31T12:00:00.123456Z"
    assert (lines[1]["mute_authority"], lines[2]["mute_authority"]) == (None, "owner")
    assert lines[3]["is_banned"] is True
    assert (lines[1]["ban_authority"], lines[3]["ban_authority"]) == (None, "owner")
    messages = lines[4:]
    assert [message["kind"] for message in messages] == ["message"] * 4
    assert [message["id"] for message in messages] == sorted(m["id"] for m in messages)
    assert messages[2] == {
        "kind": "message",
        "id": messages[2]["id"],
        "user": "bob",
        "body": "sent with an id",
        "created": "2024-03-01T12:02:00.123456Z",
        "client_id": "c-1",
        "hidden_at": None,
        "hidden_by": None,
    }
    assert messages[3]["hidden_at"] == "2024-03-01T12:00:00.123456Z"
    assert messages[3]["hidden_by"] == "alice"


def test_export_writes_to_standard_output_by_default(lobby):
    out, err = StringIO(), StringIO()
    call_command("export_room", "lobby", stdout=out, stderr=err)

    kinds = [json.loads(line)["kind"] for line in out.getvalue().splitlines()]
    assert kinds == ["room"] + ["member"] * 3 + ["message"] * 4
    assert "3 members, 4 messages" in err.getvalue()


def test_export_makes_as_many_queries_for_many_messages_as_for_few(user, tmp_path):
    few, many = make_room("few"), make_room("many")
    for room, count in ((few, 3), (many, 60)):
        for member in (make_user(), make_user()):
            make_member(member, room)
            make_messages(room, member, count)
        Message.objects.filter(room=room).update(hidden_at=T0, hidden_by=user)

    counts = []
    for slug in ("few", "many"):
        with CaptureQueriesContext(connection) as queries:
            export(slug, tmp_path)
        counts.append(len(queries))
    assert counts[0] == counts[1]


def test_export_of_an_unknown_room_fails(db, tmp_path):
    with pytest.raises(CommandError, match="No room 'nowhere'"):
        export("nowhere", tmp_path)
    assert not (tmp_path / "nowhere.jsonl").exists()


# --- import ------------------------------------------------------------------------------


def test_import_into_a_new_slug_copies_the_room(lobby, tmp_path):
    output = import_room(export("lobby", tmp_path), into="lobby-copy")

    assert history("lobby-copy") == history("lobby")
    assert members("lobby-copy") == members("lobby")
    assert room_settings("lobby-copy") == room_settings("lobby")
    assert Room.objects.get(slug="lobby-copy").created_by.username == "alice"
    assert "Room 'lobby-copy': created from 'lobby'." in output
    assert "Messages: 4 created, 0 skipped" in output


def test_import_gives_the_copy_import_client_ids(lobby, tmp_path):
    """The original keeps its client_id; the copy, like every message sent
    without one, is stored under import:<source-slug>:<original-id>."""
    originals = list(lobby.messages.order_by("id").values_list("id", "client_id"))

    import_room(export("lobby", tmp_path), into="lobby-copy")

    copies = Message.objects.filter(room__slug="lobby-copy").order_by("id")
    assert list(copies.values_list("client_id", flat=True)) == [
        f"import:lobby:{id_}" for id_, _ in originals
    ]
    assert list(lobby.messages.order_by("id").values_list("id", "client_id")) == originals


def test_import_into_another_database_keeps_client_ids(lobby, tmp_path):
    path = export("lobby", tmp_path)
    lobby.delete()  # as if on another server: the originals are not there

    import_room(path)

    client_ids = Message.objects.filter(room__slug="lobby").values_list("client_id", flat=True)
    assert "c-1" in client_ids
    # A resend of c-1 by bob would find the imported message, as it found the original.
    assert Message.objects.filter(user__username="bob", client_id="c-1").count() == 1


def test_importing_twice_changes_nothing(lobby, tmp_path):
    path = export("lobby", tmp_path)
    import_room(path, into="lobby-copy")
    before = (database_counts(), history("lobby-copy"), members("lobby-copy"))

    output = import_room(path, into="lobby-copy")

    assert (database_counts(), history("lobby-copy"), members("lobby-copy")) == before
    assert "Room 'lobby-copy': exists, its settings kept." in output
    assert "Members: 0 created, 3 skipped" in output
    assert "Messages: 0 created, 4 skipped" in output


def test_importing_twice_in_small_batches_changes_nothing(lobby, tmp_path, monkeypatch):
    monkeypatch.setattr(backup, "BATCH_SIZE", 3)
    make_messages(lobby, make_user("dave"), 5)
    path = export("lobby", tmp_path)

    import_room(path, into="lobby-copy")
    first = history("lobby-copy")
    output = import_room(path, into="lobby-copy")

    assert first == history("lobby")
    assert history("lobby-copy") == first
    assert "Messages: 0 created, 9 skipped" in output


def test_importing_back_into_the_source_room_adds_nothing(lobby, tmp_path):
    path = export("lobby", tmp_path)
    before = (database_counts(), history("lobby"))

    output = import_room(path)

    assert (database_counts(), history("lobby")) == before
    assert "Messages: 0 created, 4 skipped" in output


def test_import_finishes_an_import_that_stopped_halfway(lobby, tmp_path):
    path = export("lobby", tmp_path)
    import_room(path, into="lobby-copy")
    Message.objects.filter(room__slug="lobby-copy", body__in=["sent with an id", "rude"]).delete()

    output = import_room(path, into="lobby-copy")

    assert history("lobby-copy") == history("lobby")
    assert "Messages: 2 created, 2 skipped" in output


def test_missing_users_are_created_inactive_without_password(lobby, tmp_path):
    path = export("lobby", tmp_path)
    get_user_model().objects.filter(username__in=["bob", "carol"]).delete()

    output = import_room(path, into="lobby-copy")

    for username in ("bob", "carol"):
        user = get_user_model().objects.get(username=username)
        assert not user.is_active
        assert not user.has_usable_password()
    assert get_user_model().objects.get(username="alice").is_active
    assert "Users: 2 created inactive, without a usable password" in output
    assert "bob, carol" in output
    assert [row[:2] for row in history("lobby-copy")] == [
        ("alice", "message 0"),
        ("alice", "message 1"),
        ("bob", "sent with an id"),
        ("carol", "rude"),
    ]


def test_messages_posted_after_an_import_get_the_current_time(lobby, tmp_path):
    path = export("lobby", tmp_path)
    import_room(path, into="lobby-copy")
    with pytest.raises(CommandError):
        import_room(path, into="lobby-second-copy")
    before = datetime.now(UTC)

    message = Message.objects.create(room=lobby, user=lobby.memberships.first().user, body="new")

    assert message.created_at >= before


def test_an_owner_joining_a_room_with_an_owner_becomes_moderator(lobby, tmp_path):
    path = export("lobby", tmp_path)
    target = make_room("target")
    make_member(make_user("dora"), target, role=Role.OWNER)

    output = import_room(path, into="target")

    roles = dict(target.memberships.values_list("user__username", "role"))
    assert roles == {"dora": "owner", "alice": "moderator", "bob": "member", "carol": "member"}
    assert "imported as moderators: alice" in output
    assert room_settings("target")["name"] == "Target"  # an existing room keeps its settings


def test_a_second_copy_in_one_database_is_refused(lobby, tmp_path):
    path = export("lobby", tmp_path)
    import_room(path, into="copy-one")

    with pytest.raises(CommandError, match="into room 'copy-one' already"):
        import_room(path, into="copy-two")
    assert not Message.objects.filter(room__slug="copy-two").exists()


def test_a_file_written_before_the_authorities_imports_its_bans_as_a_moderators(db, tmp_path):
    added_later = ("ban_authority", "mute_authority")
    written_before = {k: v for k, v in MEMBER.items() if k not in added_later}
    path = tmp_path / "old.jsonl"
    path.write_text(lines(HEADER, written_before))

    import_room(path)

    assert members("moved") == {("zed", "member", T0.replace(microsecond=0), None, "", True, "")}


# --- bad input ---------------------------------------------------------------------------

HEADER = {
    "kind": "room",
    "format": 1,
    "slug": "moved",
    "name": "Moved",
    "description": "",
    "is_private": False,
    "is_locked": False,
    "is_archived": False,
    "created_at": "2024-03-01T12:00:00Z",
}
MESSAGE = {
    "kind": "message",
    "id": 1,
    "user": "zed",
    "body": "hello",
    "created": "2024-03-01T12:00:00Z",
    "client_id": None,
    "hidden_at": None,
    "hidden_by": None,
}

MEMBER = {
    "kind": "member",
    "username": "zed",
    "role": "member",
    "joined_at": "2024-03-01T12:00:00Z",
    "muted_until": None,
    "is_banned": True,
    "ban_authority": "staff",
    "mute_authority": None,
}


def lines(*records: dict | str) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("", "empty"),
        ("not json\n", "Line 1 is not JSON"),
        (lines(MESSAGE), "Line 1: expected the room header"),
        (lines({**HEADER, "format": 2}, MESSAGE), "format 2; this version reads format 1"),
        (lines({**HEADER, "format": None}), "format None; this version reads format 1"),
        (lines({k: v for k, v in HEADER.items() if k != "format"}), "format None"),
        (lines(HEADER, HEADER), "Line 2: a second room header"),
        (lines(HEADER, {**MESSAGE, "kind": "reaction"}), "Line 2: expected an object whose kind"),
        (lines(HEADER, [1, 2]), "Line 2: expected an object"),
        (lines(HEADER, {**MESSAGE, "body": 7}), "Line 2: message 'body': expected a string"),
        (lines(HEADER, {**MESSAGE, "created": "yesterday"}), "'created': expected an ISO 8601"),
        (lines(HEADER, {**MESSAGE, "created": "2024-03-01T12:00:00"}), "with a time zone"),
        (lines({**HEADER, "slug": "a b"}), "'slug': expected a slug"),
        (lines(HEADER, {k: v for k, v in MESSAGE.items() if k != "user"}), "has no 'user'"),
        (lines(HEADER, {**MEMBER, "ban_authority": "god"}), "'ban_authority': expected one of"),
        (lines(HEADER, MESSAGE, {**MESSAGE, "body": "again"}), "Line 3: message ids must"),
        (lines(HEADER, MESSAGE, "{truncated"), "Line 3 is not JSON"),
    ],
)
def test_bad_files_are_refused_before_anything_is_written(db, tmp_path, content, error):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    before = database_counts()

    with pytest.raises(CommandError, match=error):
        import_room(path)

    assert database_counts() == before
    assert not get_user_model().objects.filter(username="zed").exists()


def test_a_file_that_is_not_text_is_refused(db, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\x1f\x8b\x08\x00 gzip, perhaps")

    with pytest.raises(CommandError, match="not UTF-8 text"):
        import_room(path)


def test_a_missing_file_is_refused(db, tmp_path):
    with pytest.raises(CommandError, match="Cannot read"):
        import_room(tmp_path / "absent.jsonl")


def test_a_bad_target_slug_is_refused(db, tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text(lines(HEADER))

    with pytest.raises(CommandError, match="--into 'not a slug'"):
        import_room(path, into="not a slug")
    assert not Room.objects.filter(slug="moved").exists()
