"""The errors of the chat's business rules and wire protocol.

Each has a machine `code` (the `code` of an `error` frame, and of an API error
body) and the HTTP status the API answers with. The consumer and the DRF
exception handler each map them in one place.
"""


class ChatError(Exception):
    code = "error"
    http_status = 400
    default_detail = "The request could not be processed."

    def __init__(self, detail: str | None = None, **extra: object) -> None:
        self.detail = detail or self.default_detail
        # What the error is about (a room slug or a client_id), for the client
        # to match it with what it sent; set by whoever knows.
        self.ref: str | None = None
        # Machine-readable specifics (a mute's end), added to the error body.
        self.extra = extra
        super().__init__(self.detail)


class ProtocolError(ChatError):
    """A frame that is not what docs/protocol.md allows."""

    code = "invalid_frame"
    default_detail = "The frame is not valid."


class InvalidJson(ProtocolError):
    code = "invalid_json"
    default_detail = "The frame is not valid JSON text."


class UnknownType(ProtocolError):
    code = "unknown_type"
    default_detail = "Unknown frame type."


class InvalidField(ProtocolError):
    code = "invalid_field"
    default_detail = "A field is missing or has the wrong type."


class EmptyBody(ChatError):
    code = "empty_body"
    default_detail = "A message needs some text."


class BodyTooLong(ChatError):
    code = "body_too_long"
    default_detail = "The message is too long."


class RoomNotFound(ChatError):
    code = "room_not_found"
    http_status = 404
    default_detail = "No such room."


class NotJoined(ChatError):
    code = "not_joined"
    http_status = 409
    default_detail = "Join the room first."


class Forbidden(ChatError):
    code = "forbidden"
    http_status = 403
    default_detail = "You may not do that in this room."


class RoomExists(ChatError):
    code = "room_exists"
    http_status = 409
    default_detail = "A room with this slug already exists."


class InvalidRoomName(ChatError):
    code = "invalid_name"
    default_detail = "A room name needs at least one letter or digit."


class UserNotFound(ChatError):
    code = "user_not_found"
    default_detail = "No active user with that username."


class NotAMember(ChatError):
    code = "not_a_member"
    http_status = 404
    default_detail = "This user is not a member of the room."


class MemberBanned(ChatError):
    code = "member_banned"
    http_status = 409
    default_detail = "This member is banned: removing them would lift the ban. Unban them instead."


class OwnerCannotLeave(ChatError):
    code = "owner_cannot_leave"
    http_status = 409
    default_detail = "The owner cannot leave or be removed; delete the room instead."


class RoomLocked(ChatError):
    code = "room_locked"
    http_status = 403
    default_detail = "This room is locked: it is read-only for now."


class RoomArchived(ChatError):
    code = "room_archived"
    http_status = 403
    default_detail = "This room is archived: it is read-only."


class Muted(ChatError):
    code = "muted"
    http_status = 403
    default_detail = "You are muted in this room."


class Banned(ChatError):
    code = "banned"
    http_status = 403
    default_detail = "You are banned from this room."


class MessageNotFound(ChatError):
    code = "message_not_found"
    http_status = 404
    default_detail = "No such message."


class UnknownUser(ChatError):
    """A user named in the URL does not exist (UserNotFound is for request bodies)."""

    code = "user_not_found"
    http_status = 404
    default_detail = "No such user."


class RateLimited(ChatError):
    code = "rate_limited"
    http_status = 429
    default_detail = "Too many messages: slow down."


class Unavailable(ChatError):
    """The database could not be reached (restarting, its connections dropped):
    nothing was done, and the same frame may be sent again shortly."""

    code = "unavailable"
    http_status = 503
    default_detail = "The service is briefly unavailable: send again in a moment."


class FrameTooLarge(ProtocolError):
    code = "frame_too_large"
    default_detail = "The frame is too large."


class TooManyRooms(ChatError):
    code = "too_many_rooms"
    http_status = 409
    default_detail = "Too many rooms joined on this connection."


class TooManySockets(ChatError):
    code = "too_many_connections"
    http_status = 429
    default_detail = "Too many open connections for this account."


class TooManyErrors(ChatError):
    code = "too_many_errors"
    http_status = 429
    default_detail = "Too many refused frames: this connection is closed."
