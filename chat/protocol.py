"""The WebSocket protocol: the one place frames are parsed and built.

Everything here is described in docs/protocol.md; change both together.
Parsing checks shapes and types only; the rules about content (an empty body,
a too-long body, who may join) belong to the services, which the REST API
shares.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chat.exceptions import ChatError, InvalidField, InvalidJson, ProtocolError, UnknownType
from chat.models import CLIENT_ID_MAX_LENGTH, Message, Room

SLUG_MAX_LENGTH = 50


@dataclass(frozen=True, slots=True)
class Join:
    room: str
    since: int | None = None

    @property
    def ref(self) -> str:
        return self.room


@dataclass(frozen=True, slots=True)
class Leave:
    room: str

    @property
    def ref(self) -> str:
        return self.room


@dataclass(frozen=True, slots=True)
class PostMessage:
    room: str
    body: str
    client_id: str | None = None

    @property
    def ref(self) -> str:
        # A client matches an error to its pending send by client_id.
        return self.client_id if self.client_id is not None else self.room


@dataclass(frozen=True, slots=True)
class Delete:
    room: str
    id: int

    @property
    def ref(self) -> str:
        return self.room


@dataclass(frozen=True, slots=True)
class Typing:
    room: str
    typing: bool

    @property
    def ref(self) -> str:
        return self.room


Command = Join | Leave | PostMessage | Typing | Delete


def parse_text(text: str | None) -> Command:
    """Parse one text frame; raises ProtocolError (with `ref` set where possible)."""
    if text is None:
        raise ProtocolError("Binary frames are not supported; send JSON text.")
    try:
        content = json.loads(text)
    except ValueError:
        raise InvalidJson() from None
    if "\\u" in text and _has_unpaired_surrogate(content):
        # JSON may escape half of a UTF-16 pair alone ("\ud800"): no UTF-8
        # text holds it, so neither PostgreSQL nor the socket could take it
        # (echoed as an error's ref, it failed the send and ended the socket).
        raise InvalidJson("The frame escapes an unpaired surrogate (\\ud800 to \\udfff).")
    try:
        return parse(content)
    except ProtocolError as exc:
        exc.ref = ref_of(content)
        raise


def parse(content: Any) -> Command:
    if not isinstance(content, dict):
        raise ProtocolError("A frame must be a JSON object.")
    kind = content.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise UnknownType(f"Unknown frame type {kind!r}.")
    return parser(content)


def _has_unpaired_surrogate(content: Any) -> bool:
    try:
        json.dumps(content, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def ref_of(content: Any) -> str | None:
    """What an error about this (possibly malformed) frame refers to."""
    if not isinstance(content, dict):
        return None
    for key in ("client_id", "room"):
        if isinstance(content.get(key), str):
            return content[key]
    return None


def _no_nul(value: str, name: str) -> str:
    # JSON allows "\u0000"; PostgreSQL's text does not (the REST API's
    # serializers refuse it too): refused here, not failed in a query.
    if "\x00" in value:
        raise InvalidField(f"'{name}' must not contain NUL characters (\\u0000).")
    return value


def _room(content: dict) -> str:
    room = content.get("room")
    if not isinstance(room, str) or not 0 < len(room) <= SLUG_MAX_LENGTH:
        raise InvalidField("'room' must be a room slug (a non-empty string).")
    return _no_nul(room, "room")


def _parse_join(content: dict) -> Join:
    since = content.get("since")
    # bool is an int in Python, but `true` is not a message id.
    if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
        raise InvalidField("'since' must be a message id (a non-negative integer) or null.")
    return Join(room=_room(content), since=since)


def _parse_leave(content: dict) -> Leave:
    return Leave(room=_room(content))


def _parse_message(content: dict) -> PostMessage:
    room = _room(content)
    body = content.get("body")
    if not isinstance(body, str):
        raise InvalidField("'body' must be a string.")
    client_id = content.get("client_id")
    if client_id is not None and (
        not isinstance(client_id, str) or not 0 < len(client_id) <= CLIENT_ID_MAX_LENGTH
    ):
        raise InvalidField(
            f"'client_id' must be a string of 1 to {CLIENT_ID_MAX_LENGTH} characters or null."
        )
    if client_id is not None:
        _no_nul(client_id, "client_id")
    return PostMessage(room=room, body=_no_nul(body, "body"), client_id=client_id)


def _parse_delete(content: dict) -> Delete:
    message_id = content.get("id")
    if not isinstance(message_id, int) or isinstance(message_id, bool) or message_id < 1:
        raise InvalidField("'id' must be a message id (a positive integer).")
    return Delete(room=_room(content), id=message_id)


def _parse_typing(content: dict) -> Typing:
    typing = content.get("typing")
    if not isinstance(typing, bool):
        raise InvalidField("'typing' must be true or false.")
    return Typing(room=_room(content), typing=typing)


_PARSERS = {
    "join": _parse_join,
    "leave": _parse_leave,
    "message": _parse_message,
    "typing": _parse_typing,
    "delete": _parse_delete,
}


# --- Frames the server sends -------------------------------------------------------------


def message_payload(message: Message) -> dict:
    """A stored message as the socket and the REST API both show it.

    Needs `message.room` and `message.user` loaded (selectors select_related them).
    """
    return {
        "id": message.id,
        "seq": message.seq,
        "room": message.room.slug,
        "user": message.user.username,
        "body": message.body,
        "created": utc_text(message.created_at),
        "client_id": message.client_id,
    }


def utc_text(moment: datetime) -> str:
    """A time as the protocol writes it: ISO 8601 in UTC, with a Z."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def message_frame(message: Message) -> dict:
    return {"type": "message", **message_payload(message)}


def joined_frame(*, room: str, online: list[str], messages: list[Message], seq: int) -> dict:
    return {
        "type": "joined",
        "room": room,
        "online": online,
        "messages": [message_payload(message) for message in messages],
        "seq": seq,
    }


def left_frame(*, room: str) -> dict:
    return {"type": "left", "room": room}


def presence_frame(*, room: str, online: list[str], offline: list[str]) -> dict:
    """Who came online in the room, and who went offline, since its last presence frame."""
    return {"type": "presence", "room": room, "online": online, "offline": offline}


def typing_frame(*, room: str, user: str, typing: bool) -> dict:
    return {"type": "typing", "room": room, "user": user, "typing": typing}


def message_deleted_frame(*, room: str, message_id: int) -> dict:
    return {"type": "message_deleted", "room": room, "id": message_id}


def removed_frame(*, room: str, reason: str) -> dict:
    return {"type": "removed", "room": room, "reason": reason}


def room_state_frame(room: Room) -> dict:
    return {
        "type": "room_state",
        "room": room.slug,
        "locked": room.is_locked,
        "archived": room.is_archived,
    }


def error_frame(error: ChatError, *, ref: str | None = None) -> dict:
    return {"type": "error", "code": error.code, "detail": error.detail, "ref": ref, **error.extra}


def encode(frame: dict) -> str:
    """Frames are encoded once, then the same text goes to every socket."""
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))
