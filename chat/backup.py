"""Room export and idempotent import, through room files (chat/roomfile.py).

Importing the same file again stores nothing new. A message is recognised by
its (user, client_id), the key the database already keeps unique. A message
sent without a client_id is stored under `import:<source-slug>:<original-id>`,
and so is a copy whose own client_id the original already holds in this
database (copying a room within one database).
"""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import connection, reset_queries, transaction
from django.db.models import Max

from chat.models import Membership, Message, Room
from chat.roomfile import (
    FIELDS,
    FORMAT,
    line_text,
    room_file_read,
    time_text,
)

# Rows per query and per transaction, both ways: memory stays flat whatever
# the size of the room.
BATCH_SIZE = 2000

Role = Membership.Role


class RoomImportError(Exception):
    """The file cannot go into this database. Batches written before stay (importing
    again skips them)."""


# A member line's values, in the order the export reads them.
MEMBER_COLUMNS = ("user__username", *Membership.SHOWN)


def _batches(records: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Runs of records of one kind, at most BATCH_SIZE long."""
    batch: list[dict[str, Any]] = []
    for record in records:
        if batch and (record["kind"] != batch[0]["kind"] or len(batch) == BATCH_SIZE):
            yield batch
            batch = []
        batch.append(record)
    if batch:
        yield batch


# --- export ------------------------------------------------------------------------------


@dataclass
class ExportCounts:
    members: int = 0
    messages: int = 0


def room_export(*, room: Room, out: TextIO) -> ExportCounts:
    """Write `room`, its memberships and its messages (hidden ones too) to `out`."""
    counts = ExportCounts()
    header = {
        "kind": "room",
        "format": FORMAT,
        "slug": room.slug,
        "name": room.name,
        "description": room.description,
        "is_private": room.is_private,
        "is_locked": room.is_locked,
        "is_archived": room.is_archived,
        "created_at": time_text(room.created_at),
    }
    out.write(line_text(header))
    # Rows, not models: the usernames come from joins in the same query (no
    # N+1), and a million messages cost no million model instances. Inside a
    # transaction PostgreSQL streams through a plain server-side cursor rather
    # than materialising the result for a WITH HOLD one.
    members = room.memberships.order_by("id").values_list(*MEMBER_COLUMNS)
    messages = (
        Message.objects.filter(room=room)
        .order_by("id")
        .values_list(
            "id",
            "user__username",
            "body",
            "created_at",
            "client_id",
            "hidden_at",
            "hidden_by__username",
        )
    )
    with transaction.atomic():
        for username, role, joined, muted_until, muted_by, banned, banned_by in members.iterator(
            chunk_size=BATCH_SIZE
        ):
            member = {
                "kind": "member",
                "username": username,
                "role": role,
                "joined_at": time_text(joined),
                "muted_until": time_text(muted_until),
                "mute_authority": muted_by or None,
                "is_banned": banned,
                "ban_authority": banned_by or None,
            }
            out.write(line_text(member))
            counts.members += 1
        for id_, user, body, created, client_id, hidden_at, hidden_by in messages.iterator(
            chunk_size=BATCH_SIZE
        ):
            message = {
                "kind": "message",
                "id": id_,
                "user": user,
                "body": body,
                "created": time_text(created),
                "client_id": client_id,
                "hidden_at": time_text(hidden_at),
                "hidden_by": hidden_by,
            }
            out.write(line_text(message))
            counts.messages += 1
    return counts


# --- import ------------------------------------------------------------------------------


@dataclass
class ImportResult:
    slug: str
    source_slug: str
    room_created: bool = False
    members_created: int = 0
    members_skipped: int = 0
    messages_created: int = 0
    messages_skipped: int = 0
    users_created: list[str] = field(default_factory=list)
    # Imported as moderators: the room had an owner already.
    owners_demoted: list[str] = field(default_factory=list)


def room_import(*, path: Path, into: str | None = None) -> ImportResult:
    """Import the room file at `path` into the room `into` (a slug; by default the
    file's own), creating the room when there is none; an existing room keeps its
    settings. Missing users are created inactive, without a usable password.

    The whole file is checked before anything is written (RoomFileError), then
    imported in batches of BATCH_SIZE lines, one transaction each.
    """
    with path.open(encoding="utf-8") as lines:
        for _ in room_file_read(lines):
            pass
    with path.open(encoding="utf-8") as lines, _times_from_file():
        records = room_file_read(lines)
        importer = _Importer(header=next(records), into=into)
        for batch in _batches(records):
            with transaction.atomic():
                importer.add(batch)
            # Under DEBUG every query is kept, and these hold a batch each.
            reset_queries()
    return importer.result


@contextmanager
def _times_from_file() -> Iterator[None]:
    """Let the import store the file's times in auto_now_add fields, which
    otherwise stamp now() over any value, even in bulk_create.

    Field options are process-wide: this is for the import command's own
    process, never for one that serves requests meanwhile.
    """
    fields = [
        Room._meta.get_field("created_at"),
        Membership._meta.get_field("joined_at"),
        Message._meta.get_field("created_at"),
    ]
    saved = [(model_field, model_field.auto_now_add) for model_field in fields]
    for model_field in fields:
        model_field.auto_now_add = False
    try:
        yield
    finally:
        for model_field, auto_now_add in saved:
            model_field.auto_now_add = auto_now_add


class _Importer:
    def __init__(self, *, header: dict[str, Any], into: str | None) -> None:
        self.source_slug = header["slug"]
        self.result = ImportResult(slug=into or header["slug"], source_slug=header["slug"])
        self.user_ids: dict[str, int] = {}
        with transaction.atomic():
            self.room = self._room(header)
        self.has_owner = self.room.memberships.filter(role=Role.OWNER).exists()

    def _room(self, header: dict[str, Any]) -> Room:
        room = Room.objects.filter(slug=self.result.slug).first()
        if room is not None:
            return room
        self.result.room_created = True
        return Room.objects.create(
            slug=self.result.slug,
            **{name: header[name] for name in FIELDS["room"] if name != "slug"},
        )

    def add(self, batch: list[dict[str, Any]]) -> None:
        if batch[0]["kind"] == "member":
            self._members(batch)
        else:
            self._messages(batch)

    def _users(self, usernames: set[str]) -> dict[str, int]:
        """username -> id for these users (and earlier ones), creating the missing
        ones inactive and without a usable password: nobody can sign in as them."""
        missing = usernames - self.user_ids.keys()
        if missing:
            user_model = get_user_model()
            found = dict(
                user_model.objects.filter(username__in=missing).values_list("username", "pk")
            )
            new = [
                user_model(username=name, is_active=False, password=make_password(None))
                for name in sorted(missing - found.keys())
            ]
            for user in user_model.objects.bulk_create(new):
                found[user.username] = user.pk
            self.result.users_created.extend(user.username for user in new)
            self.user_ids.update(found)
        return self.user_ids

    def _members(self, batch: list[dict[str, Any]]) -> None:
        user_ids = self._users({record["username"] for record in batch})
        present = set(
            self.room.memberships.filter(
                user_id__in=[user_ids[record["username"]] for record in batch]
            ).values_list("user_id", flat=True)
        )
        new = []
        for record in batch:
            user_id = user_ids[record["username"]]
            if user_id in present:
                self.result.members_skipped += 1
                continue
            present.add(user_id)
            membership = Membership(
                room=self.room,
                user_id=user_id,
                role=self._role(record, user_id),
                joined_at=record["joined_at"],
                muted_until=record["muted_until"],
                mute_authority=record["mute_authority"] or "",
                is_banned=record["is_banned"],
                ban_authority=record["ban_authority"] or "",
            )
            new.append(membership)
        Membership.objects.bulk_create(new)
        self.result.members_created += len(new)

    def _role(self, record: dict[str, Any], user_id: int) -> str:
        """A room has one owner: the file's owner, joining a room that has one, moderates."""
        if record["role"] != Role.OWNER:
            return record["role"]
        if self.has_owner:
            self.result.owners_demoted.append(record["username"])
            return Role.MODERATOR
        self.has_owner = True
        if self.result.room_created:
            Room.objects.filter(pk=self.room.pk).update(created_by_id=user_id)
        return Role.OWNER

    def _messages(self, batch: list[dict[str, Any]]) -> None:
        user_ids = self._users(
            {record["user"] for record in batch}
            | {record["hidden_by"] for record in batch if record["hidden_by"]}
        )
        taken = self._taken(batch)
        # A file brought back to the room it came from finds its originals,
        # stored without a client_id: same id, author and time.
        originals = set(
            self.room.messages.filter(id__in=[record["id"] for record in batch]).values_list(
                "id", "user_id", "created_at"
            )
        )
        # Imported messages come after the room's last one. The room's row is
        # locked, as a post locks it, so that live posts and the import take
        # their numbers in turn.
        list(Room.objects.select_for_update().filter(pk=self.room.pk).values_list("pk"))
        last_seq = self.room.messages.aggregate(last=Max("seq"))["last"] or 0
        new = []
        for record in batch:
            user_id = user_ids[record["user"]]
            if (record["id"], user_id, record["created"]) in originals:
                key = None
            else:
                key = self._key(record, user_id, taken)
            if key is None:
                self.result.messages_skipped += 1
                continue
            taken[user_id, key] = self.room.pk
            message = Message(
                room=self.room,
                seq=last_seq + len(new) + 1,
                user_id=user_id,
                body=record["body"],
                created_at=record["created"],
                client_id=key,
                hidden_at=record["hidden_at"],
                hidden_by_id=user_ids[record["hidden_by"]] if record["hidden_by"] else None,
            )
            new.append(message)
        Message.objects.bulk_create(new)
        self.result.messages_created += len(new)

    def _taken(self, batch: list[dict[str, Any]]) -> dict[tuple[int, str], int]:
        """(user id, client_id) -> room id, for every key this batch may use."""
        pairs = [
            (self.user_ids[record["user"]], key) for record in batch for key in self._keys(record)
        ]
        # A join on a VALUES list: one probe of the unique constraint's index per
        # pair, whatever the number of authors. (An OR per author costs
        # PostgreSQL quadratic planning time, and SQLite refuses deep ORs;
        # user_id IN (...) AND client_id IN (...) scans the table.)
        table = connection.ops.quote_name(Message._meta.db_table)
        values = ", ".join(["(%s, %s)"] * len(pairs))
        query = (
            f"SELECT m.user_id, m.client_id, m.room_id FROM {table} m "  # noqa: S608 - placeholders only
            f"JOIN (VALUES {values}) AS k ON m.user_id = k.column1 AND m.client_id = k.column2 "
            "WHERE m.client_id IS NOT NULL"
        )
        with connection.cursor() as cursor:
            cursor.execute(query, [value for pair in pairs for value in pair])
            return {(user_id, key): room_id for user_id, key, room_id in cursor.fetchall()}

    def _keys(self, record: dict[str, Any]) -> list[str]:
        """The client_ids a message may be stored under, in order of preference."""
        fallback = f"import:{self.source_slug}:{record['id']}"
        return list(dict.fromkeys([record["client_id"] or fallback, fallback]))

    def _key(self, record: dict[str, Any], user_id: int, taken: dict) -> str | None:
        """The client_id to store a message under, or None when this room has it."""
        keys = self._keys(record)
        rooms = [taken.get((user_id, key)) for key in keys]
        if self.room.pk in rooms:
            return None
        for key, room_id in zip(keys, rooms, strict=True):
            if room_id is None:
                return key
        other = Room.objects.filter(pk=rooms[-1]).values_list("slug", flat=True).first()
        raise RoomImportError(
            f"Message {record['id']} by {record['user']!r} was imported from "
            f"{self.source_slug!r} into room {other!r} already: one database holds "
            f"one imported copy of a room."
        )
