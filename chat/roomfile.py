"""The room file: one room, its members and its messages, as JSON Lines.

Format 1 is a header line `{"kind": "room", "format": 1, ...}`, then one
`member` line per membership, then one `message` line per message in id
order. People are named by username and times are ISO 8601 in UTC, so that a
file can move a room to another database (chat/backup.py writes and imports
it; docs/operations.md shows how).
"""

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.utils.dateparse import parse_datetime

from chat.models import CLIENT_ID_MAX_LENGTH, Membership
from chat.protocol import utc_text
from chat.roles import AUTHORITIES

FORMAT = 1


class RoomFileError(Exception):
    """The file is not a room file this version reads."""


def time_text(value: datetime | None) -> str | None:
    if value is None:
        return None
    return utc_text(value)


def line_text(record: dict[str, Any]) -> str:
    return json.dumps(record) + "\n"


def _parse_text(value: Any, max_length: int | None = None) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"longer than {max_length} characters")
    return value


def _parse_name(value: Any) -> str:
    if not _parse_text(value, 150):
        raise ValueError("expected a username")
    return value


def parse_slug(value: Any) -> str:
    try:
        validate_slug(_parse_text(value, 50))
    except ValidationError:
        raise ValueError("expected a slug (letters, digits, - and _)") from None
    return value


def _parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("expected true or false")
    return value


def _parse_id(value: Any) -> int:
    if type(value) is not int or value < 1:
        raise ValueError("expected a positive integer")
    return value


def _parse_role(value: Any) -> str:
    if value not in Membership.Role.values:
        raise ValueError(f"expected one of {', '.join(Membership.Role.values)}")
    return value


def _parse_time(value: Any) -> datetime:
    moment = parse_datetime(_parse_text(value)) if isinstance(value, str) else None
    if moment is None or moment.tzinfo is None:
        raise ValueError("expected an ISO 8601 time with a time zone")
    return moment


def _parse_authority(value: Any) -> str:
    if value not in AUTHORITIES:
        raise ValueError(f"expected one of {', '.join(AUTHORITIES)}")
    return value


def _optional(parse):
    return lambda value: None if value is None else parse(value)


# Each kind's fields, with what checks and converts each value. Other keys are
# ignored, so that a later version may add some within format 1.
FIELDS = {
    "room": {
        "slug": parse_slug,
        "name": lambda value: _parse_text(value, 100),
        "description": _parse_text,
        "is_private": _parse_bool,
        "is_locked": _parse_bool,
        "is_archived": _parse_bool,
        "created_at": _parse_time,
    },
    "member": {
        "username": _parse_name,
        "role": _parse_role,
        "joined_at": _parse_time,
        "muted_until": _optional(_parse_time),
        "is_banned": _parse_bool,
        "ban_authority": _optional(_parse_authority),
        "mute_authority": _optional(_parse_authority),
    },
    "message": {
        "id": _parse_id,
        "user": _parse_name,
        "body": _parse_text,
        "created": _parse_time,
        "client_id": _optional(lambda value: _parse_text(value, CLIENT_ID_MAX_LENGTH)),
        "hidden_at": _optional(_parse_time),
        "hidden_by": _optional(_parse_name),
    },
}

# Fields added within format 1, and their value in a file written before them.
ADDED_LATER = {"member": {"ban_authority": None, "mute_authority": None}}


def _record(number: int, text: str) -> dict[str, Any]:
    """One line, checked and converted (times become datetimes)."""
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise RoomFileError(f"Line {number} is not JSON ({exc}).") from None
    if not isinstance(raw, dict) or raw.get("kind") not in FIELDS:
        raise RoomFileError(
            f"Line {number}: expected an object whose kind is room, member or message."
        )
    if raw["kind"] == "room" and (type(raw.get("format")) is not int or raw["format"] != FORMAT):
        raise RoomFileError(
            f"Line {number}: format {raw.get('format')!r}; this version reads format {FORMAT}."
        )
    record = {"kind": raw["kind"]}
    for name, parse in FIELDS[raw["kind"]].items():
        if name not in raw and name in ADDED_LATER.get(raw["kind"], {}):
            record[name] = ADDED_LATER[raw["kind"]][name]
            continue
        if name not in raw:
            raise RoomFileError(f"Line {number}: {raw['kind']} has no {name!r}.")
        try:
            record[name] = parse(raw[name])
        except ValueError as exc:
            raise RoomFileError(f"Line {number}: {raw['kind']} {name!r}: {exc}.") from None
    return record


def room_file_read(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """The records of a room file, header first; RoomFileError at the first bad line."""
    header_seen = False
    last_id = 0
    try:
        for number, text in enumerate(lines, start=1):
            if not text.strip():
                continue
            record = _record(number, text)
            if header_seen == (record["kind"] == "room"):
                where = "a second room header" if header_seen else "expected the room header"
                raise RoomFileError(f"Line {number}: {where}.")
            header_seen = True
            if record["kind"] == "message":
                # Imported messages take new ids in file order: that order is the history.
                if record["id"] <= last_id:
                    raise RoomFileError(f"Line {number}: message ids must increase.")
                last_id = record["id"]
            yield record
    except UnicodeDecodeError:
        raise RoomFileError("The file is not UTF-8 text.") from None
    if not header_seen:
        raise RoomFileError("The file is empty: it has no room header.")
