"""The moderation log: every moderation action, whichever door it came through."""

from django.contrib.auth.models import AbstractBaseUser

from chat.models import AuditEntry, Message, Room

Action = AuditEntry.Action
# The longest reason a moderator may give (the API's and the admin's forms).
REASON_MAX_LENGTH = 500


def audit_record(
    *,
    actor: AbstractBaseUser | None,
    action: str,
    room: Room | None = None,
    target_user: AbstractBaseUser | None = None,
    message: Message | None = None,
    reason: str = "",
    **detail: object,
) -> AuditEntry:
    return AuditEntry.objects.create(
        actor=actor,
        action=action,
        room=room,
        target_user=target_user,
        message=message,
        reason=reason,
        detail=detail,
    )
