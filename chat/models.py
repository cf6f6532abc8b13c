from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, models
from django.db.models import Q, Subquery
from django.db.models.expressions import Combinable, DatabaseDefault
from django.db.models.functions import Coalesce
from django.utils import timezone

BODY_MAX_LENGTH = 4000
CLIENT_ID_MAX_LENGTH = 100


class Room(models.Model):
    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    is_private = models.BooleanField(default=False)
    # Locked: read-only for now (moderation). Archived: read-only for good,
    # and left out of room lists.
    is_locked = models.BooleanField(default=False)
    is_archived = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="rooms_created",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MODERATOR = "moderator", "Moderator"
        MEMBER = "member", "Member"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(auto_now_add=True)
    muted_until = models.DateTimeField(null=True, blank=True)
    # Who set the running mute (as ban_authority below): only as much
    # authority changes or lifts it.
    mute_authority = models.CharField(max_length=20, blank=True, default="", db_default="")
    # A banned user keeps this row, so that they cannot simply join again.
    is_banned = models.BooleanField(default=False)
    # Who banned them: "moderator", "owner" or "staff" (chat.roles.AUTHORITIES);
    # only as much authority lifts the ban. Empty when not banned. A database
    # default: the release before inserts memberships during a rolling upgrade.
    ban_authority = models.CharField(max_length=20, blank=True, default="", db_default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "room"], name="membership_unique_user_room")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.room} ({self.role})"

    # What a member is, besides who: the API's member and the room file's
    # member line both show these, in this order.
    SHOWN = ("role", "joined_at", "muted_until", "mute_authority", "is_banned", "ban_authority")

    @property
    def is_muted(self) -> bool:
        """A mute runs now (one that has ended binds nobody)."""
        return self.muted_until is not None and self.muted_until > timezone.now()


class Message(models.Model):
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="messages"
    )
    body = models.TextField(max_length=BODY_MAX_LENGTH)
    # 1, 2, 3... within the room, in commit order: a client that sees a gap
    # knows a message is missing (ids are shared by all rooms, so theirs say
    # nothing). Computed by the INSERT itself (save()); the db_default is only
    # there to make Django read the value back from the INSERT's RETURNING.
    seq = models.PositiveBigIntegerField(db_default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Chosen by the sending client so that a resend after a lost ack is
    # recognised; NULL (not "") when absent, so the uniqueness below skips it.
    client_id = models.CharField(max_length=CLIENT_ID_MAX_LENGTH, null=True, blank=True)  # noqa: DJ001
    # Soft delete: hidden messages leave every history but stay for the audit.
    hidden_at = models.DateTimeField(null=True, blank=True)
    hidden_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_unique_user_client_id",
            ),
            models.UniqueConstraint(fields=["room", "seq"], name="message_unique_room_seq"),
        ]
        indexes = [
            # Every reader (history pages, catch-up, the page's last 50) walks
            # one room's visible messages by id; hidden ones stay out of the index.
            models.Index(
                fields=["room", "id"],
                name="message_room_visible_id",
                condition=Q(hidden_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.user}: {self.body[:50]}"

    def save(self, *args, **kwargs) -> None:
        if self._state.adding and isinstance(self.seq, DatabaseDefault):
            self.seq = next_seq(self.room_id)
        super().save(*args, **kwargs)

    @classmethod
    def stored(cls, *, room: Room, user, **values) -> "Message":
        """The message that a statement of chat.services stored, from `values`
        by attribute name (id, seq, body...), with its room and user, as if
        read back; the fields not given take their defaults.

        Message(**fields) matches each keyword against the fields and checks
        each relation (the database router's allow_relation) once per message
        a busy process stores; values in field order take the quick path
        Django reads rows with (docs/performance.md).
        """
        values |= {"room_id": room.pk, "user_id": user.pk}
        fields = cls._meta.concrete_fields
        row = [values[f.attname] if f.attname in values else f.get_default() for f in fields]
        message = cls.from_db(DEFAULT_DB_ALIAS, None, row)  # None: every field, in order
        cls.room.field.set_cached_value(message, room)
        cls.user.field.set_cached_value(message, user)
        return message


def next_seq(room_id: int) -> Combinable:
    """The room's next sequence number, as an expression evaluated by the INSERT.

    Two concurrent inserts would read the same last number: a save() must hold
    the room's row locked (as chat.services._message_insert_locked does), so
    that they take turns and the numbers follow the order of the commits.
    Common posts number themselves in one statement instead
    (chat.services._message_insert).
    """
    last = Message.objects.filter(room_id=room_id).order_by("-seq").values("seq")[:1]
    return Coalesce(Subquery(last), 0) + 1


class SendRate(models.Model):
    """A user's send-rate limit on the socket, shared by every process: a
    token bucket of SEND_BURST tokens refilled at SEND_RATE a second, kept as
    the one number a generic cell-rate algorithm needs, the time the bucket
    is full again. A message may go if that is at most (SEND_BURST - 1) /
    SEND_RATE seconds away (a token is left), and pushes it 1 / SEND_RATE
    later. Taken with the message's insert (chat.ratelimit)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    # Seconds since the epoch, by the posting process's clock (as created_at):
    # a float, so that a token of a microsecond (a benchmark's limit) still counts.
    full_at = models.FloatField()

    def __str__(self) -> str:
        return f"send rate of user {self.user_id}"


class RoomSequence(models.Model):
    """The last number a room's messages took (Message.seq), advanced by each
    round of posts (chat.services._insert_many_sql). Two processes' rounds in
    one room take it in turn, the second waiting for the first's commit and
    reading what it committed, instead of both reading the same last number
    from the messages and one failing on it. Other inserts number from the
    messages themselves (next_seq): a round takes the greater of the two."""

    room = models.OneToOneField(Room, on_delete=models.CASCADE, primary_key=True, related_name="+")
    last_seq = models.PositiveBigIntegerField()

    def __str__(self) -> str:
        return f"last number of room {self.room_id}"


class AuditEntry(models.Model):
    """One moderation action, from any door (admin, API, socket). Never edited."""

    class Action(models.TextChoices):
        ROOM_LOCK = "room_lock", "Lock room"
        ROOM_UNLOCK = "room_unlock", "Unlock room"
        ROOM_ARCHIVE = "room_archive", "Archive room"
        ROOM_UNARCHIVE = "room_unarchive", "Unarchive room"
        ROOM_EDIT = "room_edit", "Edit room"
        MESSAGE_HIDE = "message_hide", "Hide message"
        MESSAGE_UNHIDE = "message_unhide", "Unhide message"
        MESSAGE_DELETE = "message_delete", "Delete own message"
        MEMBER_MUTE = "member_mute", "Mute"
        MEMBER_UNMUTE = "member_unmute", "Unmute"
        MEMBER_BAN = "member_ban", "Ban"
        MEMBER_UNBAN = "member_unban", "Unban"
        MEMBER_ADD = "member_add", "Add member"
        MEMBER_REMOVE = "member_remove", "Remove member"
        USER_DEACTIVATE = "user_deactivate", "Deactivate account"
        USER_REACTIVATE = "user_reactivate", "Reactivate account"

    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    action = models.CharField(max_length=30, choices=Action.choices)
    room = models.ForeignKey(Room, on_delete=models.SET_NULL, null=True, blank=True)
    target_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    message = models.ForeignKey(Message, on_delete=models.SET_NULL, null=True, blank=True)
    reason = models.TextField(blank=True)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.actor} {self.get_action_display()} at {self.created_at:%Y-%m-%d %H:%M}"
